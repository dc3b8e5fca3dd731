package spec

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse decodes a document (YAML or JSON) and, when it is accepted,
// checks what the contract between render and apply rests on: no panic;
// the same answer twice; the canonical YAML and JSON parse back (still
// valid) and print the same bytes again; and the canonical form does not
// depend on the order of any section. Seeds: every golden document plus
// small hand-written ones; crashers go to testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	golden, _ := filepath.Glob("../golden/*/nodestate.yaml")
	for _, path := range golden {
		// The large case (70 KB) would only slow every iteration down.
		if data, err := os.ReadFile(path); err == nil && len(data) < 32<<10 {
			f.Add(data)
		}
	}
	for _, s := range []string{
		`{"apiVersion":"terway/v1","kind":"NodeState","node":"n","mode":"vpc"}`,
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\nroutes:\n- {dst: 198.18.0.10/32, dev: tw1, scope: link}\n- {dst: default, gw: 169.254.1.1, dev: eth0, onlink: true, netns: /var/run/netns/p}\n",
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: eni-multi-ip\nrules:\n- {priority: 512, to: 198.18.0.10/32, table: 254}\n- {priority: 2048, from: 198.18.0.10/32, table: 1001}\n",
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\nnftables: {family: inet, name: terway, sets: [{name: s, type: [ipv4_addr, inet_service], interval: true, elements: [{key: [198.18.0.0/24, 80-90]}, {key: [198.18.1.1, \"53\"]}]}], chains: [{name: c, rules: [{verdict: {kind: drop}}]}]}\n",
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\ntc: [{dev: tw1, kind: tbf, rateBitsPerSecond: 8000000, burstBytes: 20000, limitBytes: 70000}]\n",
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\nproblems: [{kind: Pod, name: b, reason: r}, {kind: Pod, name: a, reason: r}, {kind: Pod, name: a, reason: r}]\n",
		`{"apiVersion":"terway/v1","kind":"NodeState","node":"n","mode":"vpc","links":[{"name":"x","kind":"veth"}]}`,
		"apiVersion: terway/v1\nkind: NodeState\nnode: n\nmode: vpc\nnftables: {family: inet, name: terway, sets: [null]}\n",
		`[]`, `null`, `{"apiVersion":1}`, "apiVersion: terway/v1\nkind: NodeState\n&a [*a]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		s2, err2 := Parse(data)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Parse is not deterministic: %v then %v", err, err2)
		}
		if err != nil {
			return
		}
		y1 := mustYAML(t, s)
		if y := mustYAML(t, s2); !bytes.Equal(y, y1) {
			t.Fatalf("two parses print differently:\n%s\n---\n%s", y1, y)
		}
		back, err := Parse(y1)
		if err != nil {
			t.Fatalf("the canonical YAML of an accepted document is refused: %v\n%s", err, y1)
		}
		if y := mustYAML(t, back); !bytes.Equal(y, y1) {
			t.Fatalf("canonical YAML does not round-trip:\n%s\n---\n%s", y1, y)
		}
		j, err := s.MarshalJSONIndent()
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := Parse(j)
		if err != nil {
			t.Fatalf("the canonical JSON of an accepted document is refused: %v\n%s", err, j)
		}
		if y := mustYAML(t, fromJSON); !bytes.Equal(y, y1) {
			t.Fatalf("JSON and YAML forms differ:\n%s\n---\n%s", y1, y)
		}
		reverseSections(s)
		if y := mustYAML(t, s); !bytes.Equal(y, y1) {
			t.Fatalf("canonical form depends on item order:\n%s\n---\n%s", y1, y)
		}
		s.Canonicalize()
		s2.Canonicalize()
		if PrintNFT(s.NFTables) != PrintNFT(s2.NFTables) {
			t.Fatalf("nft text depends on item order:\n%s\n---\n%s", PrintNFT(s2.NFTables), PrintNFT(s.NFTables))
		}
	})
}

func mustYAML(t *testing.T, s *NodeState) []byte {
	t.Helper()
	y, err := s.MarshalYAML()
	if err != nil {
		t.Fatalf("MarshalYAML of an accepted document: %v", err)
	}
	return y
}

// reverseSections reverses every list whose order Canonicalize decides.
func reverseSections(s *NodeState) {
	slices.Reverse(s.Links)
	slices.Reverse(s.Addresses)
	slices.Reverse(s.Routes)
	slices.Reverse(s.Rules)
	slices.Reverse(s.Neighbors)
	slices.Reverse(s.Sysctls)
	slices.Reverse(s.TC)
	slices.Reverse(s.Pods)
	slices.Reverse(s.Problems)
	if t := s.NFTables; t != nil {
		slices.Reverse(t.Sets)
		for i := range t.Sets {
			slices.Reverse(t.Sets[i].Elements)
		}
		slices.Reverse(t.Chains)
	}
	if e := s.ENI; e != nil {
		slices.Reverse(e.ENIs)
		for i := range e.ENIs {
			for _, l := range [][]string{e.ENIs[i].InUse, e.ENIs[i].Keep, e.ENIs[i].Release} {
				slices.Reverse(l)
			}
		}
	}
}

// FuzzNodePodCIDR: no panic; the same answer twice; an accepted pod CIDR is
// IPv4, a network (host bits are masked, and said), /16 to /32, and reads
// back from its own text; a refusal names spec.podCIDR or spec.podCIDRs.
func FuzzNodePodCIDR(f *testing.F) {
	for _, s := range [][2]string{
		{"198.18.0.0/24", ""}, {"300.1.0.0/24", ""}, {"10.0.0.0/33", ""}, {"10.0.0.5/0", ""}, {"fd00::/64", ""},
		{"", "198.18.0.0/24,fd00::/64"}, {"", "fd00::/64,198.18.1.0/24"}, {"198.18.0.0/24", "198.18.1.0/24"},
		{"::ffff:10.0.0.0/120", ""}, {"10.0.0.0/024", ""}, {"1.2.3.4/32", "1.2.3.4/32,,"}, {"fe80::1%eth0/64", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, podCIDR, list string) {
		var podCIDRs []string
		if list != "" {
			podCIDRs = strings.Split(list, ",")
		}
		p, err := NodePodCIDR(podCIDR, podCIDRs)
		p2, err2 := NodePodCIDR(podCIDR, podCIDRs)
		if p != p2 || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("NodePodCIDR(%q, %q) twice: %v, %v then %v, %v", podCIDR, podCIDRs, p, err, p2, err2)
		}
		if err != nil {
			var fe *FieldError
			// A usable error (host bits) comes with the masked network;
			// any other with no network at all.
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, "spec.podCIDR") || fe.Reason == "" || p.IsValid() != fe.Usable {
				t.Fatalf("NodePodCIDR(%q, %q) = %v, %v; want only a FieldError naming the field", podCIDR, podCIDRs, p, err)
			}
			if !fe.Usable {
				return
			}
		}
		if !p.Addr().Is4() || p != p.Masked() || p.Bits() < MinPodCIDRBits || p.Bits() > MaxPodCIDRBits {
			t.Fatalf("NodePodCIDR(%q, %q) accepted %v", podCIDR, podCIDRs, p)
		}
		if back, err := NodePodCIDR(p.String(), nil); err != nil || back != p {
			t.Fatalf("NodePodCIDR(%q, %q) = %v, which reads back as %v, %v", podCIDR, podCIDRs, p, back, err)
		}
	})
}
