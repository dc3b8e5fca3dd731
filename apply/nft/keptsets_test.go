package nft

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/spec"
)

// keptChecks counts the plans recheckKeptSets found right in this
// package's tests, and the sets their memos skipped.
var keptChecks struct {
	sync.Mutex
	plans, hits int
}

// TestMain has every scoped plan of the package's tests that had a memo of
// kept sets (keptsets.go) planned again without it: a plan that differs
// fails, whatever the test. Not while benchmarking: that would time both
// plans.
func TestMain(m *testing.M) {
	flag.Parse()
	recheckKeptSets = flag.Lookup("test.bench").Value.String() == ""
	keptSetsRechecked = func(hits int) {
		keptChecks.Lock()
		defer keptChecks.Unlock()
		keptChecks.plans++
		keptChecks.hits += hits
	}
	code := m.Run()
	if testing.Verbose() && recheckKeptSets {
		fmt.Printf("kept sets: %d scoped plans with a memo planned again without it, %d sets found held\n", keptChecks.plans, keptChecks.hits)
	}
	os.Exit(code)
}

// TestScopedPlansKeepSets: at synth's scale (250 local pods, 1,000
// policies), a CNI request's scoped plan after another finds most of the
// document's sets held from the last plan's memo, and plans what a plan
// without the memo plans (TestMain has every such plan compared), through
// ADDs and DELs of one pod and a sync between.
func TestScopedPlansKeepSets(t *testing.T) {
	if !recheckKeptSets {
		t.Skip("the plans are not compared while benchmarking (TestMain)")
	}
	in := synth.Cluster(synth.Params{LocalPods: 251, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	last := in.Allocations[len(in.Allocations)-1]
	key := last.Metadata.Namespace + "/" + last.Metadata.Name
	in.PeersHeldBack = map[string]bool{key: true}
	before := in
	before.Allocations = in.Allocations[:len(in.Allocations)-1]
	was, now := mustRender(t, before).NFTables, mustRender(t, in).NFTables
	// As the agent's render cache hands them on, the sets the ADD does not
	// change are the very same lists in both documents.
	shared := *was
	shared.Sets = slices.Clone(was.Sets)
	for i := range shared.Sets {
		if j := slices.IndexFunc(now.Sets, func(s *spec.NFTSet) bool { return s.Name == shared.Sets[i].Name }); j >= 0 &&
			reflect.DeepEqual(now.Sets[j], shared.Sets[i]) {
			shared.Sets[i] = now.Sets[j]
		}
	}
	was = &shared
	e := newEnv(t, "keptsets")
	e.r = New(Options{FullEvery: math.MaxInt})
	e.apply(was)
	sc := Scope{Pods: []string{key}, Addrs: []string{last.Spec.IP}}
	keptChecks.Lock()
	plans, hits := keptChecks.plans, keptChecks.hits
	keptChecks.Unlock()
	scoped := func(what string, doc *spec.NFTable, wantOps bool) {
		t.Helper()
		ops, err := e.r.PlanScoped(e.reg, e.ns, doc, sc)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if wantOps != (len(ops) > 0) {
			t.Fatalf("%s: %d ops, want the pod's change: %v", what, len(ops), wantOps)
		}
		e.run(ops)
	}
	scoped("ADD", now, true)
	scoped("ADD again", now, false)
	// A sync takes the pod's elements out of the sets the memo found held
	// (its document does not have the pod): the next ADD must put them
	// back, not trust the memo.
	e.apply(was)
	scoped("ADD after a sync without the pod", now, true)
	scoped("DEL", was, true)
	// A full sync may take into the record what no commit logged: the
	// plan after it has no memo (the checks above count the plans that
	// had one), the one after that has its own again.
	e.run(e.plan(was, true))
	scoped("ADD after a full sync", now, true)
	scoped("DEL", was, true)
	keptChecks.Lock()
	plans, hits = keptChecks.plans-plans, keptChecks.hits-hits
	keptChecks.Unlock()
	if plans != 4 {
		t.Fatalf("%d plans had a memo, want 4: the 3 after the first, and the one after the full sync's next", plans)
	}
	if want := 4 * len(now.Sets) * 9 / 10; hits < want {
		t.Errorf("the plans found %d sets held from their memo, want at least %d of %d sets in 4 plans", hits, want, len(now.Sets))
	}
	t.Logf("%d sets, %d found held from the memo in %d plans", len(now.Sets), hits, plans)
}

// TestKeptLookupTouched: a set is touched exactly when a commit since the
// memo touched its name, whatever the lengths of the names, also past the
// lengths the lookup tells apart without reading a name (255).
func TestKeptLookupTouched(t *testing.T) {
	long := strings.Repeat("s", 300)
	for _, touched := range [][]string{nil, {"ab", "pod-sources"}, {long}, {"ab", long + "x"}} {
		keys := map[string]bool{"chain ab": true} // chains do not count
		for _, name := range touched {
			keys["set "+name] = true
		}
		l := newKeptLookup(&keptSets{}, keys, true)
		for _, name := range []string{"ab", "ba", "abc", "pod-sources", "pod-sourcez", long, long + "x", long + "y", ""} {
			want := slices.Contains(touched, name)
			if got := l.wasTouched(name); got != want {
				t.Errorf("touched %q: set %q: wasTouched %v, want %v", touched, name, got, want)
			}
		}
	}
}

// TestSetWalkAgreesWithNames walks random documents made from a memo's
// sets (each kept or not): sets handed on as they are, equal copies,
// sets with another list, new sets, sets gone, two swapped, a name twice,
// with random names touched since. A set found held must be one the memo
// kept, of the same value and untouched, and when both lists are in name
// order each such set must be found; the walk's order must be the names'.
func TestSetWalkAgreesWithNames(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 49))
	elems := func() []spec.NFTElement {
		return []spec.NFTElement{{Key: []string{fmt.Sprintf("198.18.0.%d", rng.IntN(250))}}}
	}
	strictlyIncreasing := func(sets []*spec.NFTSet) bool {
		for i := 1; i < len(sets); i++ {
			if sets[i-1].Name >= sets[i].Name {
				return false
			}
		}
		return true
	}
	found := 0
	for round := range 3000 {
		n := 1 + rng.IntN(12)
		memo := &keptSets{}
		for i := range n {
			memo.sets = append(memo.sets, &spec.NFTSet{Name: fmt.Sprintf("s%02d", 2*i), Type: []string{spec.TypeIPv4Addr}, Elements: elems()})
			memo.kept = append(memo.kept, rng.IntN(4) > 0)
		}
		if rng.IntN(5) == 0 && n > 1 { // a memo out of order
			i := rng.IntN(n - 1)
			memo.sets[i], memo.sets[i+1] = memo.sets[i+1], memo.sets[i]
		}
		memo.unique = strictlyIncreasing(memo.sets)
		doc := slices.Clone(memo.sets)
		for range rng.IntN(4) {
			i := rng.IntN(len(doc))
			switch rng.IntN(6) {
			case 0: // an equal copy: another header, the same lists
				c := *doc[i]
				doc[i] = &c
			case 1: // another list
				c := *doc[i]
				c.Elements = elems()
				doc[i] = &c
			case 2: // a new set just after
				doc = slices.Insert(doc, i+1, &spec.NFTSet{Name: doc[i].Name + "x", Type: []string{spec.TypeIPv4Addr}})
			case 3:
				if len(doc) > 1 {
					doc = slices.Delete(doc, i, i+1)
				}
			case 4:
				if i+1 < len(doc) {
					doc[i], doc[i+1] = doc[i+1], doc[i]
				}
			case 5: // a name twice
				c := *doc[i]
				doc = slices.Insert(doc, i, &c)
			}
		}
		touched := map[string]bool{}
		for range rng.IntN(3) {
			touched["set "+fmt.Sprintf("s%02d", 2*rng.IntN(n))] = true
		}
		l := newKeptLookup(memo, touched, true)
		w := newSetWalk(l)
		for i, in := range doc {
			got := w.held(in)
			heldable := false
			for j, m := range memo.sets {
				if memo.kept[j] && sameSetValue(m, in) && !touched["set "+in.Name] {
					heldable = true
				}
			}
			if got && !heldable {
				t.Fatalf("round %d: set %d (%s) found held, but the memo did not keep it as it is, or it was touched", round, i, in.Name)
			}
			if !got && heldable && memo.unique && strictlyIncreasing(doc) {
				t.Fatalf("round %d: set %d (%s) of a document in name order not found held", round, i, in.Name)
			}
			if got {
				found++
			}
		}
		if want := strictlyIncreasing(doc); w.unique != want {
			t.Fatalf("round %d: the walk found the names in strictly increasing order %v, want %v (memo in order %v)", round, w.unique, want, memo.unique)
		}
	}
	t.Logf("%d sets found held", found)
}
