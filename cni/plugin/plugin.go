// Package plugin is the terway CNI plugin's logic: what happens for each
// ADD, DEL, CHECK, GC and STATUS the container runtime makes. The binary
// the runtime executes is a C forwarder that hands the invocation, unread,
// to the agent (package cni/forward); the agent runs it here, in-process
// (Invoke). This parses the runtime's environment and network config, makes
// one request of the agent's handler (package wire), and prints the answer:
// the CNI result, which the agent has put in the spec version the runtime
// asked for, or a CNI error. It never touches the network and keeps no
// state: everything it could half-do is the agent's job to do whole.
//
// It was the Go plugin binary until the forwarder replaced it, and still
// works as one over the socket (run, its tests): a Go program's start cost
// each ADD about 1 ms of CPU, and the forwarder's whole run costs less.
// What it needs of the spec (the environment, version negotiation, the
// error form) is here and in package wire; converting results between
// versions is the agent's (cni/server).
package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/cni/wire"
)

// About is printed on stderr when the binary runs without CNI_COMMAND.
const About = "CNI plugin terway: forwards ADD, DEL, CHECK, GC and STATUS to the terway agent " +
	"(default socket " + wire.DefaultSocketPath + ")"

// Args is one invocation's environment and network config.
type Args struct {
	ContainerID string // CNI_CONTAINERID
	Netns       string // CNI_NETNS
	IfName      string // CNI_IFNAME
	Args        string // CNI_ARGS
	Path        string // CNI_PATH
	// NetnsOverride is CNI_NETNS_OVERRIDE: "1" or "true" allow an ADD into
	// the plugin's own namespace.
	NetnsOverride string
	// StdinData is the network config.
	StdinData []byte
}

// Plugin serves one invocation. Its fields exist so tests can run the
// commands in-process.
type Plugin struct {
	// Stdout receives the ADD result.
	Stdout io.Writer
	// Context bounds every call to the agent; nil means
	// context.Background.
	Context context.Context
	// RoundTrip, when set, carries the calls instead of the config's
	// socket (wire.Client.RoundTrip): the agent runs invocations the
	// forwarder sent it this way.
	RoundTrip func(ctx context.Context, path string, body []byte) (int, []byte, error)
	// CallerNetns, when set, is the network namespace of the process the
	// runtime started (device and inode of its /proc/self/ns/net), which
	// an ADD's CNI_NETNS must not be. When nil, it is this process's own.
	CallerNetns *NetnsID
	// DialledSocket, when set, is the socket the forwarder reached the
	// agent on: a config that names another is refused (code 7), as the
	// forwarder read it otherwise and this agent is not the one meant.
	DialledSocket string
}

// NetnsID names a network namespace by the device and inode of its nsfs
// file, the same in every mount namespace.
type NetnsID struct{ Dev, Ino uint64 }

// Run serves cmd, which must be one of wire.Commands, and returns the CNI
// error to print, or nil. A bug in the plugin is a CNI error too, never a
// panic on the runtime.
func (p *Plugin) Run(cmd wire.Command, args *Args) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = wire.NewError(wire.ErrInternal,
				fmt.Sprintf("terway %s: internal error in the plugin", cmd), fmt.Sprint(r))
		}
	}()
	if cmd == wire.CmdAdd {
		return p.add(args)
	}
	conf, req, err := buildRequest(cmd, args)
	if err != nil {
		return err
	}
	_, err = p.call(conf, req)
	var ce *wire.Error
	if cmd == wire.CmdDel && req.PrevResult != nil && errors.As(err, &ce) && ce.Code == wire.ErrDecodingFailure {
		// An agent older than this plugin decodes the prevResult itself
		// and refuses the whole DEL when it cannot; a DEL must do its best
		// without it, as the runtime would retry it forever.
		req.PrevResult = nil
		_, err = p.call(conf, req)
	}
	return err
}

func (p *Plugin) ctx() context.Context {
	if p.Context == nil {
		return context.Background()
	}
	return p.Context
}

