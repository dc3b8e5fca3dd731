package nft

import (
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/spec"
)

// antispoofDoc is render's source validation (render/antispoof.go) for
// the given (host veth, address) pairs, or an empty table when off.
func antispoofDoc(on bool, pairs ...[2]string) *spec.NFTable {
	t := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable}
	if on {
		set := &spec.NFTSet{Name: "pod-sources", Type: []string{spec.TypeIfName, spec.TypeIPv4Addr}}
		for _, p := range pairs {
			set.Elements = append(set.Elements, spec.NFTElement{Key: []string{p[0], p[1]}})
		}
		links := spec.NFTMatch{Selectors: []string{spec.SelIIFName}, Values: []string{"tw*"}}
		src := []string{spec.SelIIFName, spec.SelIPSaddr}
		t.Sets = []*spec.NFTSet{set}
		t.Chains = []spec.NFTChain{{Name: "antispoof", Hook: spec.HookPrerouting, Priority: -300, Policy: spec.VerdictAccept,
			Rules: []spec.NFTRule{
				{Match: []spec.NFTMatch{{Selectors: src, Set: "pod-sources"}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}},
				{Match: []spec.NFTMatch{links, {Selectors: src, Negate: true, Set: "pod-sources"}}, Counter: true,
					Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}, Comment: "spoofed"},
				{Match: []spec.NFTMatch{links}, Counter: true, Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}, Comment: "not IPv4"},
			}}}
	}
	t.Canonicalize()
	return t
}

// TestAntispoofTraffic sends packets forged with pod V's address from pod
// A to server S through a node namespace: with source validation they are
// dropped and counted (a packet socket on V sees no answer); without it,
// S answers V, which shows the test can see a forged packet get through.
// V's own packets pass either way, and a converged table plans nothing
// although its counters move.
func TestAntispoofTraffic(t *testing.T) {
	e := newEnv(t, "spnode")
	pods := map[string]struct{ ns, host, podIP, hostIP string }{}
	for _, p := range []struct{ name, host, sub string }{{"a", "twspa", "220"}, {"v", "twspv", "221"}, {"s", "twsps", "222"}} {
		ns := nstest.Netns(t, "sp"+p.name)
		podIP, hostIP := "198.18."+p.sub+".2", "198.18."+p.sub+".1"
		nstest.Run(t, e.ns, "ip", "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", nstest.Name(ns))
		nstest.Run(t, e.ns, "ip", "addr", "add", hostIP+"/24", "dev", p.host)
		nstest.Run(t, e.ns, "ip", "link", "set", p.host, "up")
		nstest.Run(t, ns, "ip", "addr", "add", podIP+"/24", "dev", "eth0")
		nstest.Run(t, ns, "ip", "link", "set", "eth0", "up")
		nstest.Run(t, ns, "ip", "route", "add", "default", "via", hostIP)
		pods[p.name] = struct{ ns, host, podIP, hostIP string }{ns, p.host, podIP, hostIP}
	}
	nstest.Run(t, e.ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	a, v, s := pods["a"], pods["v"], pods["s"]
	srv, err := traffic.Serve(s.ns, s.podIP+":80", "tcp", "udp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	sn, err := traffic.Sniff(v.ns, "eth0", s.podIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sn.Close)

	pairs := [][2]string{{a.host, a.podIP}, {v.host, v.podIP}, {s.host, s.podIP}}
	// forged sends three SYNs and three datagrams and counts the answers
	// (all six when nothing drops them).
	forged := func() int64 {
		t.Helper()
		sn.Reset()
		for range 3 {
			if err := traffic.SendForged(a.ns, v.podIP, s.podIP, 80); err != nil {
				t.Fatal(err)
			}
		}
		return sn.Wait(6, time.Second)
	}
	e.apply(antispoofDoc(false))
	if n := forged(); n < 6 {
		t.Fatalf("without source validation, S answered %d forged packets at V, want 6 (SYN-ACKs and echoes): the test cannot see a forged packet get through", n)
	}

	on := antispoofDoc(true, pairs...)
	e.apply(on)
	for _, p := range []string{"tcp", "udp"} {
		if !traffic.Probe(v.ns, p, s.podIP+":80", 2*time.Second) {
			t.Errorf("V's own %s traffic to S does not pass source validation", p)
		}
	}
	if n := forged(); n != 0 {
		t.Errorf("with source validation, S answered %d forged packets at V", n)
	}
	counters, err := ReadCounters(e.reg, e.ns, "antispoof")
	if err != nil {
		t.Fatal(err)
	}
	want := []RuleCounter{{Chain: "antispoof", Comment: "spoofed", Packets: 6}, {Chain: "antispoof", Comment: "not IPv4"}}
	if len(counters) != 2 || counters[0].Comment != want[0].Comment || counters[0].Packets != 6 || counters[1].Comment != want[1].Comment {
		t.Errorf("counters = %+v, want the 6 forged packets on the spoofed rule (%+v; bytes not compared, IPv6 noise allowed)", counters, want)
	}
	if ops := e.plan(on, true); len(lines(ops)) != 0 {
		t.Errorf("a converged table with counters plans %d ops:\n%s", len(lines(ops)), planText(ops))
	}
}

// TestAntispoofScoped: a pod's scoped ADD puts exactly its (veth, address)
// element in pod-sources, even when the document holds another pending
// change of the set; its DEL removes exactly that element.
func TestAntispoofScoped(t *testing.T) {
	e := newEnv(t, "spscoped")
	base := [][2]string{{"tw0000000001", "198.18.240.1"}, {"tw0000000002", "198.18.240.2"}}
	e.apply(antispoofDoc(true, base...))
	added := [2]string{"tw0000000003", "198.18.240.3"}
	// Pending: pod 2 left, which only the agent's sync is to apply.
	pending := [][2]string{base[0]}
	sc := Scope{Pods: []string{"app/p3"}, Addrs: []string{added[1]}}
	scoped := func(doc *spec.NFTable) []string {
		t.Helper()
		ops, err := e.r.PlanScoped(e.reg, e.ns, doc, sc)
		if err != nil {
			t.Fatalf("scoped plan: %v", err)
		}
		e.run(ops)
		return lines(ops)
	}
	want := `+ nft element pod-sources { "tw0000000003" . 198.18.240.3 }`
	if got := scoped(antispoofDoc(true, append(pending, added)...)); len(got) != 1 || !strings.Contains(got[0], "tw0000000003") {
		t.Errorf("the ADD's plan = %q, want only its element (%s)", got, want)
	}
	set := e.nft("list", "set", "inet", "terway", "pod-sources")
	for _, ip := range []string{"198.18.240.1", "198.18.240.2", "198.18.240.3"} {
		if !strings.Contains(set, ip) {
			t.Errorf("after the ADD, pod-sources lacks %s:\n%s", ip, set)
		}
	}
	if got := scoped(antispoofDoc(true, pending...)); len(got) != 1 || !strings.Contains(got[0], "tw0000000003") || !strings.HasPrefix(got[0], "-") {
		t.Errorf("the DEL's plan = %q, want only the removal of its element", got)
	}
	set = e.nft("list", "set", "inet", "terway", "pod-sources")
	if strings.Contains(set, "198.18.240.3") || !strings.Contains(set, "198.18.240.2") {
		t.Errorf("after the DEL, pod-sources should hold pod 2 (pending) and not pod 3:\n%s", set)
	}
}
