package nft

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// scopedDoc is testDoc of ps with a large concatenated interval set "big"
// (bigSetDoc's, n elements that keep admits, from 198.19.0.0 so that no
// pod's address is among them) and a shared peer set "peers" that holds
// every pod's address, as a policy's pod selector renders it.
func scopedDoc(ps []testPod, n int, keep func(int) bool) *spec.NFTable {
	t := testDoc(ps, nil)
	big := &spec.NFTSet{Name: "big", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
		Comment: "a large policy peer set"}
	for i := range n {
		if keep == nil || keep(i) {
			ip := ipString(198<<24 | 19<<16 + uint64(i))
			big.Elements = append(big.Elements, spec.NFTElement{Key: []string{ip, "tcp", fmt.Sprintf("%d-%d", 1000+i%100, 2000+i%100)}})
		}
	}
	peers := &spec.NFTSet{Name: "peers", Type: []string{spec.TypeIPv4Addr}, Interval: true, Comment: "pods of app=web"}
	for _, p := range ps {
		peers.Elements = append(peers.Elements, spec.NFTElement{Key: []string{p.ip}})
	}
	t.Sets = append(t.Sets, big, peers)
	t.Chains = append(t.Chains, spec.NFTChain{Name: "big-peers", Comment: "admits the big set and the web pods", Rules: []spec.NFTRule{
		{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr, spec.SelL4Proto, spec.SelTHDport}, Set: "big"}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}},
		{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: "peers"}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}},
	}})
	t.Canonicalize()
	return t
}

// TestScopedPlanLeavesPendingChange: a pod's ADD whose document already
// holds a large change of another set (not yet applied by the agent's
// sync) writes the pod's chains, sets, dispatch elements and its address
// in the shared peer set, and nothing of the large change. Its DEL drops
// the address from the peer set at once. The next unscoped sync applies
// the large change, and the table is then what a fresh fill gives.
func TestScopedPlanLeavesPendingChange(t *testing.T) {
	ps := pods(4)
	three, all := ps[:3], ps
	before := scopedDoc(three, 3000, nil)
	e := newEnv(t, "scoped")
	e.apply(before)

	added := ps[3]
	sc := Scope{Pods: []string{added.key}, Addrs: []string{added.ip}}
	scoped := func(doc *spec.NFTable) []string {
		t.Helper()
		ops, err := e.r.PlanScoped(e.reg, e.ns, doc, sc)
		if err != nil {
			t.Fatalf("scoped plan: %v", err)
		}
		e.run(ops)
		return lines(ops)
	}
	for _, l := range scoped(scopedDoc(all, 3000, shrink)) {
		if strings.Contains(l, " big") || !strings.Contains(l, added.hash) && !strings.Contains(l, added.ip) {
			t.Errorf("the ADD's plan has %q, not its pod's", l)
		}
	}
	if n := strings.Count(e.nft("list", "set", "inet", "terway", "big"), "tcp"); n != 3000 {
		t.Errorf("after the ADD, set big has %d elements, want the 3000 of before", n)
	}
	for _, what := range [][]string{
		{"list", "chain", "inet", "terway", added.in()},
		{"list", "set", "inet", "terway", added.out() + "-all"},
	} {
		e.nft(what...) // fails the test if missing
	}
	for _, m := range []string{"ingress-dispatch", "egress-dispatch"} {
		if got := e.nft("list", "map", "inet", "terway", m); !strings.Contains(got, added.ip) {
			t.Errorf("after the ADD, map %s lacks %s:\n%s", m, added.ip, got)
		}
	}
	if got := e.nft("list", "set", "inet", "terway", "peers"); !strings.Contains(got, added.ip) {
		t.Errorf("after the ADD, set peers lacks %s:\n%s", added.ip, got)
	}

	// The DEL: the document no longer has the pod, still the pending change.
	delLines := scoped(scopedDoc(three, 3000, shrink))
	if !slices.ContainsFunc(delLines, func(l string) bool { return strings.Contains(l, "element peers { "+added.ip+" }") }) {
		t.Errorf("the DEL's plan does not drop %s from peers:\n%s", added.ip, strings.Join(delLines, "\n"))
	}
	if got := e.nft("list", "set", "inet", "terway", "peers"); strings.Contains(got, added.ip) {
		t.Errorf("after the DEL, set peers still holds %s:\n%s", added.ip, got)
	}
	if n := strings.Count(e.nft("list", "set", "inet", "terway", "big"), "tcp"); n != 3000 {
		t.Errorf("after the DEL, set big has %d elements, want 3000", n)
	}

	final := scopedDoc(three, 3000, shrink)
	e.apply(final)
	fresh := newEnv(t, "scopedfresh")
	fresh.apply(final)
	sameTable(t, "after the agent's sync", e.nft("list", "table", "inet", "terway"), fresh.nft("list", "table", "inet", "terway"))
	if ops := e.plan(final, true); len(ops) != 0 {
		t.Errorf("full plan after the sync not empty:\n%s", firstLines(lines(ops), 5))
	}
}

