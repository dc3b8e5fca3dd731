package nft

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
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

// TestCommitWaitsForStagedSet: a pod's ADD whose address is an element of
// the set a large change is filling (between the hop and the hop back)
// waits for the hop back instead of being refused at once (a CNI ADD
// would fail after its few retries), is then refused as stale, and its new
// plan commits: the kernel ends as a fresh fill of the document with both.
func TestCommitWaitsForStagedSet(t *testing.T) {
	ps := pods(4)
	three, added := ps[:3], ps[3]
	e := newEnv(t, "stwait")
	e.apply(scopedDoc(three, 6000, nil))
	change := e.plan(scopedDoc(three, 6000, shrink), false)
	withPod := scopedDoc(ps, 6000, shrink)
	for i := range withPod.Sets {
		if withPod.Sets[i].Name == "big" {
			withPod.Sets[i].Elements = append(withPod.Sets[i].Elements, spec.NFTElement{Key: []string{added.ip, "tcp", "80"}})
		}
	}
	withPod.Canonicalize()
	sc := Scope{Pods: []string{added.key}, Addrs: []string{added.ip}}

	done := make(chan error, 1)
	chunks := 0
	var early error
	e.r.inject = func(msgs []batchMsg) []batchMsg {
		// The second fill, under the document's name: the set is locked.
		if len(msgs) == 0 || !strings.Contains(msgs[0].what, "of set big") {
			return msgs
		}
		if chunks++; chunks != 2 {
			return msgs
		}
		ops, err := e.r.PlanScoped(e.reg, e.ns, withPod, sc)
		if err != nil {
			early = err
			return msgs
		}
		if !strings.Contains(strings.Join(lines(ops), "\n"), " big ") {
			early = errors.New("the ADD's plan does not touch the set being filled:\n" + planText(ops))
		}
		go func() { done <- execAll(e, ops) }()
		select {
		case err := <-done:
			early = fmt.Errorf("the ADD's commit returned while the set was being filled: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		return msgs
	}
	if err := execAll(e, change); err != nil {
		t.Fatalf("the large change: %v", err)
	}
	e.r.inject = nil
	if early != nil {
		t.Fatal(early)
	}
	if chunks < 2 {
		t.Fatalf("the second fill took %d chunks; the ADD did not run during it", chunks)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrStale) {
			t.Fatalf("the ADD's commit after the hop back: %v, want ErrStale (planned before the change)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the ADD's commit still waits after the change ended")
	}
	ops, err := e.r.PlanScoped(e.reg, e.ns, withPod, sc)
	if err != nil {
		t.Fatalf("scoped plan again: %v", err)
	}
	if err := execAll(e, ops); err != nil {
		t.Fatalf("the ADD planned again: %v", err)
	}
	if ops := e.plan(withPod, true); len(ops) != 0 {
		t.Errorf("full plan of the document with both not empty:\n%s", planText(ops))
	}
	// The kernel lists the element where it was added, not sorted as a
	// fresh fill lists it: ask for it by key (nft fails if it is absent).
	e.nft("get", "element", "inet", "terway", "big", "{ "+added.ip+" . tcp . 80 }")
	if got := e.nft("list", "chain", "inet", "terway", "big-peers"); strings.Contains(got, stagePrefix) {
		t.Errorf("the chain still names the staging set:\n%s", got)
	}
}

// TestFullPlanCountsOurOwnCommits: a full plan (which checks the ruleset
// generation it read) commits after another plan of ours committed in
// between (a CNI ADD during a resync), but is refused when someone else
// changed nftables in between.
func TestFullPlanCountsOurOwnCommits(t *testing.T) {
	ps := pods(3)
	e := newEnv(t, "owngen")
	e.apply(testDoc(ps, nil))
	full := e.plan(testDoc(ps, map[int]int{0: 1}), true)
	e.run(e.plan(testDoc(ps, map[int]int{1: 1}), false))
	if err := execAll(e, full); err != nil {
		t.Fatalf("a full plan after a commit of ours: %v", err)
	}
	if ops := e.plan(testDoc(ps, map[int]int{0: 1, 1: 1}), true); len(ops) != 0 {
		t.Errorf("full plan after both not empty:\n%s", planText(ops))
	}

	full = e.plan(testDoc(ps, map[int]int{0: 2}), true)
	e.nft("add", "table", "inet", "foreign-"+t.Name())
	err := execAll(e, full)
	if err == nil || errors.Is(err, ErrStale) {
		t.Fatalf("a full plan after someone else's change: %v, want the kernel's refusal", err)
	}
	e.apply(testDoc(ps, map[int]int{0: 2}))
	if ops := e.plan(testDoc(ps, map[int]int{0: 2}), true); len(ops) != 0 {
		t.Errorf("full plan after the retry not empty:\n%s", planText(ops))
	}
}
