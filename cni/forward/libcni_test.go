package forward_test

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
)

var versions = []string{"0.4.0", "1.0.0", "1.1.0"}

// cniErr extracts the CNI error libcni returns, failing the test if there
// is none.
func cniErr(t *testing.T, err error) *types.Error {
	t.Helper()
	var ce *types.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v (%T), want a CNI error", err, err)
	}
	return ce
}

// TestLifecycle drives ADD, CHECK, GC, STATUS and DEL through libcni for
// each spec version and checks what the runtime gets and the agent sees.
func TestLifecycle(t *testing.T) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			agent := &fakeAgent{}
			sock := startAgent(t, agent)
			rt := runtimeFor(t, v, sock)
			pod := podRT("c1")

			res, err := rt.cni.AddNetworkList(ctx(t), rt.list, pod)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != v {
				t.Errorf("ADD result version %s, want %s", res.Version(), v)
			}
			switch r := res.(type) {
			case *types040.Result:
				if len(r.IPs) != 1 || r.IPs[0].Address.String() != "198.18.0.1/32" || r.IPs[0].Version != "4" {
					t.Errorf("0.4.0 result IPs = %v", r.IPs)
				}
			case *types100.Result:
				if len(r.IPs) != 1 || r.IPs[0].Address.String() != "198.18.0.1/32" || r.IPs[0].Gateway.String() != "169.254.1.1" {
					t.Errorf("result IPs = %v", r.IPs)
				}
				if len(r.Interfaces) != 1 || r.Interfaces[0].Sandbox != pod.NetNS || r.DNS.Nameservers[0] != "198.18.255.10" {
					t.Errorf("result = %+v", r)
				}
			default:
				t.Fatalf("ADD result type %T", res)
			}

			add := agent.Calls()[0]
			wantArgs := wire.PodArgs{Namespace: "default", Name: "pod-c1", UID: "uid-c1", InfraContainerID: "c1"}
			if add.Command != wire.CmdAdd || add.ContainerID != "c1" || add.Netns != pod.NetNS || add.IfName != "eth0" ||
				!reflect.DeepEqual(add.Args, wantArgs) || add.CNIVersion != v {
				t.Errorf("agent saw ADD %+v", add)
			}
			if add.NetConf.Name != "terway" || add.NetConf.Type != "terway" || add.NetConf.Socket != sock || add.NetConf.CNIVersion != v ||
				!strings.Contains(string(add.NetConf.Raw), `"socket"`) {
				t.Errorf("agent saw netconf %+v", add.NetConf)
			}

			if err := rt.cni.CheckNetworkList(ctx(t), rt.list, pod); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			check := agent.Calls()[1]
			if prev, err := server.PrevResult(check); check.Command != wire.CmdCheck || err != nil || prev == nil ||
				prev.CNIVersion != wire.ResultVersion || prev.IPs[0].Address.String() != "198.18.0.1/32" {
				t.Errorf("agent saw CHECK %+v with prevResult %s (%v)", check, check.PrevResult, err)
			}

			valid := []types.GCAttachment{{ContainerID: "c1", IfName: "eth0"}}
			if err := rt.cni.GCNetworkList(ctx(t), rt.list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			if err := rt.cni.GetStatusNetworkList(ctx(t), rt.list); err != nil {
				t.Fatalf("STATUS: %v", err)
			}
			if err := rt.cni.DelNetworkList(ctx(t), rt.list, pod); err != nil {
				t.Fatalf("DEL: %v", err)
			}

			want := []wire.Command{wire.CmdAdd, wire.CmdCheck, wire.CmdDel}
			if v == "1.1.0" { // GC and STATUS exist from 1.1.0 on; libcni skips them before
				want = []wire.Command{wire.CmdAdd, wire.CmdCheck, wire.CmdGC, wire.CmdStatus, wire.CmdDel}
			}
			if got := agent.Commands(); !reflect.DeepEqual(got, want) {
				t.Fatalf("agent saw %v, want %v", got, want)
			}
			calls := agent.Calls()
			if v == "1.1.0" {
				if gc := calls[2]; !reflect.DeepEqual(gc.ValidAttachments, attachments(valid)) || gc.NetConf.Name != "terway" {
					t.Errorf("agent saw GC %+v", gc)
				}
			}
			del := calls[len(calls)-1]
			if prev, err := server.PrevResult(del); del.ContainerID != "c1" || del.IfName != "eth0" || del.Args.Name != "pod-c1" ||
				err != nil || prev == nil || prev.IPs[0].Address.String() != "198.18.0.1/32" {
				t.Errorf("agent saw DEL %+v with prevResult %s (%v)", del, del.PrevResult, err)
			}
		})
	}
}