// TestSetMadeFromList: a canonical set knows the document list it was
// made from, and lists equal to it, not a list of other elements; a set a
// scoped plan derives from it knows the list it was derived for only when
// the two lists differ by the scope's elements alone.
func TestSetMadeFromList(t *testing.T) {
	in := spec.NFTSet{Name: "peers", Type: []string{spec.TypeIPv4Addr}, Interval: true, Comment: "pods",
		Elements: []spec.NFTElement{{Key: []string{"198.18.0.2"}}, {Key: []string{"198.18.0.3"}}}}
	s, err := canonicalSet(&in, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.madeFrom(&in) {
		t.Fatal("a set does not know the list it was made from")
	}
	shared := in // another document's set with the same list
	if !s.madeFrom(&shared) {
		t.Error("a set does not know its list in another document")
	}
	copied := in
	copied.Elements = slices.Clone(in.Elements)
	if !s.madeFrom(&copied) || !s.seen.is(refOf(copied.Elements)) {
		t.Error("an equal copy of the list (another render cache's) is not known, or not remembered")
	}
	other := in
	other.Elements = slices.Clone(in.Elements)
	other.Elements[1] = spec.NFTElement{Key: []string{"198.18.0.9"}}
	if s.madeFrom(&other) {
		t.Error("a list of other elements counts as the list")
	}
	shorter := in
	shorter.Elements = in.Elements[:1]
	if s.madeFrom(&shorter) {
		t.Error("a prefix of the list counts as the list")
	}
	renamed := in
	renamed.Comment = "other pods"
	if s.madeFrom(&renamed) {
		t.Error("a set of another definition counts as made from the list")
	}
	// derive is a scoped plan's set for the pod 198.18.0.4 and list to.
	derive := func(to *spec.NFTSet) *set {
		t.Helper()
		d, err := scopedElems(to, s, []string{"198.18.0.4"}, nil,
			func(*set) addrIndex { return addrIndex{} }, func(*spec.NFTSet, []int) wantIndex { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	more := in
	more.Elements = append(slices.Clone(in.Elements), spec.NFTElement{Key: []string{"198.18.0.4"}})
	derived := derive(&more)
	if derived == s || derived.madeFrom(&in) {
		t.Error("a set derived by a scoped plan claims the list of the set it came from")
	}
	if !derived.madeFrom(&more) {
		t.Error("a set derived by the pod's elements alone does not know it holds the document's list")
	}
	// A list that also differs by another element (a pending edit, the
	// sync's to apply) is not what the derived set holds.
	pending := more
	pending.Elements = append(slices.Clone(more.Elements), spec.NFTElement{Key: []string{"198.18.0.7"}})
	if partial := derive(&pending); partial.madeFrom(&pending) {
		t.Error("a set that lacks a pending element claims the list that has it")
	}
}

// TestScopedPlanLeavesOthersNewGroups: a document with the policy groups
// of pods whose ADD has not come (render gives them ahead) and no sync
// since. A pod's ADD writes its own group, the chain its address
// dispatches to, and not the others' new chains and sets; the next
// unscoped sync writes them.
func TestScopedPlanLeavesOthersNewGroups(t *testing.T) {
	ps := pods(4)
	e := newEnv(t, "scopednew")
	e.apply(testDoc(ps[:3], nil))
	added := ps[3]
	group := func(name string) (spec.NFTChain, *spec.NFTSet) {
		set := &spec.NFTSet{Name: name + "-all", Type: []string{spec.TypeIPv4Addr}, Interval: true,
			Comment: "sources of group " + name, Elements: []spec.NFTElement{{Key: []string{"198.18.8.0/24"}}}}
		return spec.NFTChain{Name: name, Comment: "ingress group " + name, Rules: []spec.NFTRule{
			{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: set.Name}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
			{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}},
		}}, set
	}
	doc := testDoc(ps, nil)
	for _, name := range []string{"in_grp_added", "in_grp_awaiting"} {
		c, s := group(name)
		doc.Chains = append(doc.Chains, c)
		doc.Sets = append(doc.Sets, s)
	}
	// The added pod's ingress dispatches to its group (shared, no owner).
	m := doc.Set("ingress-dispatch")
	for i := range m.Elements {
		if m.Elements[i].Key[0] == added.ip {
			m.Elements[i].Verdict = &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "in_grp_added"}
		}
	}
	doc.Canonicalize()

	ops, err := e.r.PlanScoped(e.reg, e.ns, doc, Scope{Pods: []string{added.key}, Addrs: []string{added.ip}})
	if err != nil {
		t.Fatalf("scoped plan: %v", err)
	}
	e.run(ops)
	for _, l := range lines(ops) {
		if strings.Contains(l, "in_grp_awaiting") {
			t.Errorf("the ADD's plan writes another pod's new group: %q", l)
		}
	}
	table := e.nft("list", "table", "inet", "terway")
	for _, want := range []string{"chain in_grp_added", "set in_grp_added-all", added.ip + " : jump in_grp_added"} {
		if !strings.Contains(table, want) {
			t.Errorf("after the ADD the table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "in_grp_awaiting") {
		t.Errorf("after the ADD the table has the awaiting group:\n%s", table)
	}

	e.apply(doc)
	fresh := newEnv(t, "scopednewfresh")
	fresh.apply(doc)
	sameTable(t, "after the sync", e.nft("list", "table", "inet", "terway"), fresh.nft("list", "table", "inet", "terway"))
}

// TestScopedPlanClaimsVethKeyedEntries: render keys the dispatch maps by
// the pods' host veths (ifname), and Scope.Addrs carries the scoped pods'
// veth names beside their addresses. A pod's ADD writes its own entry (and
// the group chain it jumps to) and not an awaiting pod's; its DEL takes
// its entry out; an element keyed by another veth is never the scope's.
func TestScopedPlanClaimsVethKeyedEntries(t *testing.T) {
	ps := pods(3)
	e := newEnv(t, "scopedveth")
	veth := func(p testPod) string { return spec.HostVethName(p.key) }
	group := func(name string) spec.NFTChain {
		return spec.NFTChain{Name: name, Comment: "ingress group " + name,
			Rules: []spec.NFTRule{{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}}}}
	}
	doc := func(entries map[string]string) *spec.NFTable {
		d := testDoc(ps, nil)
		m := &spec.NFTSet{Name: "by-veth", Type: []string{spec.TypeIfName}, Verdict: true}
		for key, chain := range entries {
			if d.Chain(chain) == nil {
				d.Chains = append(d.Chains, group(chain))
			}
			m.Elements = append(m.Elements, spec.NFTElement{Key: []string{key},
				Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: chain}})
		}
		d.Sets = append(d.Sets, m)
		d.Canonicalize()
		return d
	}
	e.apply(doc(map[string]string{veth(ps[0]): "in_grp_a"}))

	added, awaiting := ps[1], ps[2]
	both := doc(map[string]string{veth(ps[0]): "in_grp_a", veth(added): "in_grp_b", veth(awaiting): "in_grp_c"})
	sc := Scope{Pods: []string{added.key}, Addrs: []string{added.ip, veth(added)}}
	ops, err := e.r.PlanScoped(e.reg, e.ns, both, sc)
	if err != nil {
		t.Fatalf("scoped ADD plan: %v", err)
	}
	e.run(ops)
	table := e.nft("list", "table", "inet", "terway")
	for _, want := range []string{`"` + veth(added) + `" : jump in_grp_b`, "chain in_grp_b", `"` + veth(ps[0]) + `" : jump in_grp_a`} {
		if !strings.Contains(table, want) {
			t.Errorf("after the ADD the table lacks %q:\n%s", want, table)
		}
	}
	for _, unwanted := range []string{veth(awaiting), "in_grp_c"} {
		if strings.Contains(table, unwanted) {
			t.Errorf("the ADD of %s wrote %q, the awaiting pod's:\n%s", added.key, unwanted, table)
		}
	}

	// The DEL: the document no longer has the pod's entry (nor its pod).
	gone := doc(map[string]string{veth(ps[0]): "in_grp_a", veth(awaiting): "in_grp_c"})
	if ops, err = e.r.PlanScoped(e.reg, e.ns, gone, sc); err != nil {
		t.Fatalf("scoped DEL plan: %v", err)
	}
	e.run(ops)
	table = e.nft("list", "table", "inet", "terway")
	if strings.Contains(table, veth(added)) {
		t.Errorf("after the DEL the table still has %s's entry:\n%s", added.key, table)
	}
	if !strings.Contains(table, `"`+veth(ps[0])+`" : jump in_grp_a`) {
		t.Errorf("the DEL of %s took another pod's entry:\n%s", added.key, table)
	}
}
