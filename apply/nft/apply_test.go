package nft

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// withExtras adds a chain and sets that use the rest of the vocabulary:
// anonymous sets, single values, negation, interface names and prefixes,
// counters, goto, a plain
// and a concatenated hash set, a verdict map with plain verdicts.
func withExtras(t *spec.NFTable, target string) *spec.NFTable {
	m := func(sel string, neg bool, set string, vals ...string) spec.NFTMatch {
		return spec.NFTMatch{Selectors: strings.Split(sel, " . "), Negate: neg, Set: set, Values: vals}
	}
	v := func(kind string) spec.NFTVerdict { return spec.NFTVerdict{Kind: kind} }
	t.Sets = append(t.Sets,
		&spec.NFTSet{Name: "plain", Type: []string{spec.TypeIPv4Addr}, Comment: "hash set",
			Elements: []spec.NFTElement{{Key: []string{"198.18.3.1"}}, {Key: []string{"198.18.3.2"}}}},
		&spec.NFTSet{Name: "ifs", Type: []string{spec.TypeIfName},
			Elements: []spec.NFTElement{{Key: []string{"eth0"}}, {Key: []string{"tw1a2b3c"}}}},
		&spec.NFTSet{Name: "pairs", Type: []string{spec.TypeIPv4Addr, spec.TypeService},
			Elements: []spec.NFTElement{{Key: []string{"198.18.3.1", "443"}}}},
		// An interface name first in a concatenation (render's hairpin
		// set): 16 bytes, so the address lands four registers on.
		&spec.NFTSet{Name: "if-addrs", Type: []string{spec.TypeIfName, spec.TypeIPv4Addr},
			Elements: []spec.NFTElement{{Key: []string{"tw1a2b3c", "198.18.3.1"}}, {Key: []string{"tw4d5e6f", "198.18.3.2"}}}},
		&spec.NFTSet{Name: "node-ports", Type: []string{spec.TypeService}, Verdict: true,
			Elements: []spec.NFTElement{
				{Key: []string{"22"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictAccept}},
				{Key: []string{"23"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictDrop}},
				{Key: []string{"24"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictGoto, Chain: target}},
			}},
	)
	t.Chains = append(t.Chains, spec.NFTChain{Name: "extras", Comment: "the rest of the IR", Rules: []spec.NFTRule{
		{Match: []spec.NFTMatch{m("meta l4proto", false, "", "tcp", "udp"), m("th dport", false, "", "80", "443")}, Verdict: v(spec.VerdictAccept)},
		{Match: []spec.NFTMatch{m("ip daddr", true, "", "198.18.0.1"), m("meta l4proto", false, "", "tcp"), m("th dport", false, "", "8080")},
			Verdict: v(spec.VerdictDrop), Comment: "single values"},
		{Match: []spec.NFTMatch{m("meta iifname", false, "", "eth0")}, Verdict: spec.NFTVerdict{Kind: spec.VerdictGoto, Chain: target}},
		{Match: []spec.NFTMatch{m("meta iifname", true, "", "tw*"), m("meta oifname", false, "", "tw*")}, Counter: true,
			Verdict: v(spec.VerdictDrop), Comment: "interface prefixes and a counter"},
		{Match: []spec.NFTMatch{m("ct state", true, "", "invalid")}, Verdict: v(spec.VerdictAccept)},
		{Match: []spec.NFTMatch{m("ct state", false, "", "new")}, Verdict: v(spec.VerdictAccept)},
		{Match: []spec.NFTMatch{m("meta oifname", false, "ifs")}, Verdict: v(spec.VerdictDrop)},
		{Match: []spec.NFTMatch{m("ip saddr . th dport", false, "pairs")}, Verdict: v(spec.VerdictAccept)},
		{Match: []spec.NFTMatch{m("meta iifname . ip daddr", false, "if-addrs")}, Verdict: v(spec.VerdictAccept)},
		{Match: []spec.NFTMatch{m("ip saddr", true, "plain")}, Verdict: v(spec.VerdictReturn)},
		{Match: []spec.NFTMatch{m("th dport", false, "", "1000-2000", "3000")}, Verdict: v(spec.VerdictReturn)},
		{Match: []spec.NFTMatch{m("ip saddr", false, "", "198.18.5.0/24", "198.18.7.1")}, Verdict: v(spec.VerdictAccept)},
		{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: "node-ports", Selectors: []string{spec.SelTHDport}}},
		{Verdict: spec.NFTVerdict{Kind: spec.VerdictJump, Chain: target}},
	}})
	t.Canonicalize()
	return t
}