// TestGCReleasesStaleAttachments: libcni DELs cached attachments missing
// from the valid list, then hands the list to the plugin's GC.
func TestGCReleasesStaleAttachments(t *testing.T) {
	agent := &fakeAgent{}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent))
	for _, id := range []string{"keep", "stale"} {
		if _, err := rt.cni.AddNetworkList(ctx(t), rt.list, podRT(id)); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	valid := []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}
	if err := rt.cni.GCNetworkList(ctx(t), rt.list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	calls := agent.Calls()
	if len(calls) != 4 || calls[2].Command != wire.CmdDel || calls[2].ContainerID != "stale" ||
		calls[3].Command != wire.CmdGC || !reflect.DeepEqual(calls[3].ValidAttachments, attachments(valid)) {
		t.Fatalf("agent saw %v", agent.Commands())
	}

	// No attachment is valid any more: the list travels as [], not as "absent".
	if err := rt.cni.GCNetworkList(ctx(t), rt.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}); err != nil {
		t.Fatalf("GC with an empty list: %v", err)
	}
	last := agent.Calls()[len(agent.Calls())-1]
	if last.Command != wire.CmdGC || last.ValidAttachments == nil || len(last.ValidAttachments) != 0 {
		t.Fatalf("agent saw %+v, want GC with an empty list", last)
	}
}

// TestGCWithoutListIsRefused: a GC that does not say what is valid would
// release everything; the plugin refuses it before the agent sees it.
func TestGCWithoutListIsRefused(t *testing.T) {
	agent := &fakeAgent{}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent))
	err := rt.cni.GCNetworkList(ctx(t), rt.list, nil)
	ce := cniErr(t, err)
	if ce.Code != types.ErrInvalidNetworkConfig || !strings.Contains(ce.Msg, "cni.dev/valid-attachments") {
		t.Errorf("got %d %q", ce.Code, ce.Msg)
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("agent saw %d calls", n)
	}
}

// TestAgentErrorsReachTheRuntime: code, msg and details the agent answers
// arrive unchanged for every command and version.
func TestAgentErrorsReachTheRuntime(t *testing.T) {
	want := map[wire.Command]*types.Error{
		wire.CmdAdd:    types.NewError(types.ErrInvalidNetworkConfig, `pod default/pod-c1: annotation "k8s.aliyun.com/ingress-bandwidth" value "fast" is not a bandwidth`, "use e.g. 10m"),
		wire.CmdCheck:  types.NewError(120, "route 198.18.0.1/32 dev tw1234 missing", "table main"),
		wire.CmdDel:    types.NewError(types.ErrTryAgainLater, "store busy", "bbolt: timeout"),
		wire.CmdGC:     types.NewError(121, "gc failed", "x"),
		wire.CmdStatus: types.NewError(types.ErrPluginNotAvailable, "informers not synced", "pods, networkpolicies"),
	}
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			agent := &fakeAgent{}
			rt := runtimeFor(t, v, startAgent(t, agent))
			pod := podRT("c1")
			same := func(cmd wire.Command, err error) {
				t.Helper()
				if ce := cniErr(t, err); *ce != *want[cmd] {
					t.Errorf("%s: runtime got %+v, want %+v", cmd, ce, want[cmd])
				}
			}
			if _, err := rt.cni.AddNetworkList(ctx(t), rt.list, pod); err != nil {
				t.Fatal(err)
			}
			agent.addErr, agent.checkErr, agent.delErr = want[wire.CmdAdd], want[wire.CmdCheck], want[wire.CmdDel]
			agent.gcErr, agent.statusErr = want[wire.CmdGC], want[wire.CmdStatus]
			_, err := rt.cni.AddNetworkList(ctx(t), rt.list, podRT("c2"))
			same(wire.CmdAdd, err)
			same(wire.CmdCheck, rt.cni.CheckNetworkList(ctx(t), rt.list, pod))
			same(wire.CmdDel, rt.cni.DelNetworkList(ctx(t), rt.list, pod))
			if v == "1.1.0" {
				// libcni DELs the still-cached c1 before GC; let that pass so
				// the GC error is the one returned.
				agent.delErr = nil
				same(wire.CmdGC, rt.cni.GCNetworkList(ctx(t), rt.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}))
				same(wire.CmdStatus, rt.cni.GetStatusNetworkList(ctx(t), rt.list))
			}
		})
	}
}

// TestUnreachableAgent: nothing on the socket → code 11 (50 for STATUS)
// naming the socket and the cause, for every command.
func TestUnreachableAgent(t *testing.T) {
	sock := tempDir(t) + "/gone/terway.sock"
	rt := runtimeFor(t, "1.1.0", sock)
	pod := podRT("c1")
	check := func(what string, err error, code uint) {
		t.Helper()
		ce := cniErr(t, err)
		if ce.Code != code || !strings.Contains(ce.Msg, sock) || !strings.Contains(ce.Msg, "no such file or directory") ||
			!strings.Contains(ce.Details, "terwayd") {
			t.Errorf("%s: got %d %q (%s), want code %d naming %s and the cause", what, ce.Code, ce.Msg, ce.Details, code, sock)
		}
	}
	_, err := rt.cni.AddNetworkList(ctx(t), rt.list, pod)
	check("ADD", err, types.ErrTryAgainLater)
	check("DEL", rt.cni.DelNetworkList(ctx(t), rt.list, pod), types.ErrTryAgainLater)
	check("GC", rt.cni.GCNetworkList(ctx(t), rt.list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}), types.ErrTryAgainLater)
	check("STATUS", rt.cni.GetStatusNetworkList(ctx(t), rt.list), types.ErrPluginNotAvailable)
}

