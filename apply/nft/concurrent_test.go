package nft

import (
	"strings"
	"testing"
)

// TestPlanMadeBeforeAnotherCommit: two syncs plan from the same record
// (the agent's sync of a large change and a CNI ADD); the first commits.
// The second is not refused as stale (which made the next sync a full read
// of the table): it is diffed again against what the first wrote and
// commits only what is left, and the kernel ends at its document.
func TestPlanMadeBeforeAnotherCommit(t *testing.T) {
	e := newEnv(t, "twoplans")
	ps := pods(4)
	base := testDoc(ps[:3], nil)
	e.apply(base)

	changed := testDoc(ps[:3], map[int]int{1: 1}) // the sync: pod 1's policy changes
	withNew := testDoc(ps, map[int]int{1: 1})     // the ADD: pod 3 too, same policy
	first, second := e.plan(changed, false), e.plan(withNew, false)
	e.run(first)
	e.run(second) // formerly: "plan is stale"
	e.checkTool(withNew)
	if ops := e.plan(withNew, true); len(ops) != 0 {
		t.Errorf("full plan after both commits not empty:\n%s", planText(ops))
	}
	// The next sync is partial: nothing failed.
	if ops := e.plan(base, false); len(ops) == 0 || !strings.Contains(ops[len(ops)-1].Text, "partial sync") {
		t.Errorf("the sync after both commits is not partial: %v", ops)
	}

	// After an invalidation in between, the record is not trusted: the
	// late plan is refused and the next sync reads the kernel.
	late := e.plan(changed, false)
	e.r.Invalidate(e.ns)
	if err := execAll(e, late); err == nil || !strings.Contains(err.Error(), "stale") {
		t.Errorf("a plan made before an invalidation committed: %v", err)
	}
	if ops := e.plan(changed, false); len(ops) == 0 || !strings.Contains(ops[len(ops)-1].Text, "full sync") {
		t.Errorf("the sync after the refusal is not full: %v", ops)
	}
}
