package engine_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// serve starts echo servers on ports 80 and 81 (TCP and UDP) and 53 (UDP)
// at ip inside the namespace.
func serve(t testing.TB, netnsPath, ip string) {
	t.Helper()
	for _, port := range []string{"80", "81"} {
		s, err := traffic.Serve(netnsPath, ip+":"+port, "tcp", "udp")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
	}
	s, err := traffic.Serve(netnsPath, ip+":53", "udp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
}

func reach(t testing.TB, from, proto, addr string, want bool) {
	t.Helper()
	timeout := 2 * time.Second
	if !want {
		timeout = 600 * time.Millisecond
	}
	if got := traffic.Probe(from, proto, addr, timeout); got != want {
		t.Errorf("%s probe from %s to %s: reachable=%v, want %v", proto, nstest.Name(from), addr, got, want)
	}
}

func TestVPCFromEmptyTrafficPolicyBandwidthAndReadBack(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	pods := map[string]string{"x/a": "198.18.0.10", "x/b": "198.18.0.11", "y/a": "198.18.0.12"}
	n.addPod("x", "a", pods["x/a"], map[string]string{"app": "a"}, nil, "")
	n.addPod("x", "b", pods["x/b"], map[string]string{"app": "b"}, map[string]string{render.AnnotationAliyunIngress: "1m"}, "")
	n.addPod("y", "a", pods["y/a"], map[string]string{"app": "a"}, nil, "")
	state := n.render()

	rep := n.apply(state)
	if rep.Rounds != 1 {
		t.Errorf("apply from empty took %d rounds, want 1", rep.Rounds)
	}
	n.requireEmptyPlan(state)
	again := n.apply(state)
	if again.Writes != 0 || len(again.Results) != 0 {
		t.Errorf("converged apply made %d kernel writes and %d operations, want 0", again.Writes, len(again.Results))
	}

	// Real traffic: every pod reaches every other pod and the node, TCP and UDP.
	for key, ip := range pods {
		serve(t, n.ns[key], ip)
	}
	serve(t, n.host, nodeIP)
	for from := range pods {
		for to, ip := range pods {
			if from == to {
				continue
			}
			reach(t, n.ns[from], "tcp", ip+":80", true)
			reach(t, n.ns[from], "udp", ip+":81", true)
		}
		reach(t, n.ns[from], "tcp", nodeIP+":80", true)
	}

	readBackVPC(t, n, state)

	// NetworkPolicy: x/a admits only x/b, on TCP 80; its egress stays open.
	tcp := corev1TCP()
	port80 := intstr.FromInt32(80)
	n.setPolicies(policy("x", "a-from-b", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port80}},
		}},
	}))
	state = n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	reach(t, n.ns["x/b"], "tcp", pods["x/a"]+":80", true)
	reach(t, n.ns["x/b"], "tcp", pods["x/a"]+":81", false)
	reach(t, n.ns["x/b"], "udp", pods["x/a"]+":80", false)
	reach(t, n.ns["y/a"], "tcp", pods["x/a"]+":80", false)
	reach(t, n.ns["x/a"], "tcp", pods["y/a"]+":80", true) // egress not isolated
	reach(t, n.ns["y/a"], "tcp", pods["x/b"]+":80", true) // x/b not selected

	// Bandwidth: 1 MiB/s into x/b (TBF on its host veth); the echo back is free.
	rate, err := traffic.Throughput(n.ns["x/a"], pods["x/b"]+":80", time.Second, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ratio := rate / (1 << 20); ratio < 0.85 || ratio > 1.15 {
		t.Errorf("rate into x/b = %.0f B/s, %.3f of the 1 MiB/s limit (want within ±15%%)", rate, ratio)
	} else {
		t.Logf("rate into x/b = %.0f B/s, %.3f of the 1 MiB/s limit", rate, ratio)
	}
}

func corev1TCP() corev1.Protocol { return corev1.ProtocolTCP }

