// Package kindstest is the shared kit of the kernel kind packages' root
// tests: a node namespace with pods behind it, a small realistic VPC-mode
// document for it, a plan/apply loop over any kind, readers for the `ip -j`
// and `tc -j` tools, and objects we do not own whose survival the tests
// check byte for byte.
//
// Every namespace comes from internal/nstest (deleted by t.Cleanup, also on
// failure); the code under test sees the node namespace as "" through
// netns.NewRegistry, so nothing ever touches the machine's own namespace.
package kindstest

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// Env is a node namespace (no uplink) and pod namespaces behind it.
type Env struct {
	// Node is the node namespace's path; Reg resolves "" to it.
	Node string
	// Pods are the pod namespaces' paths.
	Pods []string
	// VPC is the vswitch namespace behind simulated ENIs, made by AddENI.
	VPC string
	Reg *netns.Registry
}

var envSeq atomic.Int32

// NewEnv makes a node namespace and n pod namespaces, all deleted when the
// test ends.
func NewEnv(t testing.TB, n int) *Env {
	t.Helper()
	nstest.RequireRoot(t)
	seq := envSeq.Add(1)
	e := &Env{Node: nstest.Netns(t, fmt.Sprintf("n%d", seq))}
	for i := range n {
		e.Pods = append(e.Pods, nstest.Netns(t, fmt.Sprintf("p%d-%d", seq, i)))
	}
	e.Reg = netns.NewRegistry(e.Node)
	t.Cleanup(e.Reg.Close) // runs before the namespaces are deleted
	return e
}

// In returns the namespace path an item's Netns names: the node for "".
func (e *Env) In(netns string) string {
	if netns == spec.HostNetns {
		return e.Node
	}
	return netns
}

// Pod is what VPC derives for one pod: names, MACs and the IP.
type Pod struct {
	Key      string
	Netns    string
	HostVeth string
	HostMAC  string
	PodMAC   string
	IP       string
}

// PodFor derives pod i's identity from its key the way render does: a
// hash gives the host veth name and both MACs (locally administered), so
// that they survive re-creation.
func PodFor(i int, podNetns string) Pod {
	key := fmt.Sprintf("default/pod-%d", i)
	sum := sha256.Sum256([]byte(key))
	mac := func(b []byte) string { return net.HardwareAddr(append([]byte{0x02}, b...)).String() }
	return Pod{
		Key:      key,
		Netns:    podNetns,
		HostVeth: spec.HostVethPrefix + fmt.Sprintf("%x", sum[:5]),
		HostMAC:  mac(sum[5:10]),
		PodMAC:   mac(sum[10:15]),
		IP:       fmt.Sprintf("198.18.0.%d", 10+i),
	}
}

// ShapedIndex is the pod VPC gives a bandwidth limit (a TBF on its host
// veth, for traffic into the pod).
const ShapedIndex = 0

// VPC builds a VPC-mode document for one pod per namespace: host veth
// tw<hash> and pod eth0 with the pod IP/32, the pod's default route via
// 169.254.1.1 onlink, permanent neighbours on both sides, the host route
// podIP/32 dev hostveth scope link, forwarding on, rp_filter off on each
// host veth, and a TBF on the first pod.
func VPC(podNetns []string) *spec.NodeState {
	s := &spec.NodeState{APIVersion: spec.APIVersion, Kind: spec.KindNodeState, Node: "node-1", Mode: spec.PodModeVPC}
	s.Sysctls = append(s.Sysctls, spec.Sysctl{Path: "net/ipv4/ip_forward", Value: "1"})
	for i, ns := range podNetns {
		p := PodFor(i, ns)
		s.Links = append(s.Links, spec.Link{Name: p.HostVeth, Kind: spec.LinkVeth, MAC: p.HostMAC, MTU: 1500,
			Peer: &spec.VethPeer{Netns: ns, Name: "eth0", MAC: p.PodMAC}, Pod: p.Key})
		s.Addresses = append(s.Addresses, spec.Address{Netns: ns, Dev: "eth0", CIDR: p.IP + "/32", Pod: p.Key})
		s.Routes = append(s.Routes,
			spec.Route{Netns: ns, Dst: "default", Gw: spec.PodGateway, Dev: "eth0", Onlink: true, Pod: p.Key},
			spec.Route{Dst: p.IP + "/32", Dev: p.HostVeth, Scope: spec.ScopeLink, Pod: p.Key})
		s.Neighbors = append(s.Neighbors,
			spec.Neighbor{Netns: ns, Dev: "eth0", IP: spec.PodGateway, MAC: p.HostMAC, Pod: p.Key},
			spec.Neighbor{Dev: p.HostVeth, IP: p.IP, MAC: p.PodMAC, Pod: p.Key})
		s.Sysctls = append(s.Sysctls, spec.Sysctl{Path: "net/ipv4/conf/" + p.HostVeth + "/rp_filter", Value: "0", Pod: p.Key})
		if i == ShapedIndex {
			s.TC = append(s.TC, spec.Qdisc{Dev: p.HostVeth, Kind: spec.QdiscTBF, RateBitsPerSecond: 10_000_000,
				BurstBytes: 32 * 1024, LimitBytes: 64 * 1024, Direction: "ingress", Pod: p.Key})
		}
		s.Pods = append(s.Pods, &spec.Pod{Key: p.Key, Netns: ns, IfName: "eth0", IP: p.IP, Mode: spec.PodModeVPC, HostVeth: p.HostVeth})
	}
	s.Canonicalize()
	return s
}