func TestApplyRealisticTable(t *testing.T) {
	e := newEnv(t, "real")
	ps := pods(3)
	doc := withExtras(testDoc(ps, nil), ps[0].in())
	st := &spec.NodeState{APIVersion: spec.APIVersion, Kind: spec.KindNodeState, Mode: spec.PodModeVPC, NFTables: doc}
	if err := st.Validate(); err != nil {
		t.Fatalf("test document is invalid: %v", err)
	}
	ops := e.apply(doc)
	if got := lines(ops); len(got) == 0 || got[0] != "+ table inet terway" {
		t.Fatalf("first op = %v, want + table inet terway", got)
	}
	if last := ops[len(ops)-1]; last.Key != CommitKey || last.Writes != 1 {
		t.Errorf("last op = %+v, want the commit with 1 write", last)
	}
	e.checkTool(doc)
	e.checkText(doc)
	if t.Failed() {
		t.Logf("nft list:\n%s", e.nft("list", "table", "inet", "terway"))
	}
	if ops := e.plan(doc, false); len(ops) != 0 {
		t.Errorf("partial re-plan not empty:\n%s", planText(ops))
	}
	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("full re-plan not empty:\n%s", planText(ops))
	}
}

// TestRepairTampering changes our table with nft(8) and expects a full
// plan to show exactly the repair.
func TestRepairTampering(t *testing.T) {
	ps := pods(3)
	doc := testDoc(ps, nil)
	p := ps[1]
	cases := []struct {
		name   string
		tamper [][]string
		want   []string // plan lines; nil: see check
		check  func(t *testing.T, got []string)
	}{
		{name: "flush chain", tamper: [][]string{{"flush", "chain", "inet", "terway", p.in()}},
			want: []string{"~ nft chain " + p.in() + " (3 rules)"}},
		{name: "delete element", tamper: [][]string{{"delete", "element", "inet", "terway", p.in() + "-ports", "{ 198.18.0.0/24 . tcp . 80 }"}},
			want: []string{"+ nft element " + p.in() + "-ports { 198.18.0.0/24 . tcp . 80 }"}},
		{name: "add rule", tamper: [][]string{{"add", "rule", "inet", "terway", p.in(), "tcp", "dport", "22", "counter", "accept"}},
			want: []string{"~ nft chain " + p.in() + " (3 rules)"}},
		{name: "insert rule in base chain", tamper: [][]string{{"insert", "rule", "inet", "terway", "forward", "accept"}},
			want: []string{"~ nft chain forward (3 rules)"}},
		{name: "add element", tamper: [][]string{{"add", "element", "inet", "terway", p.in() + "-all", "{ 198.18.77.0/24 }"}},
			want: []string{"- nft element " + p.in() + "-all { 198.18.77.0/24 }"}},
		{name: "change map verdict", tamper: [][]string{
			{"delete", "element", "inet", "terway", "ingress-dispatch", "{ " + p.ip + " }"},
			{"add", "element", "inet", "terway", "ingress-dispatch", "{ " + p.ip + " : accept }"}},
			want: []string{"~ nft element ingress-dispatch { " + p.ip + " : jump " + p.in() + " } (was " + p.ip + " : accept)"}},
		{name: "change base chain policy", tamper: [][]string{{"add", "chain", "inet", "terway", "input", "{ policy drop; }"}},
			want: []string{"~ nft chain input (recreate: policy changed; 2 rules)"}},
		{name: "dormant table", tamper: [][]string{{"add", "table", "inet", "terway", "{ flags dormant; }"}},
			want: []string{"~ table inet terway (wake: the table is dormant, none of its rules run)"}},
		{name: "stray set", tamper: [][]string{{"add", "set", "inet", "terway", "stray", "{ type ipv4_addr; }"}},
			want: []string{"- nft set stray"}},
		{name: "delete chain and its references", tamper: [][]string{
			{"delete", "element", "inet", "terway", "egress-dispatch", "{ " + p.ip + " }"},
			{"delete", "chain", "inet", "terway", p.out()}},
			want: []string{"+ nft chain " + p.out() + " (2 rules)", "+ nft element egress-dispatch { " + p.ip + " : jump " + p.out() + " }"}},
		{name: "stray empty chain", tamper: [][]string{{"add", "chain", "inet", "terway", "stray"}},
			check: func(t *testing.T, got []string) {
				// No rule or map names the chain and the kernel cannot list
				// one table's chains: the table is replaced whole.
				if len(got) == 0 || !strings.HasPrefix(got[0], "~ table inet terway (recreate: the table holds") {
					t.Errorf("plan starts %q, want a table recreation", got)
				}
			}},
		{name: "delete table", tamper: [][]string{{"delete", "table", "inet", "terway"}},
			check: func(t *testing.T, got []string) {
				if len(got) != 1+len(doc.Sets)+len(doc.Chains) || got[0] != "+ table inet terway" {
					t.Errorf("plan has %d lines starting %q, want + table and %d objects", len(got), got[0], len(doc.Sets)+len(doc.Chains))
				}
			}},
	}
	e := newEnv(t, "tamper")
	e.apply(doc)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.t = t
			for _, args := range c.tamper {
				e.nft(args...)
			}
			// A partial sync trusts its record and does not see drift...
			if ops := e.plan(doc, false); len(ops) != 0 {
				t.Errorf("partial plan after tampering not empty:\n%s", planText(ops))
			}
			// ...a full one does.
			ops := e.plan(doc, true)
			got := lines(ops)
			if c.check != nil {
				c.check(t, got)
			} else if !slices.Equal(got, c.want) {
				t.Errorf("repair plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			e.run(ops)
			if ops := e.plan(doc, true); len(ops) != 0 {
				t.Errorf("plan after repair not empty:\n%s", planText(ops))
			}
			e.checkTool(doc)
		})
	}
}

