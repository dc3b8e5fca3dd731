package spec

import (
	"strings"
	"testing"
)

func validDoc() *NodeState {
	s := New("node-1", PodModeVPC)
	s.Links = []Link{{Name: "tw1", Kind: LinkVeth, MTU: 1500, Peer: &VethPeer{Netns: "/var/run/netns/p", Name: "eth0"}}}
	s.Addresses = []Address{{Netns: "/var/run/netns/p", Dev: "eth0", CIDR: "198.18.0.10/32"}}
	s.Routes = []Route{{Dst: "198.18.0.10/32", Dev: "tw1", Scope: ScopeLink}}
	s.Rules = []Rule{{Priority: RulePriorityToPod, To: "198.18.0.10/32", Table: MainTable}}
	s.Neighbors = []Neighbor{{Dev: "tw1", IP: "198.18.0.10", MAC: "02:00:00:00:00:01"}}
	s.Sysctls = []Sysctl{{Path: "net/ipv4/ip_forward", Value: "1"}}
	s.TC = []Qdisc{{Dev: "tw1", Kind: QdiscTBF, RateBitsPerSecond: 8e6, BurstBytes: 20000, LimitBytes: 70000}}
	s.NFTables = &NFTable{Family: NFTFamily, Name: NFTTable,
		Sets: []*NFTSet{{Name: "m", Type: []string{TypeIPv4Addr}, Verdict: true,
			Elements: []NFTElement{{Key: []string{"198.18.0.10"}, Verdict: &NFTVerdict{Kind: VerdictJump, Chain: "c"}}}}},
		Chains: []NFTChain{
			{Name: "forward", Hook: HookForward, Rules: []NFTRule{{Verdict: NFTVerdict{Kind: VerdictVmap, Map: "m", Selectors: []string{SelIPSaddr}}}}},
			{Name: "c", Rules: []NFTRule{{Verdict: NFTVerdict{Kind: VerdictDrop}}}},
		}}
	s.PodNFTables = []PodNFTable{{Pod: "x/e", Netns: "/var/run/netns/e", Table: NFTable{Family: NFTFamily, Name: NFTTable,
		Chains: []NFTChain{
			{Name: "input", Hook: HookInput, Rules: []NFTRule{{Verdict: NFTVerdict{Kind: VerdictJump, Chain: "c"}}}},
			{Name: "c", Rules: []NFTRule{{Verdict: NFTVerdict{Kind: VerdictDrop}}}},
		}}}}
	return s
}