// Namespaces lists the pod namespaces a document names, as the engine
// passes them to Observe.
func Namespaces(s *spec.NodeState) []string { return s.Namespaces() }

// Kind bundles one kind package's functions so that a test can plan and
// apply it generically. D is the document's item type, O what Observe
// returns (the same type, except for links).
type Kind[D, O any] struct {
	Observe func(op.Namespaces, []string, *spec.NodeState) ([]O, error)
	Diff    func(desired []D, observed []O) []op.Op
	Items   func(*spec.NodeState) []D
}

// Plan observes and diffs; it fails the test if Observe fails.
func (k Kind[D, O]) Plan(t testing.TB, e *Env, s *spec.NodeState) []op.Op {
	t.Helper()
	obs, err := k.Observe(e.Reg, Namespaces(s), s)
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	return k.Diff(k.Items(s), obs)
}

// Apply plans and executes every operation, failing the test on the first
// error, and returns the plan it executed.
func (k Kind[D, O]) Apply(t testing.TB, e *Env, s *spec.NodeState) []op.Op {
	t.Helper()
	ops := k.Plan(t, e, s)
	Exec(t, e, ops)
	return ops
}

// Converge applies, then checks that a second plan is empty. It returns
// the first plan.
func (k Kind[D, O]) Converge(t testing.TB, e *Env, s *spec.NodeState) []op.Op {
	t.Helper()
	ops := k.Apply(t, e, s)
	if again := k.Plan(t, e, s); len(again) != 0 {
		t.Fatalf("plan after apply is not empty:\n%s", strings.Join(Lines(again), "\n"))
	}
	return ops
}

// Exec runs the operations in order; Exec must succeed for each.
func Exec(t testing.TB, e *Env, ops []op.Op) {
	t.Helper()
	for _, o := range ops {
		if o.Exec == nil {
			t.Fatalf("%s: no Exec", o)
		}
		if err := o.Exec(context.Background(), e.Reg); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
	}
}

// Lines is the plan as text, one operation per line.
func Lines(ops []op.Op) []string {
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.String()
	}
	return out
}

// Writes sums the operations' declared kernel writes.
func Writes(ops []op.Op) int {
	n := 0
	for _, o := range ops {
		n += o.Writes
	}
	return n
}

// WantPlan fails the test unless the plan's lines are exactly want.
func WantPlan(t testing.TB, ops []op.Op, want ...string) {
	t.Helper()
	got := Lines(ops)
	if !slices.Equal(got, want) {
		t.Fatalf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// Run runs a tool in the namespace and returns its output.
func Run(t testing.TB, netns string, args ...string) string {
	t.Helper()
	return nstest.Run(t, netns, args...)
}

// JSON runs a tool with -j output in the namespace and decodes it.
func JSON(t testing.TB, netns string, args ...string) []map[string]any {
	t.Helper()
	out := strings.TrimSpace(Run(t, netns, args...))
	if out == "" {
		return nil
	}
	var v []map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%s: decode %q: %v", strings.Join(args, " "), out, err)
	}
	return v
}

// Str returns a JSON field as a string ("" when absent), numbers without
// a fraction.
func Str(m map[string]any, field string) string {
	switch v := m[field].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return fmt.Sprintf("%.0f", v)
	case bool:
		return fmt.Sprint(v)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Handle opens a netlink handle in the namespace at path, independent of
// the registry the code under test uses, for reading back. It is closed
// when the test ends.
func Handle(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := vnetns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", path, err)
	}
	t.Cleanup(h.Close)
	return h
}
