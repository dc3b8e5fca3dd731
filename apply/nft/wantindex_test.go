package nft

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

// bigPeerSet is a concatenated peer set of n elements, from address
// 198.18.<base>.0 on.
func bigPeerSet(base, n int) *spec.NFTSet {
	s := &spec.NFTSet{Name: "in_x_0-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}
	for i := range n {
		s.Elements = append(s.Elements, spec.NFTElement{Key: []string{fmt.Sprintf("198.18.%d.%d", base+i/250, 1+i%250), "tcp", "80"}})
	}
	return s
}

// TestWantIndexKeepsTheCNIAndResyncLists: while a resync applies a
// policy edit, CNI requests render the set before the edit and the
// resync the set after it; each list keeps its index, so that neither
// makes the other's requests index a large set again. A third list evicts
// the one used longest ago.
func TestWantIndexKeepsTheCNIAndResyncLists(t *testing.T) {
	r := New(Options{})
	r.mu.Lock()
	rec := r.recordLocked("test")
	r.mu.Unlock()
	index := r.wantIndexer(rec, true)
	fields := []int{0}
	before, after, later := bigPeerSet(0, 600), bigPeerSet(10, 500), bigPeerSet(20, 400)
	id := func(x wantIndex) uintptr { return reflect.ValueOf(x).Pointer() }
	// The first list is used again after the second: the second is the
	// one used longest ago when a third comes.

	a := index(before, fields)
	b := index(after, fields)
	if a == nil || b == nil {
		t.Fatal("a set of 400 or more elements has no index")
	}
	if id(index(before, fields)) != id(a) || id(index(after, fields)) != id(b) {
		t.Error("alternating two lists of one set indexed one of them again")
	}
	if got := len(a.lookup(before.Elements, []string{"198.18.1.7"})); got != 1 {
		t.Errorf("the index of the first list finds %d elements of 198.18.1.7, want 1", got)
	}
	index(before, fields)
	index(later, fields)
	if id(index(before, fields)) != id(a) {
		t.Error("the list used last before a third one came was evicted by it")
	}
	if id(index(after, fields)) == id(b) {
		t.Error("three lists of one set all kept their index; want at most wantIndexLists")
	}
}

// TestWantIndexAfterAScan: a scoped plan scans a list the first time it
// plans from it and indexes it the second time, once; a list seen once
// in between (a CNI request's new dispatch map) is scanned and does not
// take the index of the list used before it.
func TestWantIndexAfterAScan(t *testing.T) {
	r := New(Options{})
	r.mu.Lock()
	rec := r.recordLocked("test")
	r.mu.Unlock()
	index := r.wantIndexer(rec, false)
	fields := []int{0}
	kept, once := bigPeerSet(0, 600), bigPeerSet(10, 500)
	if index(kept, fields) != nil {
		t.Fatal("a list seen for the first time was indexed, not scanned")
	}
	a := index(kept, fields)
	if a == nil {
		t.Fatal("a list seen for the second time was not indexed")
	}
	if got := len(a.lookup(kept.Elements, []string{"198.18.1.7"})); got != 1 {
		t.Errorf("the index finds %d elements of 198.18.1.7, want 1", got)
	}
	if index(once, fields) != nil {
		t.Fatal("another list seen for the first time was indexed, not scanned")
	}
	id := func(x wantIndex) uintptr { return reflect.ValueOf(x).Pointer() }
	if b := index(kept, fields); b == nil || id(b) != id(a) {
		t.Error("the indexed list was indexed again, or lost its index, after another list was scanned")
	}
}

// TestPrepareWarmsTheWantIndexes: a resync prepares its document before it
// commits; the first scoped plan of that document (a CNI request's, after
// the resync's policies become the CNI's) finds its large sets indexed.
func TestPrepareWarmsTheWantIndexes(t *testing.T) {
	r := New(Options{})
	doc := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{bigPeerSet(0, 600)}}
	r.Prepare("test", doc)
	r.mu.Lock()
	rec := r.recordLocked("test")
	lists := rec.wantIndexes[doc.Sets[0].Name]
	r.mu.Unlock()
	if len(lists) != 1 || lists[0].first != &doc.Sets[0].Elements[0] {
		t.Fatalf("after Prepare, set %s has %d indexed lists, none of them the document's", doc.Sets[0].Name, len(lists))
	}
	if got := lists[0].idx.lookup(doc.Sets[0].Elements, []string{"198.18.2.1"}); len(got) != 1 {
		t.Errorf("the warmed index finds %d elements of 198.18.2.1, want 1", len(got))
	}
}

