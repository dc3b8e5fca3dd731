package store

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/terway-reconciler/terway/spec"
)

// TestCompareJoinedIsJoinedCompare: the sort of List compares the parts of
// "a/b" keys as the joined strings compare, without joining them, also
// when a first part holds a "/" (a record no valid request makes).
func TestCompareJoinedIsJoinedCompare(t *testing.T) {
	parts := []string{"", "a", "a-b", "a/b", "ab", "b", "a.", "a0", "zz", "a~"}
	rnd := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		x1, x2, y1, y2 := parts[rnd.IntN(len(parts))], parts[rnd.IntN(len(parts))], parts[rnd.IntN(len(parts))], parts[rnd.IntN(len(parts))]
		if got, want := compareJoined(x1, x2, y1, y2), strings.Compare(x1+"/"+x2, y1+"/"+y2); got != want {
			t.Fatalf("compareJoined(%q, %q, %q, %q) = %d, want %d", x1, x2, y1, y2, got, want)
		}
	}
}

// TestListDecodesChangedRecordsAgain: List reuses a record's decoded form
// only while its bytes are the same, and forgets deleted records.
func TestListDecodesChangedRecordsAgain(t *testing.T) {
	s := openTemp(t)
	for i := range 40 {
		mustAlloc(t, s, vpcReq(cidr24, fmt.Sprintf("default/p%d", i), fmt.Sprintf("c%d", i)))
	}
	list := func() map[string]string {
		t.Helper()
		as, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, a := range as {
			out[a.Spec.ContainerID] = a.Spec.Netns
		}
		return out
	}
	if got := list()["c7"]; got != "/var/run/netns/c7" {
		t.Fatalf("c7's netns = %q", got)
	}
	// Rewrite c7's record in place, as another version of the agent could.
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAllocs)
		v := b.Get([]byte("c7/eth0"))
		return b.Put([]byte("c7/eth0"), []byte(strings.Replace(string(v), "/var/run/netns/c7", "/var/run/netns/other", 1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := list()["c7"]; got != "/var/run/netns/other" {
		t.Fatalf("after the rewrite, c7's netns = %q: List used the old decoding", got)
	}
	for i := range 39 {
		if _, _, err := s.Release(fmt.Sprintf("c%d", i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(); len(got) != 1 {
		t.Fatalf("after 39 releases List has %d records", len(got))
	}
	if n := s.decodedCount(); n > 2*1+16 {
		t.Errorf("%d decoded records are kept for 1 record", n)
	}
}

// TestListSharedUnchanged: List hands every caller the store's own list,
// with no spare capacity, and a later write makes a new list rather than
// changing the one handed out.
func TestListSharedUnchanged(t *testing.T) {
	s := openTemp(t)
	for i := range 3 {
		mustAlloc(t, s, vpcReq(cidr24, fmt.Sprintf("default/p%d", i), fmt.Sprintf("c%d", i)))
	}
	list := func() []*spec.Allocation { return mustList(t, s) }
	first, again := list(), list()
	if len(first) != 3 || &first[0] != &again[0] {
		t.Fatalf("two Lists with no write between: %d allocations, shared %v", len(first), len(first) > 0 && &first[0] == &again[0])
	}
	if cap(first) != len(first) {
		t.Fatalf("List's answer has capacity %d for %d items: an append would write into the store's list", cap(first), len(first))
	}
	before := values(first)
	_ = append(first, &spec.Allocation{}) // a caller's append
	mustAlloc(t, s, vpcReq(cidr24, "default/p1a", "c1a"))
	if _, _, err := s.Release("c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	after := list()
	if !reflect.DeepEqual(values(first), before) {
		t.Fatalf("a write changed the list handed out before it:\n%v\nnow\n%v", before, first)
	}
	var ids []string
	for _, a := range after {
		ids = append(ids, a.Spec.ContainerID)
	}
	if want := []string{"c1", "c1a", "c2"}; !slices.Equal(ids, want) {
		t.Fatalf("after an allocation and a release: %v, want %v", ids, want)
	}
}

// TestOfferedListKept: a list offered as List's answer changed by the
// allocation being committed, as the agent renders with it meanwhile, is
// List's answer after that commit, the very list; an offer that the
// commit does not make true, or based on a list a write has replaced
// already, is dropped for the list the store makes.
func TestOfferedListKept(t *testing.T) {
	s := openTemp(t)
	for i := range 4 {
		mustAlloc(t, s, vpcReq(cidr24, fmt.Sprintf("default/p%d", i*2), fmt.Sprintf("c%d", i*2)))
	}
	list := func() []*spec.Allocation { return mustList(t, s) }
	allocate := func(pod, cid string) (spec.Allocation, func() error) {
		t.Helper()
		a, _, _, commit, err := s.AllocateVPCDeferred(vpcReq(cidr24, pod, cid))
		if err != nil || commit == nil {
			t.Fatalf("allocate %s: %v", pod, err)
		}
		return a, commit
	}
	names := func(as []*spec.Allocation) []string {
		var out []string
		for _, a := range as {
			out = append(out, a.Metadata.Name)
		}
		return out
	}

	base := list()
	a3, commit := allocate("default/p3", "c3")
	offer := s.Merge(base, []*spec.Allocation{&a3})
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	got := list()
	if &got[0] != &offer[0] || !slices.Equal(names(got), []string{"p0", "p2", "p3", "p4", "p6"}) {
		t.Fatalf("after the offered commit: %v, the offer kept %v", names(got), &got[0] == &offer[0])
	}

	// An offer of another allocation than the commit's.
	a1, commit := allocate("default/p1", "c1")
	wrong := s.Merge(got, []*spec.Allocation{{Metadata: spec.ObjectMeta{Namespace: "default", Name: "p5"}, Spec: a1.Spec}})
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	after := list()
	if &after[0] == &wrong[0] || !slices.Equal(names(after), []string{"p0", "p1", "p2", "p3", "p4", "p6"}) {
		t.Fatalf("after a commit the offer did not foresee: %v, the offer kept %v", names(after), &after[0] == &wrong[0])
	}

	// An offer kept, then a release: List follows the release from it.
	a5, commit := allocate("default/p5", "c5")
	late := s.Merge(after, []*spec.Allocation{&a5})
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	if kept := list(); &kept[0] != &late[0] {
		t.Fatalf("after the offered commit of p5: %v, not the offer", names(kept))
	}
	if _, _, err := s.Release("c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	final := list()
	if !slices.Equal(names(final), []string{"p1", "p2", "p3", "p4", "p5", "p6"}) {
		t.Fatalf("after the offered commit and a release: %v", names(final))
	}
	a7, commit := allocate("default/p7", "c7")
	if _, _, err := s.Release("c2", "eth0"); err != nil {
		t.Fatal(err)
	}
	stale := s.Merge(final, []*spec.Allocation{&a7}) // based on a list no longer List's: not offered
	if err := commit(); err != nil {
		t.Fatal(err)
	}
	last := list()
	if &last[0] == &stale[0] || !slices.Equal(names(last), []string{"p1", "p3", "p4", "p5", "p6", "p7"}) {
		t.Fatalf("after a release before the offer: %v, the offer kept %v", names(last), &last[0] == &stale[0])
	}
}

// mustList is s.List, failing t on an error.
func mustList(t *testing.T, s *Store) []*spec.Allocation {
	t.Helper()
	as, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// TestAllocWritesLookup checks lookup, one by one for a few writes and
// through the map for more, against the writes noted: a record written,
// one removed, one written twice, and attachments never written.
func TestAllocWritesLookup(t *testing.T) {
	for _, n := range []int{1, fewWrites, fewWrites + 1, 3 * fewWrites} {
		w := &allocWrites{}
		want := map[Attachment]*spec.Allocation{}
		for i := range n {
			at := Attachment{ContainerID: fmt.Sprintf("c%d", i), IfName: "eth0"}
			var a *spec.Allocation
			if i%3 != 1 { // every third one removed
				a = &spec.Allocation{Spec: spec.AllocationSpec{ContainerID: at.ContainerID, IfName: at.IfName, IP: fmt.Sprintf("10.0.0.%d", i)}}
			}
			w.note(at, a)
			if i%4 == 0 { // written again: the last write counts
				a = &spec.Allocation{Spec: spec.AllocationSpec{ContainerID: at.ContainerID, IfName: at.IfName, IP: "10.0.1.1"}}
				w.note(at, a)
			}
			want[at] = a
		}
		if len(w.keys) != n {
			t.Errorf("%d writes: %d keys noted, want %d", n, len(w.keys), n)
		}
		for at, a := range want {
			if got, ok := w.lookup(at); !ok || got != a {
				t.Errorf("%d writes: lookup(%v) = %v, %v; want %v, true", n, at, got, ok, a)
			}
		}
		for _, at := range []Attachment{{ContainerID: "c0", IfName: "eth1"}, {ContainerID: "c-none", IfName: "eth0"}, {}} {
			if got, ok := w.lookup(at); ok {
				t.Errorf("%d writes: lookup(%v) = %v, true for an attachment never written", n, at, got)
			}
		}
	}
}

// TestMergeOffersOnlyNewAttachments: a merge that puts in an allocation
// of an attachment the list has already (which would then be in it twice)
// answers the list but offers nothing; so does one based on another list
// than List's.
func TestMergeOffersOnlyNewAttachments(t *testing.T) {
	s := openTemp(t)
	for i := range 3 {
		mustAlloc(t, s, vpcReq(cidr24, fmt.Sprintf("default/p%d", i), fmt.Sprintf("c%d", i)))
	}
	offered := func() bool {
		s.listMu.Lock()
		defer s.listMu.Unlock()
		o := s.offer
		s.offer = nil
		return o != nil
	}
	base := mustList(t, s)
	again := *base[1]
	again.Spec.Netns = "/var/run/netns/elsewhere"
	if got := s.Merge(base, []*spec.Allocation{&again}); len(got) != 4 || offered() {
		t.Fatalf("a merge of a listed attachment: %d allocations, or offered", len(got))
	}
	fresh := spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "default", Name: "p9"}, Spec: spec.AllocationSpec{ContainerID: "c9", IfName: "eth0", IP: "10.0.0.9"}}
	if got := s.Merge(slices.Clone(base), []*spec.Allocation{&fresh}); len(got) != 4 || offered() {
		t.Fatal("a merge based on a copy of List's answer was offered")
	}
	got := s.Merge(base, []*spec.Allocation{&fresh})
	if !offered() || len(got) != 4 || got[3] != &fresh || &got[0] == &base[0] {
		t.Fatalf("a merge of a new attachment into List's answer: offered no list, or not a new list in order: %+v", values(got))
	}

	// An attachment of the list put in for another pod: Put moves it in
	// one write, which the offer must not take for the merge (the list
	// would hold it twice).
	moved := *base[0]
	moved.Metadata.Name = "p9"
	s.Merge(base, []*spec.Allocation{&moved})
	if err := s.Put(moved); err != nil {
		t.Fatal(err)
	}
	after := mustList(t, s)
	if n, err := s.Count(); err != nil || len(after) != 3 || n != 3 {
		t.Fatalf("after moving c0 to pod p9: List %+v, Count %d %v; want 3 allocations", values(after), n, err)
	}
}