// TestAgentTimeout: an agent that does not answer in the conflist's
// timeout gives code 11 (50 for STATUS), and the agent learns the plugin
// gave up.
func TestAgentTimeout(t *testing.T) {
	agent := &fakeAgent{block: true}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent), `"timeout":"300ms"`)
	_, err := rt.cni.AddNetworkList(ctx(t), rt.list, podRT("c1"))
	if ce := cniErr(t, err); ce.Code != types.ErrTryAgainLater || !strings.Contains(ce.Msg, "did not answer ADD within 300ms") {
		t.Errorf("ADD: got %d %q", ce.Code, ce.Msg)
	}
	waitCancelled(t, agent)
	err = rt.cni.GetStatusNetworkList(ctx(t), rt.list)
	if ce := cniErr(t, err); ce.Code != types.ErrPluginNotAvailable || !strings.Contains(ce.Msg, "did not answer STATUS") {
		t.Errorf("STATUS: got %d %q", ce.Code, ce.Msg)
	}
	waitCancelled(t, agent)
}

func waitCancelled(t *testing.T, a *fakeAgent) {
	t.Helper()
	select {
	case <-a.cancelled:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent's request context was not cancelled after the plugin gave up")
	}
}

// TestBadNetconf: a bad plugin field is a CNI error naming it, and the agent
// never hears of the call.
func TestBadNetconf(t *testing.T) {
	agent := &fakeAgent{}
	sock := startAgent(t, agent)
	for _, tc := range []struct {
		name, version, fields string
		code                  uint
		want                  string
	}{
		{"timeout garbage", "1.1.0", fmt.Sprintf(`"socket":%q,"timeout":"soon"`, sock), 7, `field "timeout"`},
		{"timeout number", "1.0.0", fmt.Sprintf(`"socket":%q,"timeout":5`, sock), 7, `field "timeout"`},
		{"socket relative", "1.1.0", `"socket":"terway.sock"`, 7, `field "socket"`},
		{"socket not a string", "0.4.0", `"socket":["x"]`, 6, `field "socket"`},
		{"version unsupported", "0.3.1", fmt.Sprintf(`"socket":%q`, sock), 1, "incompatible CNI versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, tc.version, tc.fields)
			_, err := rt.cni.AddNetworkList(ctx(t), rt.list, podRT("c1"))
			ce := cniErr(t, err)
			if ce.Code != tc.code || !strings.Contains(ce.Msg, tc.want) {
				t.Errorf("got %d %q (%s), want %d with %q", ce.Code, ce.Msg, ce.Details, tc.code, tc.want)
			}
		})
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("agent saw %d calls for bad configs", n)
	}
}

// TestMissingPodArgs: ADD without the pod's name in CNI_ARGS cannot be
// served; the plugin says which keys are missing.
func TestMissingPodArgs(t *testing.T) {
	agent := &fakeAgent{}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent))
	pod := podRT("c1")
	pod.Args = nil
	_, err := rt.cni.AddNetworkList(ctx(t), rt.list, pod)
	if ce := cniErr(t, err); ce.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(ce.Msg, "K8S_POD_NAME") {
		t.Errorf("got %d %q", ce.Code, ce.Msg)
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("agent saw %d calls", n)
	}
}

// TestOwnNetnsRefused: CNI_NETNS pointing at the plugin's own namespace
// (the host's) is refused before the agent could wire the node as a pod.
func TestOwnNetnsRefused(t *testing.T) {
	agent := &fakeAgent{}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent))
	pod := podRT("c1")
	pod.NetNS = "/proc/self/ns/net"
	_, err := rt.cni.AddNetworkList(ctx(t), rt.list, pod)
	if ce := cniErr(t, err); ce.Code != types.ErrInvalidNetNS {
		t.Errorf("got %d %q", ce.Code, ce.Msg)
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("agent saw %d calls", n)
	}
}

// TestConcurrentAdds: runtimes run plugins in parallel; each invocation is
// independent.
func TestConcurrentAdds(t *testing.T) {
	agent := &fakeAgent{}
	rt := runtimeFor(t, "1.1.0", startAgent(t, agent))
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := rt.cni.AddNetworkList(ctx(t), rt.list, podRT(fmt.Sprintf("p%d", i))); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var ids []string
	for _, c := range agent.Calls() {
		ids = append(ids, c.ContainerID)
	}
	sort.Strings(ids)
	if want := []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("agent saw %v", ids)
	}
}

// TestVersionInfo: the plugin reports exactly the versions it supports.
func TestVersionInfo(t *testing.T) {
	rt := newRuntime(t, "1.1.0", "")
	info, err := rt.cni.GetVersionInfo(ctx(t), "terway")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.SupportedVersions(); !reflect.DeepEqual(got, versions) {
		t.Errorf("supported versions %v, want %v", got, versions)
	}
}

// attachments is the runtime's GC list as the agent receives it.
func attachments(l []types.GCAttachment) []wire.Attachment {
	out := []wire.Attachment{}
	for _, a := range l {
		out = append(out, wire.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return out
}
