package agent

import (
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestPendingEntriesAreTheirADDs: a retried ADD of an attachment has its
// own entry in pending. The first ADD's end (done), or its commit's late
// end (committed), leaves the retry's entry and committing mark; a
// release takes the mark whatever its number; only a committing entry of
// the present number is uncommitted.
func TestPendingEntriesAreTheirADDs(t *testing.T) {
	alloc := func(ip string) spec.Allocation {
		return spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: "a"},
			Spec: spec.AllocationSpec{IP: ip, ContainerID: "c1", IfName: "eth0"}}
	}
	var p pendingAdds
	first := p.addCommitting(alloc("198.18.0.1"))
	retry := p.addCommitting(alloc("198.18.0.2"))
	if first == retry {
		t.Fatalf("two entries numbered %d", first)
	}
	p.committed(alloc("198.18.0.1"), first)
	p.done(alloc("198.18.0.1"), first)
	got, ok := p.uncommitted("c1/eth0")
	if !ok || got.Spec.IP != "198.18.0.2" {
		t.Fatalf("after the first ADD's end: uncommitted %+v %v; want the retry's 198.18.0.2", got.Spec, ok)
	}
	if snap := p.snapshot(); len(snap) != 1 || snap["c1/eth0"].Spec.IP != "198.18.0.2" {
		t.Errorf("pending after the first ADD's end: %+v; want the retry's entry", snap)
	}
	p.released("c1/eth0")
	if _, ok := p.uncommitted("c1/eth0"); ok {
		t.Error("a released attachment is still committing")
	}
	if snap := p.snapshot(); len(snap) != 1 {
		t.Errorf("a release ended the pending entry: %+v", snap)
	}
	p.done(alloc("198.18.0.2"), retry)
	if snap := p.snapshot(); snap != nil {
		t.Errorf("after both ends: %+v", snap)
	}
	n := p.add(alloc("198.18.0.3"))
	if _, ok := p.uncommitted("c1/eth0"); ok {
		t.Errorf("entry %d, not committing, reads as uncommitted", n)
	}
}

// TestWithoutDropsThePendingAlone: without takes the pending ADDs'
// allocations out of a list in List's order, found by pod and attachment,
// and keeps the others in order; with none of them listed it answers the
// list itself.
func TestWithoutDropsThePendingAlone(t *testing.T) {
	alloc := func(name, cid string) spec.Allocation {
		return spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{ContainerID: cid, IfName: "eth0"}}
	}
	var list []*spec.Allocation
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		a := alloc(n, "c"+n)
		list = append(list, &a)
	}
	pending := map[string]spec.Allocation{}
	for _, a := range []spec.Allocation{alloc("b", "cb"), alloc("e", "ce"), alloc("z", "cz")} {
		pending[attachmentID(a)] = a
	}
	got := without(list, pending)
	var names []string
	for _, a := range got {
		names = append(names, a.Metadata.Name)
	}
	if want := []string{"a", "c", "d"}; !slices.Equal(names, want) {
		t.Fatalf("without b, e and the unlisted z: %v, want %v", names, want)
	}
	if len(list) != 5 || list[1].Metadata.Name != "b" {
		t.Fatal("without changed the list it was given")
	}
	if got := without(list, map[string]spec.Allocation{"cz/eth0": alloc("z", "cz")}); &got[0] != &list[0] || len(got) != 5 {
		t.Fatal("with no pending ADD listed, without made a new list")
	}
}
