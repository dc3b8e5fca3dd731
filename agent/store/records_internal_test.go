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
	list := func() []spec.Allocation {
		t.Helper()
		as, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		return as
	}
	first, again := list(), list()
	if len(first) != 3 || &first[0] != &again[0] {
		t.Fatalf("two Lists with no write between: %d allocations, shared %v", len(first), len(first) > 0 && &first[0] == &again[0])
	}
	if cap(first) != len(first) {
		t.Fatalf("List's answer has capacity %d for %d items: an append would write into the store's list", cap(first), len(first))
	}
	before := slices.Clone(first)
	_ = append(first, spec.Allocation{}) // a caller's append
	mustAlloc(t, s, vpcReq(cidr24, "default/p1a", "c1a"))
	if _, _, err := s.Release("c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	after := list()
	if !reflect.DeepEqual(first, before) {
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
