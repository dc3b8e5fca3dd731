package nft

import (
	"strings"
	"testing"
)

// TestCheckAheadReadsTheKernelBeforeTheLock: when the next plan of a
// namespace would be the periodic full one, CheckAhead reads the kernel
// first (the agent calls it before its lock). With no drift, the next plan
// trusts the record, as the full sync would have, and does not read the
// kernel: drift made after the check goes unseen until the next full
// sync. With drift, nothing changes: the next plan is full and repairs it.
func TestCheckAheadReadsTheKernelBeforeTheLock(t *testing.T) {
	e := newEnv(t, "ahead")
	e.r = New(Options{FullEvery: 3})
	ps := pods(3)
	doc := testDoc(ps, nil)
	due := func() {
		t.Helper()
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		if rec := e.r.records[e.ns]; rec == nil || rec.syncs+1 < 3 {
			t.Fatal("the next sync is not the periodic full one; the test shows nothing")
		}
	}
	e.apply(doc) // the first sync, full
	e.apply(doc) // partial
	e.apply(doc) // partial: the next is the periodic full sync
	dropped := "{ " + ps[1].ip + " }"

	// Due, no drift: the check stands for the full sync.
	due()
	e.r.CheckAhead(e.reg, e.ns, false)
	e.nft("delete", "element", "inet", "terway", "egress-dispatch", dropped)
	if ops := e.apply(doc); len(ops) != 0 {
		t.Errorf("after a check that found no drift, the due sync read the kernel: it plans\n%s", planText(ops))
	}
	e.apply(doc) // partial: the next is the periodic full sync again

	// Due, with drift (the element deleted above): the check leaves the
	// full sync to the plan, which puts the element back.
	due()
	e.r.CheckAhead(e.reg, e.ns, false)
	ops := e.apply(doc)
	if got := planText(ops); !strings.Contains(got, ps[1].ip) {
		t.Errorf("after a check that found drift, the due sync did not repair it; it plans\n%s", got)
	}
	if out := e.nft("list", "map", "inet", "terway", "egress-dispatch"); !strings.Contains(out, ps[1].ip) {
		t.Errorf("the element deleted outside is still missing:\n%s", out)
	}
}

// TestCheckAheadAccountsForCommitsDuringItsRead: CNI requests commit
// while CheckAhead reads (it holds no lock). Our own commits meanwhile do
// not spoil the check: the objects they touched are compared as the
// record has them. A commit by anyone else meanwhile does: nothing is
// concluded, and the next plan reads the kernel itself and repairs it.
func TestCheckAheadAccountsForCommitsDuringItsRead(t *testing.T) {
	e := newEnv(t, "aheadbusy")
	e.r = New(Options{FullEvery: 3})
	t.Cleanup(func() { checkAheadReading = nil })
	ps := pods(4)
	doc, moved := testDoc(ps, nil), testDoc(ps, map[int]int{2: 1})
	for range 3 {
		e.apply(doc) // full, then partial twice: the next is the periodic full sync
	}

	// Our commit during the read (a CNI request's: partial, not counted
	// towards the full sync): the check still stands for the full sync.
	// Drift made after it goes unseen by the next plans.
	checkAheadReading = func() {
		ops, err := e.r.PlanPartial(e.reg, e.ns, moved)
		if err != nil || len(ops) == 0 {
			t.Errorf("the commit during the check: %v, %d ops", err, len(ops))
		}
		e.run(ops)
	}
	e.r.CheckAhead(e.reg, e.ns, false)
	checkAheadReading = nil
	e.nft("delete", "element", "inet", "terway", "egress-dispatch", "{ "+ps[1].ip+" }")
	for range 2 {
		if ops := e.apply(moved); len(ops) != 0 {
			t.Fatalf("our own commit during the check made a sync read the kernel: it plans\n%s", planText(ops))
		}
	}

	// Due again. Someone else's commit during the read: no conclusion;
	// the next plan is the full sync, puts back the element deleted
	// above and takes the foreign one out.
	foreign := "{ 198.18.250.250 : accept }"
	checkAheadReading = func() { e.nft("add", "element", "inet", "terway", "egress-dispatch", foreign) }
	e.r.CheckAhead(e.reg, e.ns, false)
	checkAheadReading = nil
	ops := e.apply(moved)
	if got := planText(ops); !strings.Contains(got, "198.18.250.250") || !strings.Contains(got, ps[1].ip) {
		t.Errorf("after a foreign commit during the check, the next sync did not read the kernel; it plans\n%s", got)
	}
}

// TestCheckAheadStandsForAFullPlan: the agent's periodic full resync
// (PlanFull, every 30 s) reads the kernel under the agent's lock too; a
// check made just before it, for it, that found no drift stands for that
// read once. A check that finds drift leaves the read to the plan, even
// after an earlier check that agreed.
func TestCheckAheadStandsForAFullPlan(t *testing.T) {
	e := newEnv(t, "aheadfull")
	ps := pods(3)
	doc := testDoc(ps, nil)
	e.apply(doc)
	e.apply(doc)

	e.r.CheckAhead(e.reg, e.ns, true)
	e.nft("delete", "element", "inet", "terway", "egress-dispatch", "{ "+ps[1].ip+" }")
	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("a full plan right after a check that agreed read the kernel: it plans\n%s", planText(ops))
	}
	if ops := e.plan(doc, true); !strings.Contains(planText(ops), ps[1].ip) {
		t.Errorf("a second full plan trusted the same check: it plans\n%s", planText(ops))
	}

	// An agreeing check, not used; then one that finds the drift.
	e.r.mu.Lock()
	e.r.records[e.ns].checkedAt = monoNow()
	e.r.mu.Unlock()
	e.r.CheckAhead(e.reg, e.ns, true)
	if ops := e.plan(doc, true); !strings.Contains(planText(ops), ps[1].ip) {
		t.Errorf("a check that found drift left an earlier check standing: the full plan plans\n%s", planText(ops))
	}
}
