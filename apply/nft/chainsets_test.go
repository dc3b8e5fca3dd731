package nft

import (
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestScopedPlanFollowsTakenSets: the chain index (chainsets.go) limits
// the document's side of takeChangedGroups to chains matching a set the
// scope changed. A set the walk itself puts, taking a reshaped group
// whole (here grp-p1, whose ports change with the pod's profile), makes
// a later chain matching it one to look at too, as the walk of every
// chain did: chain "zz" has a pending change of its rules that makes it
// match grp-p1, and the ADD takes it with the group (the record's zz
// matches no set, so only the document's side finds it). The check of CheckKeptSetsEnv
// (on in this package's tests) plans the same without the index.
func TestScopedPlanFollowsTakenSets(t *testing.T) {
	if !recheckKeptSets {
		t.Skip("the check is off while benchmarking (TestMain)")
	}
	ps := pods(1)
	doc := func(grp [][2][]string, zzMatchesPorts bool) *spec.NFTable {
		d := testDoc(ps, nil)
		profileGroup(d, grp)
		m := spec.NFTMatch{Selectors: []string{spec.SelTHDport}, Values: []string{"9"}}
		if zzMatchesPorts {
			m = spec.NFTMatch{Selectors: []string{spec.SelL4Proto, spec.SelTHDport}, Set: "grp-p1"}
		}
		d.Chains = append(d.Chains, spec.NFTChain{Name: "zz", Comment: "another chain", Rules: []spec.NFTRule{{
			Match: []spec.NFTMatch{m}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}}}})
		d.Canonicalize()
		return d
	}
	x, xy, y := []string{"1000"}, []string{"1000", "2000"}, []string{"2000"}
	ab, b := []string{"198.18.0.10-198.18.0.14"}, []string{"198.18.0.20-198.18.0.39"}
	pod := "198.18.0.5"
	before := doc([][2][]string{{ab, xy}, {b, y}}, false)
	withPod := doc([][2][]string{{{pod}, x}, {ab, xy}, {b, y}}, true)

	e := newEnv(t, "takensets")
	e.apply(before)
	sc := Scope{Pods: []string{"x/c"}, Addrs: []string{pod}}
	index := func() *chainSetIndex {
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		return e.r.records[e.ns].chainSets
	}
	var first *chainSetIndex
	for i := range 2 { // the second plan finds the index of the first
		ops, err := e.r.PlanScoped(e.reg, e.ns, withPod, sc)
		if err != nil {
			t.Fatalf("scoped plan: %v", err)
		}
		e.run(ops)
		switch x := index(); {
		case !x.indexes(withPod.Chains):
			t.Fatalf("plan %d: the record keeps no index of the document's chains", i+1)
		case i == 0:
			first = x
		case x != first:
			t.Error("the second plan of the same chain list built its index again")
		}
	}
	if got := e.nft("list", "chain", "inet", "terway", "zz"); !strings.Contains(got, "@grp-p1") {
		t.Errorf("the ADD took the group whole but not chain zz, which matches its reshaped grp-p1:\n%s", got)
	}
}
