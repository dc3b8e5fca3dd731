package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terway-reconciler/terway/cni/wire"
)

// Main runs the plugin as a process and returns its exit status: 0 on
// success, 1 with a CNI error on stdout otherwise. SIGTERM or SIGINT cancel
// the call to the agent, which is then reported as a CNI error too.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	confVersion := ""
	if wire.Command(os.Getenv("CNI_COMMAND")).Valid() {
		data, e := readStdin(os.Stdin)
		if e == nil {
			e = CheckStdin(data)
		}
		if e != nil {
			printError(os.Stdout, e, "")
			return 1
		}
		var v struct {
			CNIVersion string `json:"cniVersion"`
		}
		_ = json.Unmarshal(data, &v) // CheckStdin proved it decodes
		confVersion = v.CNIVersion
		if err := refeedStdin(data); err != nil {
			printError(os.Stdout, types.NewError(types.ErrIOFailure, "terway: passing stdin on failed", err.Error()), confVersion)
			return 1
		}
	}
	p := &Plugin{Stdout: os.Stdout, Context: ctx}
	if e := skel.PluginMainFuncsWithError(p.Funcs(), version.PluginSupports(SupportedVersions...), About); e != nil {
		printError(os.Stdout, e, confVersion)
		return 1
	}
	return 0
}

// readStdin reads the network config, bounded by maxStdin.
func readStdin(r io.Reader) ([]byte, *types.Error) {
	data, err := io.ReadAll(io.LimitReader(r, maxStdin+1))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, fmt.Sprintf("terway: reading the network config from stdin: %v", err), "")
	}
	if len(data) > maxStdin {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("terway: network config on stdin is larger than %d bytes", maxStdin), "")
	}
	return data, nil
}

// refeedStdin makes os.Stdin yield data again: the CNI library reads the
// config from os.Stdin itself, after CheckStdin has looked at it.
func refeedStdin(data []byte) error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating a pipe for stdin: %w", err)
	}
	go func() {
		_, _ = w.Write(data)
		_ = w.Close()
	}()
	os.Stdin = r
	return nil
}

// printError writes a CNI error the way the spec shows it, with the
// config's cniVersion when known.
func printError(w io.Writer, e *types.Error, cniVersion string) {
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
