// Package plugin is the terway CNI plugin: the binary a container runtime
// executes for ADD, DEL, CHECK, GC and STATUS. It is deliberately thin. It
// parses the runtime's environment and network config, sends one request to
// the agent over its unix socket (package wire), and prints the agent's
// answer as a CNI result in the spec version the runtime asked for, or as a
// CNI error. It never touches the network, keeps no state and leaves nothing
// behind: everything it could half-do is the agent's job to do whole.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/cni/wire"
)

// About is printed on stderr when the binary runs without CNI_COMMAND.
const About = "CNI plugin terway: forwards ADD, DEL, CHECK, GC and STATUS to the terway agent " +
	"(default socket " + wire.DefaultSocketPath + ")"

// Plugin serves one invocation. Its fields exist so tests can run the
// commands in-process.
type Plugin struct {
	// Stdout receives the ADD result.
	Stdout io.Writer
	// Context bounds every call to the agent (cancelled on SIGTERM by
	// Main); nil means context.Background.
	Context context.Context
}

// Funcs are the skel callbacks for the five commands, each protected so
// that a bug in the plugin is a CNI error, never a panic on the runtime.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    guard(wire.CmdAdd, p.add),
		Del:    guard(wire.CmdDel, p.forward(wire.CmdDel)),
		Check:  guard(wire.CmdCheck, p.forward(wire.CmdCheck)),
		GC:     guard(wire.CmdGC, p.forward(wire.CmdGC)),
		Status: guard(wire.CmdStatus, p.forward(wire.CmdStatus)),
	}
}

func guard(cmd wire.Command, f func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = types.NewError(types.ErrInternal,
					fmt.Sprintf("terway %s: internal error in the plugin", cmd), fmt.Sprint(r))
			}
		}()
		return f(args)
	}
}

func (p *Plugin) ctx() context.Context {
	if p.Context == nil {
		return context.Background()
	}
	return p.Context
}

// add forwards ADD and prints the result in the config's version.
func (p *Plugin) add(args *skel.CmdArgs) error {
	conf, req, err := buildRequest(wire.CmdAdd, args)
	if err != nil {
		return err
	}
	if e := checkNotOwnNetns(args); e != nil {
		return e
	}
	res, err := p.call(conf, req)
	if err != nil {
		return err
	}
	out, err := res.GetAsVersion(conf.NetConf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrInternal,
			fmt.Sprintf("terway ADD: the agent's result for container %q cannot be expressed as CNI %s", args.ContainerID, conf.NetConf.CNIVersion),
			err.Error())
	}
	w := p.Stdout
	if w == nil {
		w = os.Stdout
	}
	if err := out.PrintTo(w); err != nil {
		return types.NewError(types.ErrIOFailure, "terway ADD: writing the result to stdout failed", err.Error())
	}
	return nil
}

// forward returns the callback of a command whose success prints nothing.
func (p *Plugin) forward(cmd wire.Command) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		conf, req, err := buildRequest(cmd, args)
		if err != nil {
			return err
		}
		_, err = p.call(conf, req)
		return err
	}
}

// call sends req to the agent named by conf and maps every failure to a CNI
// error.
func (p *Plugin) call(conf *Conf, req *wire.Request) (*types100.Result, error) {
	client := wire.NewClient(conf.NetConf.SocketPath(), conf.Timeout(req.Command))
	res, err := client.Call(p.ctx(), req)
	if err != nil {
		return nil, CNIError(req.Command, err)
	}
	return res, nil
}

// buildRequest parses the invocation into the request for the agent.
func buildRequest(cmd wire.Command, args *skel.CmdArgs) (*Conf, *wire.Request, error) {
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
// plugin runs in (the host's): the agent would wire the node itself as a
// pod. The CNI library checks this too, but only after ADD has run.
func checkNotOwnNetns(args *skel.CmdArgs) *types.Error {
	if o := strings.ToLower(args.NetnsOverride); o == "1" || o == "true" {
		return nil
	}
	own, e := ns.CheckNetNS(args.Netns)
	if e != nil {
		return e
	}
	if own {
		return types.NewError(types.ErrInvalidNetNS,
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
func CNIError(cmd wire.Command, err error) *types.Error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce
	}
	var call *wire.CallError
	if !errors.As(err, &call) {
		return types.NewError(types.ErrInternal, fmt.Sprintf("terway %s: %v", cmd, err), "")
	}
	code := types.ErrTryAgainLater
	if cmd == wire.CmdStatus {
		code = types.ErrPluginNotAvailable
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
		code = types.ErrInternal
		hint = "something other than a compatible terway agent answered on the socket"
	}
	return types.NewError(code, call.Error(), hint)
}