func TestValidateAcceptsAValidDocument(t *testing.T) {
	if err := validDoc().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidateNamesItemAndField(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(*NodeState)
		want   string
	}{
		{"bad link name", func(s *NodeState) { s.Links[0].Name = "a-very-long-interface" }, "links[host/a-very-long-interface].name"},
		{"veth without peer", func(s *NodeState) { s.Links[0].Peer = nil }, "links[host/tw1].peer"},
		{"bad mtu", func(s *NodeState) { s.Links[0].MTU = 10 }, "links[host/tw1].mtu: 10 is outside"},
		{"bad address", func(s *NodeState) { s.Addresses[0].CIDR = "198.18.0.300/32" }, ".cidr: \"198.18.0.300/32\""},
		{"bad gw", func(s *NodeState) { s.Routes[0].Gw = "x" }, "routes[host/table 254/198.18.0.10/32].gw"},
		{"unmasked dst", func(s *NodeState) { s.Routes[0].Dst = "198.18.0.10/24" }, ".dst"},
		{"foreign table", func(s *NodeState) { s.Routes[0].Table = 7 }, ".table: 7 is neither main"},
		{"rule outside band", func(s *NodeState) { s.Rules[0].Priority = 100 }, ".priority: 100 is outside our band"},
		{"bad mac", func(s *NodeState) { s.Neighbors[0].MAC = "zz" }, "neighbors[host/tw1/198.18.0.10].mac"},
		{"sysctl outside net", func(s *NodeState) { s.Sysctls[0].Path = "kernel/panic" }, "sysctls[host/kernel/panic].path"},
		{"sysctl escape", func(s *NodeState) { s.Sysctls[0].Path = "net/../kernel/x" }, ".path"},
		{"zero rate", func(s *NodeState) { s.TC[0].RateBitsPerSecond = 0 }, "tc[host/tw1].rateBitsPerSecond"},
		{"duplicate route", func(s *NodeState) { s.Routes = append(s.Routes, s.Routes[0]) }, "duplicate key"},
		{"jump to nowhere", func(s *NodeState) { s.NFTables.Sets[0].Elements[0].Verdict.Chain = "nope" }, "nftables.sets[m].verdict: jump to unknown chain \"nope\""},
		{"vmap of a plain set", func(s *NodeState) { s.NFTables.Sets[0].Verdict = false }, "nftables.chains[forward].rules[0].verdict"},
		{"null set", func(s *NodeState) { s.NFTables.Sets = append(s.NFTables.Sets, nil) }, "nftables.sets[1]: null where a set belongs"},
		{"null pod", func(s *NodeState) { s.Pods = append(s.Pods, nil) }, "pods[0]: null where a pod belongs"},
		{"element arity", func(s *NodeState) { s.NFTables.Sets[0].Elements[0].Key = []string{"a", "b"} }, "has 2 parts, the set's type has 1"},
		{"unknown selector", func(s *NodeState) {
			s.NFTables.Chains[1].Rules[0].Match = []NFTMatch{{Selectors: []string{"ip ttl"}, Values: []string{"1"}}}
		}, "nftables.chains[c].rules[0].match: unknown selector \"ip ttl\""},
		{"wrong mode", func(s *NodeState) { s.Mode = "bridge" }, "mode: is \"bridge\""},
		{"pod table in the node's namespace", func(s *NodeState) { s.PodNFTables[0].Netns = HostNetns },
			"podNftables[x/e].netns: a pod's table must name the pod's namespace"},
		{"pod table jumping nowhere", func(s *NodeState) { s.PodNFTables[0].Table.Chains[0].Rules[0].Verdict.Chain = "nope" },
			"podNftables[x/e].table.chains[input].rules[0].verdict: jump to unknown chain \"nope\""},
		{"two tables in one pod namespace", func(s *NodeState) {
			s.PodNFTables = append(s.PodNFTables, s.PodNFTables[0])
			s.PodNFTables[1].Pod = "x/f"
		}, "podNftables.netns[/var/run/netns/e]: duplicate key"},
	} {
		s := validDoc()
		tc.break_(s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestParseRejectsUnknownFieldsAndWrongKind(t *testing.T) {
	if _, err := Parse([]byte("apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\nbogus: 1\n")); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown field: err = %v", err)
	}
	if _, err := Parse([]byte("apiVersion: v1\nkind: Pod\n")); err == nil || !strings.Contains(err.Error(), "apiVersion/kind") {
		t.Errorf("wrong kind: err = %v", err)
	}
}

func TestCanonicalizeIsIdempotentAndOrdersValues(t *testing.T) {
	s := validDoc()
	s.NFTables.Sets = append(s.NFTables.Sets, &NFTSet{Name: "a", Type: []string{TypeIPv4Addr}, Elements: []NFTElement{
		{Key: []string{"198.18.0.10"}}, {Key: []string{"198.18.0.9"}}, {Key: []string{"198.18.0.0/28"}}, {Key: []string{"10.0.0.1-10.0.0.5"}}}})
	s.Canonicalize()
	got := []string{}
	for _, e := range s.NFTables.Set("a").Elements {
		got = append(got, e.Key[0])
	}
	if strings.Join(got, " ") != "10.0.0.1-10.0.0.5 198.18.0.0/28 198.18.0.9 198.18.0.10" {
		t.Errorf("elements in order %v", got)
	}
	a, _ := s.MarshalYAML()
	b, _ := s.Clone().MarshalYAML()
	if string(a) != string(b) {
		t.Error("marshalling a clone gives other bytes")
	}
}
