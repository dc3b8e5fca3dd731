package nft

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
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
// while CheckAhead reads (it holds no lock). Our commits that change only
// set elements do not spoil the check: the sets they touched are read
// again at its end. Drift in such a set is still found, as is a commit by
// anyone else or one that changes a chain: then nothing is concluded and
// the next plan reads the kernel itself, as after a transaction of ours
// the record's log does not name (a staged plan's).
func TestCheckAheadAccountsForCommitsDuringItsRead(t *testing.T) {
	e := newEnv(t, "aheadbusy")
	e.r = New(Options{FullEvery: 3})
	t.Cleanup(func() { checkAheadMidRead = nil })
	ps := pods(4)
	doc := testDoc(ps, nil)
	// fewer is doc less pod 3's egress-dispatch element: a commit of it
	// changes one set, as a CNI request's does.
	fewer := testDoc(ps, nil)
	for i, s := range fewer.Sets {
		if s.Name == "egress-dispatch" {
			fewer.Sets[i].Elements = s.Elements[:len(s.Elements)-1]
		}
	}
	elem := func(ip string) string { return "{ " + ip + " }" }
	partial := func(d *spec.NFTable) {
		ops, err := e.r.PlanPartial(e.reg, e.ns, d)
		if err != nil || len(ops) == 0 {
			t.Fatalf("a CNI-like commit during the check: %v, %d ops", err, len(ops))
		}
		e.run(ops)
	}
	// readsKernel deletes pod 0's ingress-dispatch element behind our
	// back, syncs d and says whether that sync read the kernel: it puts
	// the element back.
	readsKernel := func(d *spec.NFTable) bool {
		t.Helper()
		e.nft("delete", "element", "inet", "terway", "ingress-dispatch", elem(ps[0].ip))
		return strings.Contains(planText(e.apply(d)), ps[0].ip)
	}
	// check brings the namespace to its periodic full sync (a full sync,
	// then two counted partial ones), makes drift, and checks ahead,
	// calling mid in the middle of its read.
	check := func(from *spec.NFTable, drift, mid func()) {
		t.Helper()
		e.run(e.plan(from, true))
		e.apply(from)
		e.apply(from)
		if drift != nil {
			drift()
		}
		e.r.mu.Lock()
		due := e.r.records[e.ns].syncs+1 >= 3
		e.r.mu.Unlock()
		if !due {
			t.Fatal("the next sync is not the periodic full one; the test shows nothing")
		}
		checkAheadMidRead = mid
		e.r.CheckAhead(e.reg, e.ns, false)
		checkAheadMidRead = nil
	}

	check(doc, nil, func() { partial(fewer) })
	if readsKernel(fewer) {
		t.Error("our set-only commit during the check made the next sync read the kernel")
	}

	// Drift in the set that commit touches, made before the check.
	check(doc, func() { e.nft("delete", "element", "inet", "terway", "egress-dispatch", elem(ps[1].ip)) }, func() { partial(fewer) })
	if !strings.Contains(planText(e.apply(fewer)), ps[1].ip) {
		t.Error("drift in a set our commit touched during the check went unseen by the next sync")
	}

	// Someone else's commit during the read.
	check(doc, nil, func() { e.nft("add", "element", "inet", "terway", "egress-dispatch", "{ 198.18.250.250 : accept }") })
	if !readsKernel(doc) {
		t.Error("after a foreign commit during the check, the next sync did not read the kernel")
	}

	// A transaction of ours that is no logged commit (as a staged plan's
	// fill chunks and hop back are): here one that makes a set and takes
	// it away, so the kernel ends as it was.
	check(doc, nil, func() {
		e.r.mu.Lock()
		rec := e.r.records[e.ns]
		tmp := *rec.written.sets.get("egress-dispatch")
		e.r.mu.Unlock()
		tmp.name = "tw-check-tmp"
		c, err := dial(e.reg, e.ns)
		if err != nil {
			t.Fatal(err)
		}
		defer c.close()
		if err := rec.sendLocked(c, []batchMsg{newSetMsg(&tmp, 1), delSetMsg(&tmp)}); err != nil {
			t.Fatal(err)
		}
	})
	if !readsKernel(doc) {
		t.Error("after a transaction of ours the record's log does not name, the next sync did not read the kernel")
	}

	// Our commit that changes a chain (pod 2's rules) during the read.
	moved := testDoc(ps, map[int]int{2: 1})
	check(doc, nil, func() { partial(moved) })
	if !readsKernel(moved) {
		t.Error("after our commit changed a chain during the check, the next sync did not read the kernel")
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

// TestCheckAheadTrustsAnUnmovedGeneration: once a check has read the
// kernel and found it as recorded, a later check whose ruleset generation
// moved by our own commits alone concludes the same without reading the
// table, and the due sync trusts the record. Another writer's commit moves
// the generation: the check reads, finds the drift, and the sync repairs
// it, also when a commit of ours that changed nothing (the other writer
// had put its element in) left the generation where that commit put it.
// A check reads when the last read is agreedFor old, and after a failure.
func TestCheckAheadTrustsAnUnmovedGeneration(t *testing.T) {
	e := newEnv(t, "aheadgen")
	e.r = New(Options{FullEvery: 3})
	ps := pods(4)
	doc := testDoc(ps, nil)
	fewer := testDoc(ps, nil) // doc less pod 3's egress-dispatch element
	for i, s := range fewer.Sets {
		if s.Name == "egress-dispatch" {
			fewer.Sets[i].Elements = s.Elements[:len(s.Elements)-1]
		}
	}
	record := func() *record {
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		return e.r.records[e.ns]
	}
	// check runs a CheckAhead on a due namespace and tells whether it read
	// the kernel.
	check := func() bool {
		t.Helper()
		e.r.mu.Lock()
		rec := e.r.records[e.ns]
		due := rec != nil && !rec.full && rec.syncs+1 >= 3
		e.r.mu.Unlock()
		if !due {
			t.Fatal("the next sync is not the periodic full one; the test shows nothing")
		}
		read, byGen := e.r.CheckCounts()
		e.r.CheckAhead(e.reg, e.ns, false)
		read2, byGen2 := e.r.CheckCounts()
		if read2+byGen2 != read+byGen+1 {
			t.Fatalf("a check counted %d reads and %d by the generation, want one of either", read2-read, byGen2-byGen)
		}
		return read2 != read
	}
	// converged runs the due sync, which must plan nothing, and the
	// counted sync after it: the next is due again.
	converged := func(when string) {
		t.Helper()
		if ops := e.apply(doc); len(ops) != 0 {
			t.Fatalf("%s: the due sync plans\n%s", when, planText(ops))
		}
		e.apply(doc)
	}
	// repaired checks, after someone else deleted pod 1's element (what),
	// that the due check reads, the sync puts the element back, and the
	// check due after that repair reads again (the generation moved by
	// that other commit); then it converges.
	repaired := func(what string) {
		t.Helper()
		if !check() {
			t.Fatalf("a check after %s did not read the kernel", what)
		}
		if got := planText(e.apply(doc)); !strings.Contains(got, ps[1].ip) {
			t.Errorf("after %s, the drift found was not repaired; the sync plans\n%s", what, got)
		}
		e.apply(doc)
		e.apply(doc)
		if !check() {
			t.Fatalf("after %s, the check after the repair did not read the kernel", what)
		}
		converged("after the check following the repair of " + what)
	}
	// cni commits d as a CNI request does (partial, not counted).
	cni := func(d *spec.NFTable) {
		t.Helper()
		ops, err := e.r.PlanPartial(e.reg, e.ns, d)
		if err != nil || len(ops) == 0 {
			t.Fatalf("a CNI-like commit: %v, %d ops", err, len(ops))
		}
		e.run(ops)
	}
	e.apply(doc) // full
	e.apply(doc)
	e.apply(doc)
	if !check() {
		t.Fatal("the first check did not read the kernel")
	}
	converged("after the first check")

	// Our own commits since (a pod's element out and back in): no read.
	cni(fewer)
	cni(doc)
	if check() {
		t.Error("a check after our own commits alone read the kernel")
	}
	converged("after a check that trusted the generation")

	// Someone else's one transaction puts in pod 3's element, which our
	// record lacks, and takes out pod 1's; our commit of pod 3's element
	// then changes nothing and leaves the generation where that
	// transaction put it. Counted as ours, it would hide it: the check
	// must read, and the sync repair pod 1's element.
	cni(fewer)
	var pod3 string
	for _, l := range doc.Sets {
		if l.Name == "egress-dispatch" {
			el := l.Elements[len(l.Elements)-1]
			pod3 = el.Key[0] + " : " + el.Verdict.Kind + " " + el.Verdict.Chain
		}
	}
	batch := filepath.Join(t.TempDir(), "batch.nft")
	if err := os.WriteFile(batch, []byte("add element inet terway egress-dispatch { "+pod3+" }\n"+
		"delete element inet terway egress-dispatch { "+ps[1].ip+" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.nft("-f", batch)
	cni(doc)
	repaired("another writer's commit hidden by a no-op commit of ours")

	// Someone else's commit: read, drift found, repaired. The check after
	// the repair reads again, and the one after it trusts the generation
	// until the last read is agreedFor old.
	e.nft("delete", "element", "inet", "terway", "egress-dispatch", "{ "+ps[1].ip+" }")
	repaired("another writer's commit")
	if check() {
		t.Error("a check right after a clean read read the kernel")
	}
	converged("after a check that trusted the generation")
	rec := record()
	old := rec.agreed.Load()
	rec.agreed.Store(&agreement{mark: old.mark, at: old.at - int64(agreedFor)})
	if !check() {
		t.Error("a check agreedFor after the last read did not read the kernel")
	}
	converged("after the check agreedFor later")

	// After a failure the record is not to be trusted: no shortcut.
	e.r.Invalidate(e.ns)
	if rec.agreed.Load() != nil {
		t.Error("an invalidated record still holds the generation it agreed at")
	}
}