func TestForeignTableSurvives(t *testing.T) {
	e := newEnv(t, "foreign")
	foreign := `table ip foreign {
	set blocked {
		type ipv4_addr
		elements = { 198.18.6.1, 198.18.6.2 }
	}
	chain c {
		type filter hook forward priority 0; policy accept;
		tcp dport 22 accept
		ip saddr @blocked drop
	}
}
table inet foreign2 {
	chain c {
		type filter hook input priority 0; policy accept;
		meta l4proto udp counter accept
	}
}
`
	writeNFT(t, e, foreign)
	before := e.nft("list", "table", "ip", "foreign") + e.nft("list", "table", "inet", "foreign2")
	ps := pods(4)
	steps := []*spec.NFTable{testDoc(ps, nil), testDoc(ps[:2], map[int]int{1: 1}), nil}
	for i, doc := range steps {
		e.apply(doc)
		if doc != nil {
			e.checkTool(doc)
		}
		after := e.nft("list", "table", "ip", "foreign") + e.nft("list", "table", "inet", "foreign2")
		if after != before {
			t.Fatalf("step %d changed the foreign tables:\n--- before\n%s\n--- after\n%s", i, before, after)
		}
	}
	if out, err := execNFT(e, "list", "table", "inet", "terway"); err == nil {
		t.Errorf("table inet terway still exists after applying nil:\n%s", out)
	}
	if ops := e.plan(nil, true); len(ops) != 0 {
		t.Errorf("plan for nil after deletion not empty:\n%s", planText(ops))
	}
}