// add forwards ADD and prints the result in the config's version.
func (p *Plugin) add(args *Args) error {
	conf, req, err := buildRequest(wire.CmdAdd, args)
	if err != nil {
		return err
	}
	if e := checkNotOwnNetns(args, p.CallerNetns); e != nil {
		return e
	}
	res, err := p.call(conf, req)
	if err != nil {
		return err
	}
	out, e := printable(res, conf.NetConf.CNIVersion, args.ContainerID)
	if e != nil {
		return e
	}
	w := p.Stdout
	if w == nil {
		w = os.Stdout
	}
	if _, err := w.Write(out); err != nil {
		return wire.NewError(wire.ErrIOFailure, "terway ADD: writing the result to stdout failed", err.Error())
	}
	return nil
}

// printable is the ADD result to print: the agent's Output, indented as
// CNI plugins print results.
func printable(res *wire.Response, version, containerID string) ([]byte, *wire.Error) {
	out := res.Output
	if len(out) == 0 {
		// An agent older than this plugin sends the result in
		// wire.ResultVersion only, and has already set the pod up.
		var err error
		if out, err = fromResultVersion(res.Result, version); err != nil {
			return nil, wire.NewError(wire.ErrInternal,
				fmt.Sprintf("terway ADD: the agent's result for container %q cannot be expressed as CNI %s", containerID, version),
				err.Error()+"; the agent is older than the plugin: upgrade terwayd")
		}
	}
	var b bytes.Buffer
	if err := json.Indent(&b, out, "", "    "); err != nil {
		return nil, wire.NewError(wire.ErrInternal,
			fmt.Sprintf("terway ADD: the agent's result for container %q is not JSON", containerID), err.Error())
	}
	return b.Bytes(), nil
}

// fromResultVersion converts a result from wire.ResultVersion to version,
// for an agent that sends no Output, as the agent's converter (the CNI
// library's) does: 1.0.0 is the same form relabelled; 0.4.0 names each
// IP's version and knows an interface by name, MAC and sandbox only.
func fromResultVersion(result json.RawMessage, version string) (json.RawMessage, error) {
	var r map[string]json.RawMessage
	if err := json.Unmarshal(result, &r); err != nil {
		return nil, fmt.Errorf("the result is not a JSON object: %w", err)
	}
	var ifaces, ips []map[string]json.RawMessage
	for _, f := range []struct {
		key  string
		list *[]map[string]json.RawMessage
	}{{"interfaces", &ifaces}, {"ips", &ips}} {
		if raw, ok := r[f.key]; ok && string(raw) != "null" {
			if err := json.Unmarshal(raw, f.list); err != nil {
				return nil, fmt.Errorf("%s: %w", f.key, err)
			}
		}
	}
	keep := func(list []map[string]json.RawMessage, fields ...string) {
		for _, m := range list {
			for k := range m {
				if !slices.Contains(fields, k) {
					delete(m, k)
				}
			}
		}
	}
	switch version {
	case wire.ResultVersion, "1.0.0":
	case "0.4.0":
		keep(ifaces, "name", "mac", "sandbox")
		for _, ip := range ips {
			var addr string
			if err := json.Unmarshal(ip["address"], &addr); err != nil {
				return nil, fmt.Errorf("ips: address: %w", err)
			}
			ipVersion := `"4"`
			if strings.Contains(addr, ":") {
				ipVersion = `"6"`
			}
			ip["version"] = json.RawMessage(ipVersion)
		}
	default:
		return nil, fmt.Errorf("version %s is not one this plugin speaks", version)
	}
	r["cniVersion"], _ = json.Marshal(version)
	for key, list := range map[string][]map[string]json.RawMessage{"interfaces": ifaces, "ips": ips} {
		if list != nil {
			r[key], _ = json.Marshal(list)
		}
	}
	return json.Marshal(r)
}

