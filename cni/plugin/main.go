package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/cni/wire"
)

// run is Invoke as the Go plugin binary ran, calling the agent at the
// config's socket.
func run(ctx context.Context, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	return Invoke(ctx, getenv, stdin, stdout, stderr, &Plugin{})
}

// Invoke serves one invocation as the plugin process does, with its
// environment, streams and context given, and returns the exit status.
// with's RoundTrip, CallerNetns and DialledSocket, when set, stand in for
// the config's socket and this process's namespace: the agent serves the
// forwarder's invocations so (package cni/forward), and every check and
// error is the same whichever binary the runtime ran.
func Invoke(ctx context.Context, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer, with *Plugin) int {
	cmd := getenv("CNI_COMMAND")
	switch cmd {
	case "":
		// Run by hand: say what this is, as the CNI library's plugins do.
		fmt.Fprintln(stderr, About)
		fmt.Fprintf(stderr, "CNI protocol versions supported: %s\n", strings.Join(SupportedVersions, ", "))
		return 0
	case "VERSION":
		b, _ := json.Marshal(struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}{wire.ResultVersion, SupportedVersions})
		_, _ = stdout.Write(append(b, '\n'))
		return 0
	}
	command := wire.Command(cmd)
	data, e := readStdin(stdin)
	var version string // the config's, for the error, when it has one
	if e == nil {
		var se *wire.Error
		version, se = CheckStdin(data)
		if command.Valid() {
			e = se // an unknown command is the error to report
		}
	}
	if e == nil {
		e = checkEnv(command, getenv)
	}
	if e != nil {
		printError(stdout, e, version)
		return 1
	}
	args := &Args{
		ContainerID: getenv("CNI_CONTAINERID"), Netns: getenv("CNI_NETNS"), IfName: getenv("CNI_IFNAME"),
		Args: getenv("CNI_ARGS"), Path: getenv("CNI_PATH"), NetnsOverride: getenv("CNI_NETNS_OVERRIDE"),
		StdinData: data,
	}
	p := *with
	p.Stdout, p.Context = stdout, ctx
	if err := p.Run(command, args); err != nil {
		printError(stdout, CNIError(command, err), version)
		return 1
	}
	return 0
}

// requiredEnv are the variables each command needs, as the CNI spec lists
// them.
var requiredEnv = map[wire.Command][]string{
	wire.CmdAdd:    {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	wire.CmdCheck:  {"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"},
	wire.CmdDel:    {"CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"},
	wire.CmdGC:     {"CNI_PATH"},
	wire.CmdStatus: {"CNI_PATH"},
}

// minVersion is the oldest config version that defines each command.
var minVersion = map[wire.Command]string{wire.CmdCheck: "0.4.0", wire.CmdGC: "1.1.0", wire.CmdStatus: "1.1.0"}

// checkEnv refuses an unknown command and a missing variable the command
// needs (code 4).
func checkEnv(cmd wire.Command, getenv func(string) string) *wire.Error {
	if !cmd.Valid() {
		return wire.NewError(wire.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway: command (CNI_COMMAND) %q is not one of %v or VERSION", string(cmd), wire.Commands), "")
	}
	var missing []string
	for _, name := range requiredEnv[cmd] {
		if getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return wire.NewError(wire.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway %s: required environment variables %s are missing", cmd, strings.Join(missing, ", ")), "")
	}
	return nil
}

// checkVersion refuses a config version the plugin does not speak, or that
// does not define the command (code 1).
func checkVersion(cmd wire.Command, confVersion string) *wire.Error {
	supported := false
	for _, s := range SupportedVersions {
		supported = supported || s == confVersion
	}
	if !supported {
		return wire.NewError(wire.ErrIncompatibleCNIVersion, "incompatible CNI versions",
			fmt.Sprintf("terway: the config's cniVersion is %q; this plugin speaks %s", confVersion, strings.Join(SupportedVersions, ", ")))
	}
	if least := minVersion[cmd]; least != "" && versionLess(confVersion, least) {
		return wire.NewError(wire.ErrIncompatibleCNIVersion,
			fmt.Sprintf("terway %s: config version %s does not allow %s, which needs %s or later", cmd, confVersion, cmd, least), "")
	}
	return nil
}

// versionLess compares two "major.minor.patch" versions.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, _ := strconv.Atoi(pa[i])
		y, _ := strconv.Atoi(pb[i])
		if x != y {
			return x < y
		}
	}
	return len(pa) < len(pb)
}

// readStdin reads the network config, bounded by maxStdin.
func readStdin(r io.Reader) ([]byte, *wire.Error) {
	data, err := io.ReadAll(io.LimitReader(r, maxStdin+1))
	if err != nil {
		return nil, wire.NewError(wire.ErrIOFailure, fmt.Sprintf("terway: reading the network config from stdin: %v", err), "")
	}
	if len(data) > maxStdin {
		return nil, wire.NewError(wire.ErrInvalidNetworkConfig,
			fmt.Sprintf("terway: network config on stdin is larger than %d bytes", maxStdin), "")
	}
	return data, nil
}

// printError writes a CNI error the way the spec shows it, with the
// config's cniVersion when known.
func printError(w io.Writer, e *wire.Error, cniVersion string) {
	out := struct {
		CNIVersion string `json:"cniVersion,omitempty"`
		Code       uint   `json:"code"`
		Msg        string `json:"msg"`
		Details    string `json:"details,omitempty"`
	}{cniVersion, e.Code, e.Msg, e.Details}
	b, err := json.MarshalIndent(&out, "", "    ")
	if err != nil {
		return
	}
	_, _ = w.Write(append(b, '\n'))
}