// readBackVPC compares what the independent tools print with the document.
func readBackVPC(t *testing.T, n *node, s *spec.NodeState) {
	t.Helper()
	for _, p := range s.Pods {
		var addrs []struct {
			IfName   string `json:"ifname"`
			Address  string `json:"address"`
			AddrInfo []struct {
				Local     string `json:"local"`
				PrefixLen int    `json:"prefixlen"`
			} `json:"addr_info"`
		}
		mustJSON(t, nstest.Run(t, p.Netns, "ip", "-j", "addr", "show", "dev", p.IfName), &addrs)
		if len(addrs) != 1 || len(addrs[0].AddrInfo) == 0 || addrs[0].AddrInfo[0].Local != p.IP || addrs[0].AddrInfo[0].PrefixLen != 32 {
			t.Errorf("pod %s: ip -j addr shows %+v, want %s/32 on %s", p.Key, addrs, p.IP, p.IfName)
		}
		var routes []struct {
			Dst, Gateway, Dev, Protocol string
			Flags                       []string
		}
		mustJSON(t, nstest.Run(t, p.Netns, "ip", "-j", "route", "show", "default"), &routes)
		if len(routes) != 1 || routes[0].Gateway != spec.PodGateway || routes[0].Dev != p.IfName || !contains(routes[0].Flags, "onlink") {
			t.Errorf("pod %s: default route %+v, want via %s dev %s onlink", p.Key, routes, spec.PodGateway, p.IfName)
		}
		var neigh []struct {
			Dst    string   `json:"dst"`
			Lladdr string   `json:"lladdr"`
			State  []string `json:"state"`
		}
		mustJSON(t, nstest.Run(t, p.Netns, "ip", "-j", "neigh", "show", spec.PodGateway), &neigh)
		if len(neigh) != 1 || neigh[0].Lladdr != spec.HostVethMAC(p.Key) || !contains(neigh[0].State, "PERMANENT") {
			t.Errorf("pod %s: neighbour %+v, want %s permanent", p.Key, neigh, spec.HostVethMAC(p.Key))
		}
	}
	var hostRoutes []struct{ Dst, Dev, Scope, Protocol string }
	mustJSON(t, nstest.Run(t, n.host, "ip", "-j", "route", "show", "table", "all", "proto", "250"), &hostRoutes)
	want := 0
	for _, r := range s.Routes {
		if r.Netns == spec.HostNetns {
			want++
		}
	}
	if len(hostRoutes) != want {
		t.Errorf("host has %d routes with proto 250, the document %d: %+v", len(hostRoutes), want, hostRoutes)
	}
	for _, q := range s.TC {
		var qd []struct {
			Kind    string `json:"kind"`
			Handle  string `json:"handle"`
			Options struct {
				Rate uint64 `json:"rate"`
			} `json:"options"`
		}
		mustJSON(t, nstest.Run(t, nsOrHost(n, q.Netns), "tc", "-j", "qdisc", "show", "dev", q.Dev, "root"), &qd)
		if len(qd) != 1 || qd[0].Kind != "tbf" || qd[0].Handle != "1:" || qd[0].Options.Rate*8 != q.RateBitsPerSecond {
			t.Errorf("tc -j on %s: %+v, want tbf 1: at %d bit/s", q.Dev, qd, q.RateBitsPerSecond)
		}
	}
	var ruleset struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	mustJSON(t, nstest.Run(t, n.host, "nft", "-j", "list", "table", "inet", "terway"), &ruleset)
	chains, sets := 0, 0
	for _, obj := range ruleset.Nftables {
		if _, ok := obj["chain"]; ok {
			chains++
		}
		if _, ok := obj["set"]; ok {
			sets++
		}
		if _, ok := obj["map"]; ok {
			sets++
		}
	}
	if chains != len(s.NFTables.Chains) || sets != len(s.NFTables.Sets) {
		t.Errorf("nft -j shows %d chains and %d sets/maps, the document %d and %d", chains, sets, len(s.NFTables.Chains), len(s.NFTables.Sets))
	}
}

func nsOrHost(n *node, netns string) string {
	if netns == spec.HostNetns {
		return n.host
	}
	return netns
}

