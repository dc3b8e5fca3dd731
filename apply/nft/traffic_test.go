package nft

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestTraffic routes TCP from pod A to pod B through a node namespace and
// checks that the per-pod chain decides: a drop blocks, a matching element
// of the concatenated interval set lets through, removing the drop allows.
func TestTraffic(t *testing.T) {
	node := nstest.Netns(t, "tnode")
	a := nstest.Netns(t, "tpoda")
	b := nstest.Netns(t, "tpodb")
	for _, c := range []struct{ pod, host, hostIP, podIP, gw string }{
		{a, "twa", "198.18.210.1/24", "198.18.210.2/24", "198.18.210.1"},
		{b, "twb", "198.18.211.1/24", "198.18.211.2/24", "198.18.211.1"},
	} {
		nstest.Run(t, node, "ip", "link", "add", c.host, "type", "veth", "peer", "name", "eth0", "netns", nstest.Name(c.pod))
		nstest.Run(t, node, "ip", "addr", "add", c.hostIP, "dev", c.host)
		nstest.Run(t, node, "ip", "link", "set", c.host, "up")
		nstest.Run(t, c.pod, "ip", "addr", "add", c.podIP, "dev", "eth0")
		nstest.Run(t, c.pod, "ip", "link", "set", "eth0", "up")
		nstest.Run(t, c.pod, "ip", "route", "add", "default", "via", c.gw)
	}
	nstest.Run(t, node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

	reg := netns.NewRegistry("")
	t.Cleanup(reg.Close)
	const server = "198.18.211.2:8080"
	var ln net.Listener
	if err := reg.Do(b, func() (err error) { ln, err = net.Listen("tcp", server); return err }); err != nil {
		t.Fatalf("listen in pod B: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello\n"))
			c.Close()
		}
	}()
	connect := func() error {
		return reg.Do(a, func() error {
			// The timeout only bounds a connection the policy drops.
			c, err := net.DialTimeout("tcp", server, 2*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil && line != "hello\n" {
				err = errors.New("unexpected greeting " + line)
			}
			return err
		})
	}

	r := New(Options{})
	steps := []struct {
		name    string
		rules   []spec.NFTRule
		port    string
		allowed bool
	}{
		{"no rules", nil, "8080", true},
		{"drop", []spec.NFTRule{dropRule}, "8080", false},
		{"policy allows port 8080", []spec.NFTRule{allowRule, dropRule}, "8080", true},
		{"policy allows only port 9090", []spec.NFTRule{allowRule, dropRule}, "9090", false},
		{"drop removed", []spec.NFTRule{allowRule}, "9090", true},
	}
	for _, s := range steps {
		ops, err := r.Sync(t.Context(), reg, node, trafficDoc(s.rules, s.port))
		if err != nil {
			t.Fatalf("%s: sync: %v", s.name, err)
		}
		t.Logf("%s: %d ops", s.name, len(lines(ops)))
		err = connect()
		if s.allowed && err != nil {
			t.Errorf("%s: connection from pod A to pod B failed: %v", s.name, err)
		}
		if !s.allowed && err == nil {
			t.Errorf("%s: connection from pod A to pod B succeeded, want it dropped", s.name)
		}
	}
}

var (
	dropRule  = spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}}
	allowRule = spec.NFTRule{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr, spec.SelL4Proto, spec.SelTHDport}, Set: "in_b-ports"}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}}
)

func trafficDoc(rules []spec.NFTRule, port string) *spec.NFTable {
	t := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable,
		Sets: []*spec.NFTSet{
			{Name: "ingress-dispatch", Type: []string{spec.TypeIPv4Addr}, Verdict: true, Elements: []spec.NFTElement{
				{Key: []string{"198.18.211.2"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "in_b"}}}},
			{Name: "in_b-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
				Elements: []spec.NFTElement{{Key: []string{"198.18.210.0/24", "tcp", port}}}},
		},
		Chains: []spec.NFTChain{
			{Name: "forward", Hook: spec.HookForward, Policy: spec.VerdictAccept, Rules: []spec.NFTRule{
				{Match: []spec.NFTMatch{{Selectors: []string{spec.SelCtState}, Values: []string{"established", "related"}}},
					Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}},
				{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: "ingress-dispatch", Selectors: []string{spec.SelIPDaddr}}},
			}},
			{Name: "in_b", Rules: rules},
		}}
	t.Canonicalize()
	return t
}