// call sends req to the agent named by conf and maps every failure to a CNI
// error.
func (p *Plugin) call(conf *Conf, req *wire.Request) (*wire.Response, error) {
	if p.DialledSocket != "" && p.DialledSocket != conf.NetConf.SocketPath() {
		return nil, wire.NewError(wire.ErrInvalidNetworkConfig,
			fmt.Sprintf("terway network config: field \"socket\" is %q, but the forwarder read %q and reached the agent there", conf.NetConf.SocketPath(), p.DialledSocket),
			"write the key as plain \"socket\", once, without escapes")
	}
	client := wire.NewClient(conf.NetConf.SocketPath(), conf.Timeout(req.Command))
	client.RoundTrip = p.RoundTrip
	res, err := client.Call(p.ctx(), req)
	if err != nil {
		return nil, CNIError(req.Command, err)
	}
	return res, nil
}

// buildRequest parses the invocation into the request for the agent.
func buildRequest(cmd wire.Command, args *Args) (*Conf, *wire.Request, error) {
	conf, e := ParseConf(cmd, args.StdinData)
	if e != nil {
		return nil, nil, e
	}
	req := &wire.Request{
		Command:          cmd,
		CNIVersion:       conf.NetConf.CNIVersion,
		NetConf:          conf.NetConf,
		PrevResult:       conf.PrevResult,
		ValidAttachments: conf.ValidAttachments,
	}
	if cmd == wire.CmdAdd || cmd == wire.CmdDel || cmd == wire.CmdCheck {
		req.ContainerID, req.Netns, req.IfName = args.ContainerID, args.Netns, args.IfName
		if req.Args, e = wire.ParseCNIArgs(args.Args); e != nil {
			return nil, nil, e
		}
	}
	if e := req.Validate(); e != nil {
		return nil, nil, e
	}
	return conf, req, nil
}

// checkNotOwnNetns refuses an ADD whose CNI_NETNS is the namespace the
// plugin runs in (the host's), or caller's when given: the agent would
// wire the node itself as a pod. A path that cannot be read is left for
// the agent to refuse.
func checkNotOwnNetns(args *Args, caller *NetnsID) *wire.Error {
	if o := strings.ToLower(args.NetnsOverride); o == "1" || o == "true" {
		return nil
	}
	var pod unix.Stat_t
	if unix.Stat(args.Netns, &pod) != nil {
		return nil
	}
	own := caller
	if own == nil {
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
			return wire.NewError(wire.ErrInvalidNetNS, "terway ADD: reading the plugin's own network namespace failed", err.Error())
		}
		own = &NetnsID{Dev: st.Dev, Ino: st.Ino}
	}
	if pod.Dev == own.Dev && pod.Ino == own.Ino {
		return wire.NewError(wire.ErrInvalidNetNS,
			fmt.Sprintf("terway ADD: CNI_NETNS %q is the plugin's own network namespace, not a pod's", args.Netns), "")
	}
	return nil
}

// CNIError maps a failed call to the CNI error the runtime sees. An error
// the agent answered with passes through unchanged. When the agent gave no
// answer (down, restarting, too slow, connection broken) the code is 11,
// "try again later", since all commands are idempotent and the runtime
// retries; for STATUS it is 50, "plugin not available", which the spec
// defines for exactly that. An answer that is not a terway response is 999.
func CNIError(cmd wire.Command, err error) *wire.Error {
	var ce *wire.Error
	if errors.As(err, &ce) {
		return ce
	}
	var call *wire.CallError
	if !errors.As(err, &call) {
		return wire.NewError(wire.ErrInternal, fmt.Sprintf("terway %s: %v", cmd, err), "")
	}
	code := wire.ErrTryAgainLater
	if cmd == wire.CmdStatus {
		code = wire.ErrPluginNotAvailable
	}
	var hint string
	switch call.Kind {
	case wire.Unreachable:
		hint = "is the terway agent (terwayd) running on this node? retry once it is up"
	case wire.TimedOut:
		hint = "the agent may still be working on it; retrying with the same container id is safe"
	case wire.Broken:
		hint = "the agent closed the connection without answering; it may have restarted"
	case wire.Protocol:
		code = wire.ErrInternal
		hint = "something other than a compatible terway agent answered on the socket"
	}
	return wire.NewError(code, call.Error(), hint)
}
