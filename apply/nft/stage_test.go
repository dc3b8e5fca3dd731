package nft

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// stagedDocs are a table whose set big (6,000 elements, above
// stageMinElems) shrinks by 960: a change that recreates the set and
// stages it.
func stagedDocs() (before, after *spec.NFTable) {
	return bigSetDoc(6000, nil), bigSetDoc(6000, shrink)
}

// failFill makes the nth transaction that adds elements to the set named
// name (a fill's chunk) refuse a message, so the fill fails in its middle.
func failFill(t *testing.T, e *env, name string, nth int) *int {
	t.Helper()
	seen := 0
	e.r.inject = func(msgs []batchMsg) []batchMsg {
		if len(msgs) == 0 || msgs[0].typ != unix.NFT_MSG_NEWSETELEM || !strings.Contains(msgs[0].what, " set "+name+" (") {
			return msgs
		}
		if seen++; seen != nth {
			return msgs
		}
		ghost, err := canonicalNoCache(&spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{
			{Name: "no-such-set", Type: []string{spec.TypeIPv4Addr}, Elements: []spec.NFTElement{{Key: []string{"198.18.0.1"}}}}}})
		if err != nil {
			t.Fatal(err)
		}
		gs := ghost.sets.get("no-such-set")
		return append(msgs, elemMsgs(gs, gs.name, 0, gs.canon, false)...)
	}
	return &seen
}

// TestStagedChangeInSteps: a large change is filled in many short
// transactions, not one, and ends where a fresh fill of the document does.
func TestStagedChangeInSteps(t *testing.T) {
	before, after := stagedDocs()
	fresh := newEnv(t, "stfresh")
	fresh.apply(after)
	want := fresh.nft("list", "table", "inet", "terway")

	e := newEnv(t, "ststeps")
	e.apply(before)
	batches := 0
	e.r.inject = func(msgs []batchMsg) []batchMsg { batches++; return msgs }
	e.run(e.plan(after, false))
	e.r.inject = nil
	// Two fills of 5,040 elements in chunks of at most stageChunkMax, the
	// plan's transaction between them.
	if minimum := 2*(5040/stageChunkMax+1) + 1; batches < minimum {
		t.Errorf("the staged change sent %d transactions through the fill and commit paths, want at least %d", batches, minimum)
	}
	sameTable(t, "after the staged change", e.nft("list", "table", "inet", "terway"), want)
	if ops := e.plan(after, true); len(ops) != 0 {
		t.Errorf("full plan after the staged change not empty:\n%s", firstLines(lines(ops), 5))
	}
}

// TestLargeAdditionIsStaged: adding thousands of elements to a large
// interval set (the reverse change, no deletion) is staged too: in one
// transaction it would hold the commit mutex as long as a fill.
func TestLargeAdditionIsStaged(t *testing.T) {
	small, large := bigSetDoc(15000, shrink), bigSetDoc(15000, nil) // 12,600 and 15,000
	fresh := newEnv(t, "staddfr")
	fresh.apply(large)
	want := fresh.nft("list", "table", "inet", "terway")

	e := newEnv(t, "stadd2")
	e.apply(small)
	ops := e.plan(large, false)
	if got := lines(ops); len(got) != 2 || !strings.Contains(got[0], "2400 elements change, too many for one short transaction; filled in steps") {
		t.Fatalf("plan of 2,400 additions:\n%s", firstLines(got, 5))
	}
	e.run(ops)
	sameTable(t, "after the staged additions", e.nft("list", "table", "inet", "terway"), want)
	if ops := e.plan(large, true); len(ops) != 0 {
		t.Errorf("full plan after the staged additions not empty:\n%s", firstLines(lines(ops), 5))
	}
}

// TestStagedChangeFailures: a failure between two chunks of the first fill
// leaves the old set in force and no staging set; one in the second fill
// (after the plan's transaction) leaves the new content in force under the
// staging name. A staging set left by a crash is removed. In every case
// the next sync converges to what a fresh fill gives.
func TestStagedChangeFailures(t *testing.T) {
	before, after := stagedDocs()
	fresh := newEnv(t, "stffresh")
	fresh.apply(after)
	want := fresh.nft("list", "table", "inet", "terway")
	staging := stageName("big")

	converge := func(e *env, when string) {
		t.Helper()
		e.r.inject = nil
		e.apply(after)
		got := e.nft("list", "table", "inet", "terway")
		sameTable(t, when, got, want)
		if strings.Contains(got, staging) {
			t.Errorf("%s: the staging set is still there", when)
		}
		if ops := e.plan(after, true); len(ops) != 0 {
			t.Errorf("%s: full plan not empty:\n%s", when, firstLines(lines(ops), 5))
		}
	}

	t.Run("first fill", func(t *testing.T) {
		e := newEnv(t, "stfail1")
		e.apply(before)
		old := e.nft("list", "table", "inet", "terway")
		seen := failFill(t, e, staging, 3)
		if err := execAll(e, e.plan(after, false)); err == nil || !strings.Contains(err.Error(), "no-such-set") {
			t.Fatalf("exec with a refused chunk = %v, want the refusal", err)
		}
		if *seen < 3 {
			t.Fatalf("the fill sent %d chunks, want at least 3", *seen)
		}
		sameTable(t, "after the failed fill", e.nft("list", "table", "inet", "terway"), old)
		if got := e.nft("list", "sets", "inet"); strings.Contains(got, staging) {
			t.Errorf("after the failed fill, the staging set is left:\n%s", got)
		}
		converge(e, "after the failed first fill")
	})

	t.Run("second fill", func(t *testing.T) {
		e := newEnv(t, "stfail2")
		e.apply(before)
		failFill(t, e, "big", 2)
		if err := execAll(e, e.plan(after, false)); err == nil || !strings.Contains(err.Error(), "no-such-set") {
			t.Fatalf("exec with a refused chunk = %v, want the refusal", err)
		}
		// The plan's transaction went through: the rule names the
		// staging set, which holds the new elements.
		if got := e.nft("list", "chain", "inet", "terway", "big-peers"); !strings.Contains(got, "@"+staging) {
			t.Errorf("after the failed second fill, the rule does not name the staging set:\n%s", got)
		}
		if got := strings.Count(e.nft("list", "set", "inet", "terway", staging), "tcp"); got != 5040 {
			t.Errorf("after the failed second fill, the staging set holds %d elements, want 5040", got)
		}
		converge(e, "after the failed second fill")
	})

	t.Run("crash leftover", func(t *testing.T) {
		e := newEnv(t, "stcrash")
		e.apply(before)
		// A staging set half filled when the agent was killed.
		c, err := dial(e.reg, e.ns)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		want, err := canonicalNoCache(after)
		if err != nil {
			t.Fatal(err)
		}
		def := *want.sets.get("big")
		def.name = staging
		msgs := append([]batchMsg{newSetMsg(&def, 1)}, elemMsgs(&def, staging, 0, sortedElemList(&def.elems)[:1000], false)...)
		if err := c.commit(msgs, nil); err != nil {
			t.Fatal(err)
		}
		e.r.Invalidate(e.ns) // a restarted agent's first sync is full
		converge(e, "after a crash in the fill")
	})
}
