package nft

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestAddrIndexDerive: an index derived from its parent's by a set's
// added and removed elements is the index built from the set's elements
// (the same elements under each address), over a random sequence of
// edits of a concatenated set whose keys repeat addresses, hold prefixes
// and ranges, and drop and re-add the same keys.
func TestAddrIndexDerive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	key := func() []string {
		a := fmt.Sprintf("198.18.0.%d", rng.IntN(40))
		switch rng.IntN(6) {
		case 0:
			a = fmt.Sprintf("198.18.0.%d/30", 4*rng.IntN(10))
		case 1:
			a = fmt.Sprintf("198.18.1.%d-198.18.1.%d", 10+rng.IntN(5), 20+rng.IntN(5))
		}
		return []string{a, "tcp", fmt.Sprint(1000 + rng.IntN(30))}
	}
	doc := spec.NFTSet{Name: "peers", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}
	var prev *set
	var idx addrIndex
	derived := 0
	for step := range 300 {
		// Each step edits a stretch of the list (canonicalSet derives the
		// set from prev by the stretch that differs).
		elems := slices.Clone(doc.Elements)
		at := rng.IntN(len(elems) + 1)
		drop := min(rng.IntN(4), len(elems)-at)
		var add []spec.NFTElement
		for range rng.IntN(4) {
			add = append(add, spec.NFTElement{Key: key()})
		}
		if step < 40 {
			drop, add = 0, append(add, spec.NFTElement{Key: key()}) // grow first
		}
		next := slices.Concat(elems[:at], add, elems[at+drop:])
		seen := map[string]bool{}
		next = slices.DeleteFunc(next, func(e spec.NFTElement) bool {
			k := spec.FormatElement(e)
			defer func() { seen[k] = true }()
			return seen[k]
		})
		in := doc
		in.Elements = next
		s, err := canonicalSet(&in, prev)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		fresh := newAddrIndex(s)
		if prev != nil && s.from == prev.id {
			before := cloneIndex(idx)
			next := idx.derive(s)
			derived++
			if !sameIndex(idx, before) {
				t.Fatalf("step %d: derive changed its parent index", step)
			}
			idx = next
		} else {
			idx = fresh
		}
		if !sameIndex(idx, fresh) {
			t.Fatalf("step %d: derived index differs from the one built from the set's %d elements", step, len(s.elems))
		}
		doc.Elements, prev = next, s
	}
	if derived < 200 {
		t.Fatalf("only %d of 300 steps derived an index: the test did not exercise derive", derived)
	}
}

func cloneIndex(x addrIndex) addrIndex {
	out := addrIndex{}
	for a, es := range x {
		out[a] = slices.Clone(es)
	}
	return out
}

// sameIndex compares two indexes as address → multiset of element texts.
func sameIndex(x, y addrIndex) bool {
	if len(x) != len(y) {
		return false
	}
	for a, es := range x {
		texts := func(es []*elem) []string {
			var out []string
			for _, e := range es {
				out = append(out, e.text)
			}
			slices.Sort(out)
			return out
		}
		if !slices.Equal(texts(es), texts(y[a])) {
			return false
		}
	}
	return true
}