func mustJSON(t testing.TB, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("parse JSON %q: %v", strings.TrimSpace(out), err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPodNetnsByProcPath: a runtime may name a pod's namespace by a
// process's /proc/PID/ns/net instead of a bind mount (dockershim-style
// runtimes do). The engine sets the pod up, observes it converged, carries
// traffic and removes it the same way.
func TestPodNetnsByProcPath(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	named := n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "b", "198.18.0.11", nil, nil, "")
	// A process that holds the pod's namespace, as a sandbox's pause does.
	holder := exec.Command("ip", "netns", "exec", nstest.Name(named), "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	procPath := fmt.Sprintf("/proc/%d/ns/net", holder.Process.Pid)
	// Until ip has switched, the process is in this test's namespace, which
	// the registry refuses as a pod's; wait for the switch.
	for deadline := time.Now().Add(5 * time.Second); !sameFile(procPath, named); {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not enter %s", procPath, named)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range n.in.Allocations {
		if n.in.Allocations[i].Metadata.Name == "a" {
			n.in.Allocations[i].Spec.Netns = procPath
		}
	}
	state := n.render()
	if p := state.PodEntry("x/a"); p.Netns != procPath {
		t.Fatalf("x/a's namespace in the document is %q, want %q", p.Netns, procPath)
	}
	n.apply(state)
	n.requireEmptyPlan(state)
	if out := nstest.Run(t, named, "ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "198.18.0.10/32") {
		t.Fatalf("x/a's eth0, seen through its named path:\n%s", out)
	}
	serve(t, named, "198.18.0.10")
	serve(t, n.ns["x/b"], "198.18.0.11")
	reach(t, n.ns["x/b"], "tcp", "198.18.0.10:80", true)
	reach(t, named, "udp", "198.18.0.11:81", true)

	n.removePod("x/a")
	state = n.render()
	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/a"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	if out, err := nstest.Exec(n.host, "ip", "link", "show", "dev", spec.HostVethName("x/a")); err == nil {
		t.Errorf("x/a's host veth is still there after its removal:\n%s", out)
	}
	n.requireEmptyPlan(state)
}

func sameFile(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// TestNodeNamespaceAsPodNamespaceIsRefused: a document that puts a pod in
// the node's own namespace (a runtime's bug, a hostNetwork sandbox sent to
// the CNI) gets that pod refused, its failures naming the namespace, and
// nothing of it is written: the node's links stay as they were. The other
// pods converge as usual, in a full and in a scoped apply.
func TestNodeNamespaceAsPodNamespaceIsRefused(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "b", "198.18.0.11", nil, nil, "")
	n.in.Allocations[0].Spec.Netns = n.host
	state := n.render()
	linksOf := func() string {
		var kept []string
		for _, l := range strings.Split(nstest.Run(t, n.host, "ip", "-o", "link", "show"), "\n") {
			if !strings.Contains(l, spec.HostVethName("x/b")) {
				kept = append(kept, l)
			}
		}
		return strings.Join(kept, "\n")
	}
	before := linksOf()
	for _, opts := range []engine.PlanOptions{{Full: true}, {Pods: []string{"x/a"}}} {
		rep, err := n.eng.Apply(context.Background(), state, opts)
		if err != nil {
			t.Fatalf("apply %+v: %v, want the other pods applied and x/a's items failed", opts, err)
		}
		// x/a's veth is refused; what lives on it fails for want of it.
		refused := 0
		for _, r := range rep.Results {
			switch {
			case r.Err == nil && r.Op.Pod == "x/a":
				t.Errorf("apply %+v: x/a's %s succeeded", opts, r.Op)
			case r.Err != nil && r.Op.Pod != "x/a":
				t.Errorf("apply %+v: %s failed: %v", opts, r.Op, r.Err)
			case r.Err != nil && strings.Contains(r.Err.Error(), n.host+"\" is the node's own namespace, not a pod's"):
				refused++
			}
		}
		if refused == 0 {
			t.Errorf("apply %+v: no failure of x/a names the refusal of %s:\n%v", opts, n.host, rep.Err())
		}
	}
	if after := linksOf(); after != before {
		t.Errorf("the node's links changed (x/b's veth aside):\n--- before\n%s\n--- after\n%s", before, after)
	}
	nstest.Run(t, n.host, "ip", "link", "show", "dev", spec.HostVethName("x/b"))
	if out := nstest.Run(t, n.ns["x/b"], "ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "198.18.0.11/32") {
		t.Errorf("x/b's eth0:\n%s", out)
	}
}
