package nft

import (
	"fmt"
	"math/rand/v2"
	"slices"
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
	ports := spec.NFTMatch{Selectors: []string{spec.SelL4Proto, spec.SelTHDport}, Set: "grp-p1"}
	before, withPod, pod := groupAndChain("zz", nil, &ports)

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

// TestScopedPlanFollowsWrittenMatches: the record's side of the chain
// index (recordChainIndex). Chain zz as written matches a set of group
// grp that a pending edit has since taken out of it; the ADD reshapes the
// group, so that the set now means the pod's profile. Only zz's written
// rules match the set, and the ADD must take zz as the document has it:
// left as written, it would match the pod's new profile. grp-a1 holds the
// pod's address, so the scope changes it before the walk of the chains,
// which comes to chain aa before grp; grp-p1 has no address, and changes
// only when the walk takes grp whole, before it comes to zz. The check of
// CheckKeptSetsEnv (on in this package's tests) plans the same without
// either index.
func TestScopedPlanFollowsWrittenMatches(t *testing.T) {
	if !recheckKeptSets {
		t.Skip("the check is off while benchmarking (TestMain)")
	}
	for _, c := range []struct {
		chain   string
		written spec.NFTMatch
	}{
		{"aa", spec.NFTMatch{Selectors: []string{spec.SelIPSaddr}, Set: "grp-a1"}},
		{"zz", spec.NFTMatch{Selectors: []string{spec.SelL4Proto, spec.SelTHDport}, Set: "grp-p1"}},
	} {
		chain, written := c.chain, c.written
		t.Run(chain+"-"+written.Set, func(t *testing.T) {
			before, withPod, pod := groupAndChain(chain, &written, nil)
			e := newEnv(t, "writtenmatch")
			e.apply(before)
			sc := Scope{Pods: []string{"x/c"}, Addrs: []string{pod}}
			ops, err := e.r.PlanScoped(e.reg, e.ns, withPod, sc)
			if err != nil {
				t.Fatalf("scoped plan: %v", err)
			}
			e.run(ops)
			e.r.mu.Lock()
			recorded := e.r.records[e.ns].recordChains
			e.r.mu.Unlock()
			if recorded == nil {
				t.Fatal("the scoped plan kept no index of the record's chains")
			}
			if got := e.nft("list", "chain", "inet", "terway", chain); strings.Contains(got, "@"+written.Set) {
				t.Errorf("after the ADD, chain %s still matches %s, now the pod's profile:\n%s", chain, written.Set, got)
			}
			if ops := e.plan(withPod, true); len(ops) != 0 {
				t.Errorf("after the ADD, a full plan is not empty:\n%s", strings.Join(lines(ops), "\n"))
			}
		})
	}
}

// TestAbsentFromFollowsDerivedRecords: the chains a record lacks, found
// from its base map's memo and the changes on top (absentFrom), are those
// a lookup of every chain finds, over a walk of records each derived from
// the last (shared base, changes on top, now and then flattened), with
// documents that come and go.
func TestAbsentFromFollowsDerivedRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	name := func(i int) string { return fmt.Sprintf("c%03d", i) }
	docOf := func() *chainSetIndex {
		var chains []spec.NFTChain
		for i := range 200 {
			if rng.IntN(10) > 0 {
				chains = append(chains, spec.NFTChain{Name: name(i)})
			}
		}
		return newChainSetIndex(chains)
	}
	doc := docOf()
	record := newByName(func(c *chain) string { return c.pod })
	for i := range 200 {
		if rng.IntN(3) > 0 {
			record.put(name(i), &chain{name: name(i)})
		}
	}
	for step := range 3000 {
		if rng.IntN(200) == 0 {
			doc = docOf() // another chain list
		}
		next := record.derive()
		for range rng.IntN(4) {
			i := rng.IntN(220) // also names no document has
			if rng.IntN(2) == 0 {
				next.put(name(i), &chain{name: name(i)})
			} else {
				next.del(name(i))
			}
		}
		record = next
		got, ok := doc.absentFrom(&record)
		if !ok {
			t.Fatalf("step %d: a list of unique names was refused", step)
		}
		var want []int
		for i := range doc.chains {
			if record.get(doc.chains[i].Name) == nil {
				want = append(want, i)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: absent %v, want %v", step, got, want)
		}
	}
	twice := newChainSetIndex([]spec.NFTChain{{Name: "a"}, {Name: "a"}})
	if _, ok := twice.absentFrom(&record); ok {
		t.Error("a list naming a chain twice was taken for one of unique names")
	}
}

// groupAndChain returns the tables of TestScopedPlanFollowsTakenSets and
// TestScopedPlanFollowsWrittenMatches: a split group (profileGroup)
// before and after the ADD of the pod at pod reshapes it, and a chain,
// whose one rule matches before and after (nil: a port, no set).
func groupAndChain(chain string, before, after *spec.NFTMatch) (*spec.NFTable, *spec.NFTable, string) {
	ps := pods(1)
	doc := func(grp [][2][]string, zz *spec.NFTMatch) *spec.NFTable {
		d := testDoc(ps, nil)
		profileGroup(d, grp)
		m := spec.NFTMatch{Selectors: []string{spec.SelTHDport}, Values: []string{"9"}}
		if zz != nil {
			m = *zz
		}
		d.Chains = append(d.Chains, spec.NFTChain{Name: chain, Comment: "another chain", Rules: []spec.NFTRule{{
			Match: []spec.NFTMatch{m}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}}}})
		d.Canonicalize()
		return d
	}
	x, xy, y := []string{"1000"}, []string{"1000", "2000"}, []string{"2000"}
	ab, b := []string{"198.18.0.10-198.18.0.14"}, []string{"198.18.0.20-198.18.0.39"}
	pod := "198.18.0.5"
	return doc([][2][]string{{ab, xy}, {b, y}}, before), doc([][2][]string{{{pod}, x}, {ab, xy}, {b, y}}, after), pod
}