// TestFailureMakesNextSyncFull breaks the record's belief behind its back
// so that a partial transaction fails, then expects the next sync to read
// the kernel and repair.
func TestFailureMakesNextSyncFull(t *testing.T) {
	e := newEnv(t, "fail")
	ps := pods(3)
	e.apply(testDoc(ps, nil))
	p := ps[2]
	e.nft("delete", "element", "inet", "terway", p.in()+"-ports", "{ 198.18.0.0/24 . tcp . 80 }")
	next := testDoc(ps, map[int]int{2: 1}) // port 80 → 81, so the partial plan deletes what is gone
	ops := e.plan(next, false)
	var err error
	for _, o := range ops {
		if err = o.Exec(context.Background(), e.reg); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatalf("transaction deleting a missing element succeeded; plan:\n%s", planText(ops))
	}
	if !strings.Contains(err.Error(), "198.18.0.0/24 . tcp . 80") || !strings.Contains(err.Error(), p.in()+"-ports") {
		t.Errorf("error does not name the element and set: %v", err)
	}
	// Nothing of the failed transaction was applied.
	e.checkTool(withoutElement(testDoc(ps, nil), p.in()+"-ports", "198.18.0.0/24 . tcp . 80"))
	ops = e.plan(next, false) // full, because of the failure
	want := []string{
		"+ nft element " + p.in() + "-all { 198.18.9.6 }",
		"- nft element " + p.in() + "-all { 198.18.9.5 }",
		"+ nft element " + p.in() + "-ports { 198.18.0.0/24 . tcp . 81 }",
		"~ nft chain " + p.in() + " (3 rules)",
	}
	if got := lines(ops); !sameSet(got, want) {
		t.Errorf("plan after failure:\n%s\nwant (any order):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e.run(ops)
	e.checkTool(next)
}

func withoutElement(doc *spec.NFTable, setName, elem string) *spec.NFTable {
	s := doc.Set(setName)
	s.Elements = slices.DeleteFunc(s.Elements, func(e spec.NFTElement) bool { return spec.FormatElement(e) == elem })
	return doc
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestIntervalEdges moves elements across the edges of interval sets:
// whole ranges (0.0.0.0/0, 0-65535, which have no end element in the
// kernel), adjacent ranges, and back, checking nft(8) and an empty full
// plan after each step.
func TestIntervalEdges(t *testing.T) {
	e := newEnv(t, "edges")
	doc := func(addrs, ports []string) *spec.NFTable {
		a := &spec.NFTSet{Name: "addrs", Type: []string{spec.TypeIPv4Addr}, Interval: true}
		for _, x := range addrs {
			a.Elements = append(a.Elements, spec.NFTElement{Key: []string{x}})
		}
		p := &spec.NFTSet{Name: "ports", Type: []string{spec.TypeService}, Interval: true}
		for _, x := range ports {
			p.Elements = append(p.Elements, spec.NFTElement{Key: []string{x}})
		}
		c := &spec.NFTSet{Name: "pairs", Type: []string{spec.TypeIPv4Addr, spec.TypeService}, Interval: true}
		for i := range min(len(addrs), len(ports)) {
			c.Elements = append(c.Elements, spec.NFTElement{Key: []string{addrs[i], ports[i]}})
		}
		d := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{a, p, c}}
		d.Canonicalize()
		return d
	}
	steps := []*spec.NFTable{
		doc([]string{"0.0.0.0/0"}, []string{"0-65535"}),
		doc([]string{"198.18.0.0/16"}, []string{"80"}),
		doc([]string{"198.18.0.0/24", "198.18.1.0/24", "255.255.255.255"}, []string{"1-5", "6-10", "65535"}),
		doc([]string{"198.18.1.0/24", "255.255.255.0/24"}, []string{"6-10", "65000-65535"}),
		doc([]string{"0.0.0.0/0"}, []string{"0-65535"}),
		doc(nil, nil),
	}
	for i, d := range steps {
		e.apply(d)
		e.checkTool(d)
		if ops := e.plan(d, true); len(ops) != 0 {
			t.Errorf("step %d: full plan not empty:\n%s", i, planText(ops))
		}
	}
}

// TestRecreateWithReferences changes what the kernel cannot update in
// place (comments) on objects others refer to: the plan recreates them and
// rewrites or re-adds every reference in the same transaction.
func TestRecreateWithReferences(t *testing.T) {
	e := newEnv(t, "recreate")
	ps := pods(3)
	e.apply(testDoc(ps, nil))
	p := ps[0]
	doc := testDoc(ps, nil)
	doc.Chain(p.in()).Comment = "renamed"
	doc.Set(p.in() + "-ports").Comment = "renamed"
	doc.Set("egress-dispatch").Comment = "renamed"
	want := []string{
		"~ nft map egress-dispatch (recreate: comment changed; 3 elements)",
		"~ nft set " + p.in() + "-ports (recreate: comment changed; 4 elements)",
		"~ nft chain forward (3 rules; rewritten: set egress-dispatch is recreated)",
		"~ nft chain " + p.in() + " (recreate: comment changed; 3 rules)",
		"~ nft chain input (2 rules; rewritten: set egress-dispatch is recreated)",
		"~ nft element ingress-dispatch { " + p.ip + " : jump " + p.in() + " } (re-added: chain " + p.in() + " is recreated)",
	}
	ops := e.plan(doc, false)
	if got := lines(ops); !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	e.run(ops)
	e.checkTool(doc)
	e.checkText(doc)
	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("full plan after recreation not empty:\n%s", planText(ops))
	}
}

// TestVerifyCatchesDifferences: the read-back after a commit fails loudly,
// naming the set, the counts and the elements, when the kernel holds other
// elements or rules than the transaction meant to write (as when
// google/nftables v0.3.0 silently installs 1,808 of 10,000 elements).
func TestVerifyCatchesDifferences(t *testing.T) {
	e := newEnv(t, "verify")
	ps := pods(1)
	doc := testDoc(ps, nil)
	e.apply(doc)
	p := ps[0]
	meant := withoutElement(testDoc(ps, nil), p.in()+"-all", "198.18.9.5")
	meant.Set(p.in() + "-all").Elements = append(meant.Set(p.in()+"-all").Elements, spec.NFTElement{Key: []string{"198.18.66.0/24"}})
	want, _, err := canonical(meant, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(e.reg, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	err = verify(c, &plan{verifySets: map[string]*set{p.in() + "-all": want.sets.get(p.in() + "-all")}, verifyChains: map[string]int{p.in(): 4}})
	if err == nil {
		t.Fatal("verify found no difference")
	}
	for _, s := range []string{"nft set " + p.in() + "-all holds 2 elements, want 2", "missing 198.18.66.0/24", "unexpected 198.18.9.5",
		"nft chain " + p.in() + " holds 3 rules, want 4"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// TestBaseChainSetsCreatedFirst: a transaction creates the sets the base
// chains match against before the others, whatever their names (here
// ingress-dispatch sorts after every pod's in-* sets). The kernel walks a
// table's sets in the order they were created to find one by name, for
// every element message: nft lists them in that order too.
func TestBaseChainSetsCreatedFirst(t *testing.T) {
	e := newEnv(t, "hotsets")
	e.apply(testDoc(pods(5), nil))
	var listed []string
	for line := range strings.Lines(e.nft("list", "table", "inet", "terway")) {
		f := strings.Fields(line)
		if len(f) == 3 && (f[0] == "set" || f[0] == "map") && f[2] == "{" {
			listed = append(listed, f[1])
		}
	}
	hot := []string{"egress-dispatch", "ingress-dispatch"}
	if len(listed) <= len(hot) {
		t.Fatalf("nft lists sets %v: want the dispatch maps and the pods' sets", listed)
	}
	for i, name := range listed {
		if first := i < len(hot); first != slices.Contains(hot, name) {
			t.Fatalf("the kernel holds the table's sets in the order %v; want %v first", listed, hot)
		}
	}
}
