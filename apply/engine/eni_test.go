package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

const vpcPeer = "198.18.70.1"

// eniNode is a node in ENI multi-IP mode with two ENIs wired to a vpc
// namespace that plays the vswitches and a peer host.
type eniNode struct {
	*node
	vpc string
}

var enis = []struct {
	name, mac, primary, cidr, gw, vswitch string
	index                                 int
	secondaries                           []string
}{
	{"eni-1", "00:16:3e:00:00:01", "198.18.64.10", "198.18.64.0/24", "198.18.64.253", "vsw1", 1, []string{"198.18.64.11", "198.18.64.12"}},
	{"eni-2", "00:16:3e:00:00:02", "198.18.65.10", "198.18.65.0/24", "198.18.65.253", "vsw2", 2, []string{"198.18.65.11"}},
}

func newENINode(t *testing.T) *eniNode {
	n := &eniNode{node: newNode(t, spec.PodModeENIMultiIP), vpc: nstest.Netns(t, "vpc")}
	for _, path := range []string{n.host, n.vpc} {
		nstest.Run(t, path, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	nstest.Run(t, n.vpc, "ip", "addr", "add", vpcPeer+"/32", "dev", "lo")
	for _, e := range enis {
		// The ENI as the node sees it: a link with the ENI's MAC, under a
		// name the engine must replace with eth<index>.
		nstest.Run(t, n.host, "ip", "link", "add", "enitmp"+strconv.Itoa(e.index), "address", e.mac, "type", "veth", "peer", "name", e.vswitch, "netns", nstest.Name(n.vpc))
		nstest.Run(t, n.vpc, "ip", "addr", "add", e.gw+"/24", "dev", e.vswitch)
		nstest.Run(t, n.vpc, "ip", "link", "set", e.vswitch, "up")
		// The VPC delivers each IP to the ENI it is assigned to.
		for _, ip := range append([]string{e.primary}, e.secondaries...) {
			nstest.Run(t, n.vpc, "ip", "neigh", "replace", ip, "lladdr", e.mac, "dev", e.vswitch, "nud", "permanent")
		}
		n.in.ENIs = append(n.in.ENIs, spec.ENI{Metadata: spec.ObjectMeta{Name: e.name}, Spec: spec.ENISpec{
			MAC: e.mac, PrimaryIP: e.primary, SecondaryIPs: e.secondaries, VSwitchCIDR: e.cidr, Gateway: e.gw, DeviceIndex: e.index}})
	}
	return n
}

// rxPackets reads a vpc-side interface's receive counter.
func (n *eniNode) rxPackets(t *testing.T, dev string) int {
	var links []struct {
		Stats64 struct {
			Rx struct {
				Packets int `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	mustJSON(t, nstest.Run(t, n.vpc, "ip", "-j", "-s", "link", "show", "dev", dev), &links)
	return links[0].Stats64.Rx.Packets
}

func TestENIMultiIP(t *testing.T) {
	n := newENINode(t)
	n.addPod("x", "a", "198.18.64.11", map[string]string{"app": "a"}, map[string]string{render.AnnotationKubeEgress: "10M"}, "eni-1")
	n.addPod("x", "b", "198.18.64.10", map[string]string{"app": "b"}, nil, "eni-1")
	n.addPod("y", "c", "198.18.65.11", map[string]string{"app": "c"}, nil, "eni-2")
	n.setPolicies(policy("y", "c-from-x", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "c"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "x"}}}}}},
	}))
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	for _, e := range enis {
		nstest.Run(t, n.host, "ip", "link", "show", "dev", render.ENILinkName(e.index)) // renamed by MAC
	}
	serve(t, n.vpc, vpcPeer)
	for key, ip := range map[string]string{"x/a": "198.18.64.11", "x/b": "198.18.64.10", "y/c": "198.18.65.11"} {
		serve(t, n.ns[key], ip)
	}

	t.Run("pods leave through their own ENI", func(t *testing.T) {
		for _, tc := range []struct{ pod, own, other string }{{"x/a", "vsw1", "vsw2"}, {"x/b", "vsw1", "vsw2"}, {"y/c", "vsw2", "vsw1"}} {
			ownBefore, otherBefore := n.rxPackets(t, tc.own), n.rxPackets(t, tc.other)
			const probes = 20
			for i := 0; i < probes; i++ {
				if !traffic.Probe(n.ns[tc.pod], "udp", vpcPeer+":80", 2*time.Second) {
					t.Fatalf("%s cannot reach the vpc peer over UDP", tc.pod)
				}
			}
			reach(t, n.ns[tc.pod], "tcp", vpcPeer+":81", true)
			own, other := n.rxPackets(t, tc.own)-ownBefore, n.rxPackets(t, tc.other)-otherBefore
			if own < probes || other > 2 {
				t.Errorf("%s: %d packets arrived on its ENI's vswitch %s and %d on %s; want >= %d and ~0", tc.pod, own, tc.own, other, tc.other, probes)
			}
		}
	})
	t.Run("pod to pod across ENIs and policy", func(t *testing.T) {
		reach(t, n.ns["x/a"], "tcp", "198.18.65.11:80", true) // x -> y/c allowed by namespace
		reach(t, n.ns["y/c"], "tcp", "198.18.64.11:80", true) // x/a not isolated
		reach(t, n.ns["x/b"], "udp", "198.18.64.11:81", true)
	})

	// Drift: tamper with one object of each kind with the independent tools;
	// the plan names exactly the repair; apply restores it.
	hostVethA := spec.HostVethName("x/a")
	inGroup := state.PodEntry("y/c").IngressChain
	firstElement := state.NFTables.Set(inGroup + "-all").Elements[0].Key[0]
	for _, tc := range []struct {
		kind   string
		tamper []string
		netns  string
		want   []string // the exact plan lines (prefix match)
	}{
		{"route", []string{"ip", "route", "del", "198.18.64.11/32", "dev", hostVethA}, "", []string{"+ route 198.18.64.11/32 dev " + hostVethA}},
		{"eni route", []string{"ip", "route", "del", "default", "table", "1001"}, "", []string{"+ route default via 198.18.64.253 dev eth1 onlink table 1001"}},
		{"rule", []string{"ip", "rule", "del", "priority", "1520", "from", "198.18.64.11"}, "", []string{"+ rule"}},
		{"neighbour", []string{"ip", "neigh", "del", "198.18.64.11", "dev", hostVethA}, "", []string{"+ neighbor 198.18.64.11"}},
		// The kernel drops the routes and neighbours of a link that loses its
		// last IPv4 address, so those are part of the repair.
		{"address", []string{"ip", "addr", "del", "198.18.64.11/32", "dev", "eth0"}, "x/a",
			[]string{"+ address 198.18.64.11/32 dev eth0", "+ neighbor 169.254.1.1", "+ route default via 169.254.1.1"}},
		{"sysctl", []string{"sysctl", "-qw", "net.ipv4.conf.eth1.rp_filter=1"}, "", []string{"~ sysctl net/ipv4/conf/eth1/rp_filter = 0"}},
		{"qdisc", []string{"tc", "qdisc", "del", "dev", "eth0", "root"}, "x/a", []string{"+ qdisc tbf"}},
		{"nft chain", []string{"nft", "flush", "chain", "inet", "terway", "forward"}, "", []string{"~ nft chain forward", "~ nft commit"}},
		{"nft element", []string{"nft", "delete", "element", "inet", "terway", inGroup + "-all", "{", firstElement, "}"}, "", []string{"+ nft element " + inGroup + "-all", "~ nft commit"}},
		{"veth", []string{"ip", "link", "del", hostVethA}, "", []string{"+ link veth " + hostVethA}},
	} {
		t.Run("drift/"+tc.kind, func(t *testing.T) {
			where := n.host
			if tc.netns != "" {
				where = n.ns[tc.netns]
			}
			nstest.Run(t, where, tc.tamper...)
			lines := n.plan(state).Lines()
			if tc.kind == "veth" {
				// The pod side went with the pair: its address, route and
				// neighbour are planned too, and nothing of any other pod.
				if len(lines) == 0 || !strings.HasPrefix(lines[0], tc.want[0]) {
					t.Fatalf("plan after deleting the veth:\n%s", strings.Join(lines, "\n"))
				}
			} else if !planMatches(lines, tc.want) {
				t.Fatalf("plan after tampering (%s):\n%s\nwant lines starting with %q", strings.Join(tc.tamper, " "), strings.Join(lines, "\n"), tc.want)
			}
			n.apply(state)
			n.requireEmptyPlan(state)
		})
	}
	reach(t, n.ns["x/a"], "tcp", vpcPeer+":80", true)
}

func planMatches(lines, want []string) bool {
	if len(lines) != len(want) {
		return false
	}
	for i := range lines {
		if !strings.HasPrefix(lines[i], want[i]) {
			return false
		}
	}
	return true
}

// TestForeignStateSurvives puts objects we do not own next to ours and
// checks they are byte for byte the same after apply, drift repair and
// removal of every pod.
func TestForeignStateSurvives(t *testing.T) {
	n := newENINode(t)
	host := n.host
	nstest.Run(t, host, "ip", "link", "add", "fx0", "type", "veth", "peer", "name", "fx1")
	nstest.Run(t, host, "ip", "link", "set", "fx0", "up")
	nstest.Run(t, host, "ip", "addr", "add", "198.18.99.1/24", "dev", "fx0")
	nstest.Run(t, host, "ip", "route", "add", "198.18.98.0/24", "via", "198.18.99.2", "dev", "fx0", "proto", "static")
	nstest.Run(t, host, "ip", "route", "add", "198.18.97.0/24", "dev", "fx0", "table", "1100")
	nstest.Run(t, host, "ip", "route", "add", "198.18.96.0/24", "dev", "fx0", "table", "1001", "proto", "static")
	nstest.Run(t, host, "ip", "rule", "add", "priority", "1400", "from", "198.18.99.0/24", "lookup", "1100")
	nstest.Run(t, host, "ip", "rule", "add", "priority", "1600", "to", "198.18.97.0/24", "lookup", "1100")
	nstest.Run(t, host, "tc", "qdisc", "add", "dev", "fx0", "root", "tbf", "rate", "5mbit", "burst", "10kb", "latency", "50ms")
	nstest.Run(t, host, "nft", "add table ip foreign; add chain ip foreign c { type filter hook forward priority 0; policy accept; }; add rule ip foreign c tcp dport 22 counter accept; add set ip foreign s { type ipv4_addr; elements = { 198.18.99.5 } }")
	snapshot := func() string {
		var b strings.Builder
		for _, cmd := range [][]string{
			{"ip", "-d", "link", "show", "fx0"}, {"ip", "addr", "show", "dev", "fx0"},
			{"ip", "route", "show", "table", "all", "dev", "fx0"}, {"ip", "rule", "show"},
			{"tc", "qdisc", "show", "dev", "fx0"}, {"nft", "list", "table", "ip", "foreign"},
		} {
			out := nstest.Run(t, host, cmd...)
			if cmd[1] == "rule" { // ours are expected to come and go; keep the rest
				var kept []string
				for _, l := range strings.Split(out, "\n") {
					prio, _, _ := strings.Cut(l, ":")
					if p, err := strconv.Atoi(prio); err != nil || p < spec.RulePriorityMin || p > spec.RulePriorityMax {
						kept = append(kept, l)
					}
				}
				out = strings.Join(kept, "\n")
			}
			fmt.Fprintf(&b, "$ %s\n%s\n", strings.Join(cmd, " "), out)
		}
		return b.String()
	}
	before := snapshot()
	n.addPod("x", "a", "198.18.64.11", nil, map[string]string{render.AnnotationKubeIngress: "10M"}, "eni-1")
	n.addPod("x", "b", "198.18.65.11", nil, nil, "eni-2")
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	if after := snapshot(); after != before {
		t.Fatalf("foreign state changed by apply:\n--- before\n%s\n--- after\n%s", before, after)
	}
	n.removePod("x/a")
	n.removePod("x/b")
	state = n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	if after := snapshot(); after != before {
		t.Fatalf("foreign state changed by removing every pod:\n--- before\n%s\n--- after\n%s", before, after)
	}
	// Everything of ours is gone but the ENI links and the base nft table.
	if out := nstest.Run(t, host, "ip", "route", "show", "table", "all", "proto", "250"); strings.Count(out, "\n") != 2 {
		t.Errorf("routes left with proto 250 (want only the two ENI tables' defaults):\n%s", out)
	}
}

// TestScopedPlansFindPodRules: an ENI-mode pod's rules name its address,
// not a link, so a plan scoped to the pod finds them by address: a DEL
// removes them (the address given by the caller, as the document no longer
// has the pod), and an ADD replaces a stale rule of the pod's address that
// would send the pod's traffic out of another ENI.
func TestScopedPlansFindPodRules(t *testing.T) {
	n := newENINode(t)
	const ip = "198.18.64.11"
	n.addPod("x", "a", ip, nil, nil, "eni-1")
	n.addPod("x", "b", "198.18.64.12", nil, nil, "eni-1")
	n.apply(n.render())
	rulesOf := func(addr string) []string {
		var out []string
		for _, l := range strings.Split(nstest.Run(t, n.host, "ip", "rule", "show"), "\n") {
			if strings.Contains(l, " "+addr+" ") || strings.HasSuffix(l, " "+addr) {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
		return out
	}
	if got := rulesOf(ip); len(got) != 2 {
		t.Fatalf("x/a has rules %q, want two (to it, from it)", got)
	}

	// DEL of x/a with its address (as the agent knows it from its store).
	n.removePod("x/a")
	state := n.render()
	// An address the caller remembers wrongly (x/b holds it) claims
	// nothing of x/b's.
	wrong := engine.PlanOptions{Pods: []string{"x/a"}, PodIPs: map[string]string{"x/a": "198.18.64.12"}}
	if p, err := n.eng.Plan(context.Background(), state, wrong); err != nil {
		t.Fatal(err)
	} else if strings.Contains(p.String(), "198.18.64.12") {
		t.Errorf("a DEL of x/a given x/b's address plans changes to x/b's objects:\n%s", p)
	}
	// The same in a scope of more addresses than a scope compares one by
	// one (an admission's or a batch's).
	wide := engine.PlanOptions{Pods: []string{"x/a"}, PodIPs: map[string]string{"x/a": "198.18.64.12"}}
	for i := range 10 {
		key := "x/gone" + strconv.Itoa(i)
		wide.Pods = append(wide.Pods, key)
		wide.PodIPs[key] = "198.18.65." + strconv.Itoa(i+1)
	}
	if p, err := n.eng.Plan(context.Background(), state, wide); err != nil {
		t.Fatal(err)
	} else if strings.Contains(p.String(), "198.18.64.12") {
		t.Errorf("a DEL of x/a among 11 pods given x/b's address plans changes to x/b's objects:\n%s", p)
	}
	del := engine.PlanOptions{Pods: []string{"x/a"}, PodIPs: map[string]string{"x/a": ip}}
	p, err := n.eng.Plan(context.Background(), state, del)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := withoutNFTCommit(p.Lines()), withoutNFTCommit(n.plan(state).Lines()); !slices.Equal(got, want) {
		t.Errorf("plan scoped to the deleted x/a differs from the full plan:\n--- scoped\n%s\n--- full\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if rep, err := n.eng.Apply(context.Background(), state, del); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	if got := rulesOf(ip); len(got) != 0 {
		t.Errorf("after the scoped DEL of x/a, rules of its address remain: %q", got)
	}
	n.requireEmptyPlan(state)

	// A stale rule that sends the address to another ENI's table (left by
	// an earlier holder of the address; the full plan would find it too):
	// the scoped ADD of the pod that now holds the address replaces it.
	nstest.Run(t, n.host, "ip", "rule", "add", "priority", strconv.Itoa(spec.RulePriorityFromPod), "from", ip, "lookup", "1002")
	n.addPod("x", "d", ip, nil, nil, "eni-1")
	state = n.render()
	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/d"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	got := rulesOf(ip)
	if len(got) != 2 || slices.ContainsFunc(got, func(l string) bool { return strings.HasSuffix(l, "lookup 1002") }) {
		t.Errorf("after the scoped ADD of x/d, the rules of %s are %q; want two, none to eni-2's table 1002", ip, got)
	}
	n.requireEmptyPlan(state)
}
