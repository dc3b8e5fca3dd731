package nft

import (
	"errors"
	"strings"
	"testing"
)

// TestPlansOfOtherObjectsBothCommit: two plans made from the same record,
// each changing another pod's objects, both commit, in either order; the
// record then holds both changes (a full plan of the document with both
// is empty).
func TestPlansOfOtherObjectsBothCommit(t *testing.T) {
	ps := pods(3)
	e := newEnv(t, "disjoint")
	e.apply(testDoc(ps, nil))
	a := e.plan(testDoc(ps, map[int]int{0: 1}), false)
	b := e.plan(testDoc(ps, map[int]int{1: 1}), false)
	e.run(a)
	if err := execAll(e, b); err != nil {
		t.Fatalf("a plan of pod 1's objects after a commit of pod 0's: %v", err)
	}
	both := testDoc(ps, map[int]int{0: 1, 1: 1})
	if ops := e.plan(both, false); len(ops) != 0 {
		t.Errorf("the record lost a change: partial plan of both changes:\n%s", planText(ops))
	}
	if ops := e.plan(both, true); len(ops) != 0 {
		t.Errorf("full plan of both changes not empty:\n%s", planText(ops))
	}
}

// TestPlanOfSameObjectsIsStale: a plan made before another commit that
// changed some of its objects is refused (ErrStale), writes nothing and
// leaves the record trusted: planning again gives a partial sync that
// converges. An older document never undoes a newer commit this way.
func TestPlanOfSameObjectsIsStale(t *testing.T) {
	ps := pods(3)
	e := newEnv(t, "stale")
	e.apply(testDoc(ps, nil))
	older := testDoc(ps, map[int]int{0: 2})
	stalePlan := e.plan(older, false)
	newer := testDoc(ps, map[int]int{0: 1})
	e.apply(newer)
	before := e.nft("list", "table", "inet", "terway")
	err := execAll(e, stalePlan)
	if !errors.Is(err, ErrStale) {
		t.Fatalf("a plan of pod 0's objects after another commit of them: %v, want ErrStale", err)
	}
	if got := e.nft("list", "table", "inet", "terway"); got != before {
		t.Errorf("the refused plan wrote something")
	}
	if ops := e.plan(newer, false); len(ops) != 0 {
		t.Errorf("after the refusal, the record does not hold the newer commit:\n%s", planText(ops))
	}
	ops := e.plan(older, false)
	if len(ops) == 0 || !strings.Contains(ops[len(ops)-1].Text, "partial sync") {
		t.Fatalf("planning again after the refusal is not a partial sync:\n%s", planText(ops))
	}
	e.run(ops)
	if ops := e.plan(older, true); len(ops) != 0 {
		t.Errorf("full plan not empty:\n%s", planText(ops))
	}
}

// TestScopedAddDuringStagedChange: a pod's scoped ADD commits while the
// agent's large change fills its staging set; the ADD writes only its
// pod's objects, and the large change still commits (the two changed
// other objects) and ends with both in the kernel.
func TestScopedAddDuringStagedChange(t *testing.T) {
	ps := pods(4)
	three := ps[:3]
	e := newEnv(t, "stadd")
	e.apply(scopedDoc(three, 6000, nil))
	change := e.plan(scopedDoc(three, 6000, shrink), false)

	added := ps[3]
	withPod := scopedDoc(ps, 6000, shrink)
	var addLines []string
	chunks := 0
	e.r.inject = func(msgs []batchMsg) []batchMsg {
		if len(msgs) == 0 || !strings.Contains(msgs[0].what, "of set "+stageName("big")) {
			return msgs
		}
		if chunks++; chunks == 2 {
			// Between two chunks of the fill: the pod's ADD.
			ops, err := e.r.PlanScoped(e.reg, e.ns, withPod, Scope{Pods: []string{added.key}, Addrs: []string{added.ip}})
			if err != nil {
				t.Fatalf("scoped plan: %v", err)
			}
			addLines = lines(ops)
			if err := execAll(e, ops); err != nil {
				t.Fatalf("the ADD during the fill: %v", err)
			}
		}
		return msgs
	}
	if err := execAll(e, change); err != nil {
		t.Fatalf("the large change with an ADD in its fill: %v", err)
	}
	e.r.inject = nil
	if chunks < 2 || len(addLines) == 0 {
		t.Fatalf("the ADD did not run during the fill (%d chunks, ADD plan %q)", chunks, addLines)
	}
	for _, l := range addLines {
		if strings.Contains(l, " big") {
			t.Errorf("the ADD's plan has %q", l)
		}
	}
	if ops := e.plan(withPod, false); len(ops) != 0 {
		t.Errorf("the record lost a change: partial plan of the document with both:\n%s", planText(ops))
	}
	if ops := e.plan(withPod, true); len(ops) != 0 {
		t.Errorf("full plan of the document with both not empty:\n%s", planText(ops))
	}
	fresh := newEnv(t, "staddfresh")
	fresh.apply(withPod)
	sameTable(t, "after the ADD and the change", e.nft("list", "table", "inet", "terway"), fresh.nft("list", "table", "inet", "terway"))
}

// TestConvergedSyncsDoNotMakePlansStale: syncs that find nothing to do,
// however many, do not make an older plan of other objects stale.
func TestConvergedSyncsDoNotMakePlansStale(t *testing.T) {
	ps := pods(3)
	e := newEnv(t, "converged")
	doc := testDoc(ps, nil)
	e.apply(doc)
	next := testDoc(ps, map[int]int{0: 1})
	ops := e.plan(next, false)
	for range maxLog + 10 {
		if got := e.plan(doc, false); len(got) != 0 {
			t.Fatalf("converged plan not empty:\n%s", planText(got))
		}
	}
	if err := execAll(e, ops); err != nil {
		t.Fatalf("a plan after %d converged syncs: %v", maxLog+10, err)
	}
	if ops := e.plan(next, true); len(ops) != 0 {
		t.Errorf("full plan not empty:\n%s", planText(ops))
	}
}