// TestFillLetsAScopedPlanGoFirst: a staged fill holds its next chunk back
// while a scoped plan (a CNI request's) has begun since the last commit,
// for at most stageScopedAhead, and not for a plan older than that or one
// whose commit came.
func TestFillLetsAScopedPlanGoFirst(t *testing.T) {
	rec := &record{}
	now := int64(10 * time.Second)
	if rec.othersAhead(now) {
		t.Error("a namespace nobody plans or commits in holds a fill back")
	}
	rec.lastOther.Store(now - int64(time.Second))
	rec.scopedAt.Store(now - int64(time.Millisecond))
	if !rec.othersAhead(now) {
		t.Error("a scoped plan begun 1 ms ago, with no commit since, does not hold a fill back")
	}
	rec.lastOther.Store(now)
	if rec.othersAhead(now) {
		t.Error("a scoped plan whose commit came still holds a fill back")
	}
	rec.lastOther.Store(now - int64(time.Second))
	if rec.othersAhead(now + int64(stageScopedAhead)) {
		t.Error("a scoped plan that never committed holds a fill back beyond stageScopedAhead")
	}
	rec.waiting.Add(1)
	if !rec.othersAhead(now + int64(time.Hour)) {
		t.Error("a commit waiting for commitMu does not hold a fill back")
	}
}

// TestExpectHoldsAFillBack: a CNI request says it is coming before it
// allocates and renders (Expect), and a fill holds its next chunk back
// from then, until the request's commit: the request's veth waits for
// any chunk in flight in the kernel, before its plan.
func TestExpectHoldsAFillBack(t *testing.T) {
	r := New(Options{})
	r.Expect("test") // no record: nothing to hold back, and nothing made
	r.mu.Lock()
	if r.records["test"] != nil {
		t.Error("Expect made a record for a namespace never synced")
	}
	rec := r.recordLocked("test")
	r.mu.Unlock()
	rec.lastOther.Store(monoNow())
	time.Sleep(time.Millisecond) // the monotonic clock moves on
	if rec.othersAhead(monoNow()) {
		t.Fatal("a fill is held back before any request said it was coming")
	}
	r.Expect("test")
	if !rec.othersAhead(rec.scopedAt.Load()) { // at once: the window is stageScopedAhead
		t.Error("a request that said it is coming does not hold a fill back")
	}
	time.Sleep(time.Millisecond)
	rec.lastOther.Store(monoNow()) // its commit
	if rec.othersAhead(monoNow()) {
		t.Error("a fill is still held back after the request's commit")
	}
}

