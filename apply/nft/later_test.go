package nft

import (
	"context"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestLaterChecks: a commit whose context carries a LaterChecks leaves the
// read-back of the elements it wrote into kept sets to the caller, and
// records what it wrote at once. The later read-back passes when the kernel
// holds it; it finds an element deleted behind the plan's back, and then
// makes the next plan full; an element that a commit in between took out
// on purpose is no difference. A set written whole is read back in the
// commit, as without a LaterChecks.
func TestLaterChecks(t *testing.T) {
	e := newEnv(t, "laterchecks")
	doc := func(peers ...string) *spec.NFTable {
		d := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable,
			Sets: []*spec.NFTSet{{Name: "peers", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}}}
		for _, p := range peers {
			d.Sets[0].Elements = append(d.Sets[0].Elements, spec.NFTElement{Key: []string{p, "tcp", "80"}})
		}
		d.Canonicalize()
		return d
	}
	commit := func(d *spec.NFTable) *LaterChecks {
		t.Helper()
		var later LaterChecks
		ctx := WithLaterChecks(context.Background(), &later)
		for _, o := range e.plan(d, false) {
			if err := o.Exec(ctx, e.reg); err != nil {
				t.Fatalf("exec %s: %v", o, err)
			}
		}
		return &later
	}
	recordFull := func() bool {
		e.r.mu.Lock()
		defer e.r.mu.Unlock()
		return e.r.records[e.ns].full
	}

	// A new set is read back whole, in the commit.
	if later := commit(doc("198.18.0.1")); later.Len() != 0 {
		t.Fatalf("a set written whole left %d read-backs for later, want none", later.Len())
	}

	// Two elements into the kept set: read back later, and they are there.
	later := commit(doc("198.18.0.1", "198.18.0.2", "198.18.0.3"))
	if later.Len() != 1 {
		t.Fatalf("elements written into a kept set left %d read-backs for later, want 1", later.Len())
	}
	if err := later.Run(); err != nil {
		t.Fatalf("later read-back of what the kernel holds: %v", err)
	}
	if later.Len() != 0 {
		t.Errorf("Run left %d read-backs, want each run once", later.Len())
	}

	// One more, deleted behind the plan's back before the read-back.
	later = commit(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"))
	e.nft("delete", "element", "inet", "terway", "peers", "{ 198.18.0.4 . tcp . 80 }")
	err := later.Run()
	if err == nil || !strings.Contains(err.Error(), "198.18.0.4 . tcp . 80") {
		t.Fatalf("later read-back after the element's deletion behind our back: %v, want it found missing", err)
	}
	if !recordFull() {
		t.Errorf("the record still trusted after a later read-back found a difference")
	}
	e.apply(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4")) // full: repairs
	if got := e.nft("list", "set", "inet", "terway", "peers"); !strings.Contains(got, "198.18.0.4 . tcp . 80") {
		t.Fatalf("the full plan after the difference did not repair the set:\n%s", got)
	}

	// One more, which a commit in between takes out again on purpose: no
	// difference.
	later = commit(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.5"))
	e.apply(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"))
	if err := later.Run(); err != nil {
		t.Fatalf("later read-back of an element a later commit took out: %v", err)
	}
	if recordFull() {
		t.Errorf("the record was invalidated for an element a later commit took out on purpose")
	}

	// Two more; one is deleted behind the plan's back, and a commit in
	// between takes the other out on purpose: the lost one is still found.
	later = commit(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.6", "198.18.0.7"))
	e.nft("delete", "element", "inet", "terway", "peers", "{ 198.18.0.7 . tcp . 80 }")
	e.apply(doc("198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4", "198.18.0.7"))
	err = later.Run()
	if err == nil || !strings.Contains(err.Error(), "198.18.0.7 . tcp . 80") || strings.Contains(err.Error(), "198.18.0.6") {
		t.Fatalf("later read-back of an element lost behind our back, after a commit that took another out: %v, want 198.18.0.7 alone found missing", err)
	}
	if !recordFull() {
		t.Errorf("the record still trusted after a later read-back found a loss")
	}
}
