package nft

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// profileGroup is a group chain "grp" in the split form: per profile one
// rule matching the peer in grp-aN and the protocol and port in grp-pN,
// then a drop. profiles are each an address list and a port list.
func profileGroup(t *spec.NFTable, profiles [][2][]string) {
	c := spec.NFTChain{Name: "grp", Comment: "a policy group in the split form"}
	for i, p := range profiles {
		n := string(rune('1' + i))
		a := &spec.NFTSet{Name: "grp-a" + n, Type: []string{spec.TypeIPv4Addr}, Interval: true, Comment: "peers of profile " + n}
		ports := &spec.NFTSet{Name: "grp-p" + n, Type: []string{spec.TypeProto, spec.TypeService}, Interval: true, Comment: "ports of profile " + n}
		for _, addr := range p[0] {
			a.Elements = append(a.Elements, spec.NFTElement{Key: []string{addr}})
		}
		for _, port := range p[1] {
			ports.Elements = append(ports.Elements, spec.NFTElement{Key: []string{"tcp", port}})
		}
		t.Sets = append(t.Sets, a, ports)
		c.Rules = append(c.Rules, spec.NFTRule{Match: []spec.NFTMatch{
			{Selectors: []string{spec.SelIPSaddr}, Set: a.Name},
			{Selectors: []string{spec.SelL4Proto, spec.SelTHDport}, Set: ports.Name}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}})
	}
	c.Rules = append(c.Rules, spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}})
	t.Chains = append(t.Chains, c)
}

// TestScopedPlanTakesReshapedGroupWhole: render numbers a split group's
// profiles in address order, so a pod's address can renumber them. A
// scoped plan that only put the pod's address into the written grp-a1
// would admit it on the written grp-p1's ports, which now belong to
// another profile; and a DEL that only took it out of the sets the
// document still has would leave it in grp-a3 and its rule. The group is
// taken whole when its shape changed and the pod's elements are in it; a
// reshaped group the pod is not in stays as written, for the next sync.
func TestScopedPlanTakesReshapedGroupWhole(t *testing.T) {
	ps := pods(1)
	doc := func(grp [][2][]string, other []string) *spec.NFTable {
		d := testDoc(ps, nil)
		profileGroup(d, grp)
		// Another group, reshaped by a pending edit (a rule and a set
		// more per port), without the pod.
		o := spec.NFTChain{Name: "other", Comment: "another group"}
		for _, port := range other {
			s := &spec.NFTSet{Name: "other-peers-" + port, Type: []string{spec.TypeIPv4Addr}, Interval: true, Comment: "its peers",
				Elements: []spec.NFTElement{{Key: []string{"198.19.0.1"}}}}
			o.Rules = append(o.Rules, spec.NFTRule{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: s.Name},
				{Selectors: []string{spec.SelTHDport}, Values: []string{port}}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}})
			d.Sets = append(d.Sets, s)
		}
		d.Chains = append(d.Chains, o)
		d.Canonicalize()
		return d
	}
	x, y, xy := []string{"1000"}, []string{"2000"}, []string{"1000", "2000"}
	ab := []string{"198.18.0.10-198.18.0.14"}
	b := []string{"198.18.0.20-198.18.0.39"}
	pod := "198.18.0.5"
	before := doc([][2][]string{{ab, xy}, {b, y}}, []string{"80"})
	withPod := doc([][2][]string{{{pod}, x}, {ab, xy}, {b, y}}, []string{"80", "81"})

	e := newEnv(t, "reshaped")
	e.apply(before)
	sc := Scope{Pods: []string{"x/c"}, Addrs: []string{pod}}
	scoped := func(d *spec.NFTable) {
		t.Helper()
		ops, err := e.r.PlanScoped(e.reg, e.ns, d, sc)
		if err != nil {
			t.Fatalf("scoped plan: %v", err)
		}
		e.run(ops)
	}
	scoped(withPod)
	if got := e.nft("list", "set", "inet", "terway", "grp-p1"); strings.Contains(got, "2000") {
		t.Errorf("after the ADD, the pod's profile grp-p1 admits port 2000, which only the other profiles have:\n%s", got)
	}
	for _, set := range []string{"grp-a3", "grp-p3"} {
		e.nft("list", "set", "inet", "terway", set) // fails the test if missing
	}
	if got := e.nft("list", "chain", "inet", "terway", "grp"); !strings.Contains(got, "@grp-a3") {
		t.Errorf("after the ADD, chain grp does not match grp-a3:\n%s", got)
	}
	if got := e.nft("list", "chain", "inet", "terway", "other"); strings.Contains(got, "81") {
		t.Errorf("the ADD took the pending reshape of a group without its pod:\n%s", got)
	}
	if got := e.nft("get", "element", "inet", "terway", "grp-a1", "{ "+pod+" }"); !strings.Contains(got, pod) {
		t.Errorf("after the ADD, grp-a1 does not hold the pod:\n%s", got)
	}
	for _, l := range lines(e.plan(withPod, true)) {
		if strings.Contains(l, "grp") {
			t.Errorf("after the ADD, a full plan still changes the pod's group: %s", l)
		}
	}

	// A document whose group names a set it lacks (a render bug) fails
	// no plan here and panics nothing: a full plan reports it.
	broken := doc([][2][]string{{ab, xy}, {b, y}}, []string{"80", "81"})
	broken.Sets = slices.DeleteFunc(broken.Sets, func(s *spec.NFTSet) bool { return s.Name == "grp-p2" })
	if _, err := e.r.PlanScoped(e.reg, e.ns, broken, sc); err != nil {
		t.Logf("scoped plan of a broken document: %v", err)
	}

	// The DEL: the pod's profile goes, and the others are numbered again.
	e.apply(withPod)
	without := doc([][2][]string{{ab, xy}, {b, y}}, []string{"80", "81"})
	scoped(without)
	table := e.nft("list", "table", "inet", "terway")
	if strings.Contains(table, pod) || strings.Contains(table, "grp-a3") {
		t.Errorf("after the DEL, the pod's address or the third profile is still there:\n%s", table)
	}
	if ops := e.plan(without, true); len(ops) != 0 {
		t.Errorf("after the DEL, a full plan is not empty:\n%s", strings.Join(lines(ops), "\n"))
	}
}