// TestCanonicalCacheKeepsTwoDocuments: the canonical cache reuses the sets
// and chains of the last two different documents, so that documents
// before and after a policy edit, planned in turn (a CNI request's and a
// resync's), each reuse their own objects instead of parsing their large
// sets again; a document like the last keeps the one before as the
// alternative.
func TestCanonicalCacheKeepsTwoDocuments(t *testing.T) {
	doc := func(s *spec.NFTSet, port string) *spec.NFTable {
		return &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{s},
			Chains: []spec.NFTChain{{Name: "in_x_0", Rules: []spec.NFTRule{{
				Match:   []spec.NFTMatch{{Selectors: []string{spec.SelTHDport}, Values: []string{port}}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}}}}}}
	}
	before, after := doc(bigPeerSet(0, 600), "80"), doc(bigPeerSet(10, 500), "81")
	tb, cache, err := canonical(before, nil)
	if err != nil {
		t.Fatal(err)
	}
	ta, cache, err := canonical(after, cache)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		again := doc(bigPeerSet(0, 600), "80") // the same content, new lists
		tb2, c2, err := canonical(again, cache)
		if err != nil {
			t.Fatal(err)
		}
		if tb2.sets.get("in_x_0-ports") != tb.sets.get("in_x_0-ports") || tb2.chains.get("in_x_0") != tb.chains.get("in_x_0") {
			t.Errorf("round %d: the document before the edit, planned after the one after it, parsed its set or chain again", round)
		}
		ta2, c3, err := canonical(after, c2)
		if err != nil {
			t.Fatal(err)
		}
		if ta2.sets.get("in_x_0-ports") != ta.sets.get("in_x_0-ports") || ta2.chains.get("in_x_0") != ta.chains.get("in_x_0") {
			t.Errorf("round %d: the document after the edit, planned again, parsed its set or chain again", round)
		}
		// The same document twice keeps the other one.
		if _, cache, err = canonical(after, c3); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPrepareComparesLargeSets: a resync's Prepare (before the agent's
// lock) compares a large set with the record's, and its plan under the
// lock finds that comparison: the same changes, not computed again.
func TestPrepareComparesLargeSets(t *testing.T) {
	doc := func(base, n int) *spec.NFTable {
		return &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{bigPeerSet(base, n)}}
	}
	r := New(Options{})
	old, _, err := canonical(doc(0, 5000), nil)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.recordLocked("test").written = old
	r.mu.Unlock()
	next := doc(4, 4500) // shares 4,000 elements with the record's set
	r.Prepare("test", next)

	r.mu.Lock()
	want, _, err := canonical(next, r.recordLocked("test").cache)
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	ws, hs := want.sets.get("in_x_0-ports"), old.sets.get("in_x_0-ports")
	largeDeltas.mu.Lock()
	found := slices.ContainsFunc(largeDeltas.entries, func(e deltaEntry) bool { return e.ws == ws.id && e.hs == hs.id })
	largeDeltas.mu.Unlock()
	if !found {
		t.Fatal("Prepare did not compare the large set with the record's")
	}
	changed, gone := largeDeltas.changes(ws, hs)
	fresh, freshGone := elemChanges(ws, hs, func(*elem) string { return "" })
	if len(changed) != 500 || len(gone) != 1000 || len(fresh) != len(changed) || len(freshGone) != len(gone) {
		t.Errorf("remembered changes: %d added, %d gone; computed now: %d, %d; want 500 and 1000",
			len(changed), len(gone), len(fresh), len(freshGone))
	}
}

// TestScopedCommitWarmsItsSets: after a CNI ADD's scoped commit, the
// large sets it wrote (the dispatch maps) have their address index built
// for the sets as now recorded, ready for the next request's plan,
// although the commit looks only at the sets it wrote.
func TestScopedCommitWarmsItsSets(t *testing.T) {
	e := newEnv(t, "warmidx")
	e.r = New(Options{FullEvery: 1 << 30})
	ps := pods(41)
	e.apply(testDoc(ps[:40], nil))
	last := ps[40]
	ops, err := e.r.PlanScoped(e.reg, e.ns, testDoc(ps, nil), Scope{Pods: []string{last.key}, Addrs: []string{last.ip}})
	if err != nil {
		t.Fatal(err)
	}
	e.run(ops)
	e.r.mu.Lock()
	defer e.r.mu.Unlock()
	rec := e.r.records[e.ns]
	for _, name := range []string{"egress-dispatch", "ingress-dispatch"} {
		s := rec.written.sets.get(name)
		if s == nil || s.elems.len() != 41 {
			t.Fatalf("set %s is not recorded with the ADD's element", name)
		}
		if x, ok := rec.indexes[name]; !ok || x.of != s {
			t.Errorf("set %s: after the scoped commit, its address index is not the recorded set's", name)
		} else if got := x.idx.get(last.ip); len(got) != 1 {
			t.Errorf("set %s: the index has %d elements of %s, want 1", name, len(got), last.ip)
		}
	}
}
