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
	doc := &spec.NFTSet{Name: "peers", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}
	var prev *set
	var idx addrIndex
	derived, overlaid, flattened := 0, 0, 0
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
		in := *doc
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
			if next.over != nil {
				overlaid++
			} else {
				flattened++
			}
			if !sameIndex(idx, before) {
				t.Fatalf("step %d: derive changed its parent index", step)
			}
			idx = next
		} else {
			idx = fresh
		}
		if !sameIndex(idx, fresh) {
			t.Fatalf("step %d: derived index differs from the one built from the set's %d elements", step, s.elems.len())
		}
		doc.Elements, prev = next, s
	}
	if derived < 200 {
		t.Fatalf("only %d of 300 steps derived an index: the test did not exercise derive", derived)
	}
	// Both ways a derived index is kept: over its parent's map, and
	// flattened into a map of its own.
	if overlaid < 50 || flattened < 3 {
		t.Fatalf("%d derived indexes kept over their parent's map and %d flattened: the test did not exercise both", overlaid, flattened)
	}
}

// flatIndex is x as one map, with no entry for an address without
// elements.
func flatIndex(x addrIndex) map[string][]*elem {
	out := map[string][]*elem{}
	for a := range x.base {
		if es := x.get(a); len(es) > 0 {
			out[a] = slices.Clone(es)
		}
	}
	for a, es := range x.over {
		if len(es) > 0 {
			out[a] = slices.Clone(es)
		}
	}
	return out
}

func cloneIndex(x addrIndex) addrIndex { return addrIndex{base: flatIndex(x)} }

// sameIndex compares two indexes as address → multiset of element texts.
func sameIndex(xi, yi addrIndex) bool {
	x, y := flatIndex(xi), flatIndex(yi)
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

// TestScopedElemsIndexMatchesScan: a scoped plan that finds its pods'
// desired elements through the desired set's address index takes the same
// elements as one that scans the whole list, over random large sets whose
// keys hold two address fields, host prefixes, ranges and prefixes, and
// random scopes of present, absent and removed addresses.
func TestScopedElemsIndexMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	addr := func() string { return fmt.Sprintf("198.18.%d.%d", rng.IntN(3), rng.IntN(60)) }
	field := func() string {
		switch rng.IntN(8) {
		case 0:
			return fmt.Sprintf("198.18.%d.%d/30", rng.IntN(3), 4*rng.IntN(15))
		case 1:
			return fmt.Sprintf("198.18.1.%d-198.18.1.%d", 10+rng.IntN(5), 20+rng.IntN(5))
		case 2:
			return addr() + "/32"
		}
		return addr()
	}
	typ := []string{spec.TypeIPv4Addr, spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}
	list := func(n int) []spec.NFTElement {
		seen := map[string]bool{}
		var out []spec.NFTElement
		for len(out) < n {
			e := spec.NFTElement{Key: []string{field(), field(), "tcp", fmt.Sprint(1000 + rng.IntN(50))}}
			if k := spec.FormatElement(e); !seen[k] {
				seen[k] = true
				out = append(out, e)
			}
		}
		return out
	}
	indexed := 0
	for round := range 40 {
		doc := &spec.NFTSet{Name: "peers", Type: typ, Interval: true, Comment: "two address fields"}
		doc.Elements = list(wantIndexMinElems + rng.IntN(600))
		written := *doc // another list of the same set, as the record has it
		written.Elements = list(wantIndexMinElems + rng.IntN(600))
		hs, err := canonicalSet(&written, nil)
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for range 1 + rng.IntN(4) {
			addrs = append(addrs, addr())
		}
		idx := func(s *set) addrIndex { return newAddrIndex(s) }
		byIndex := func(in *spec.NFTSet, fields []int) wantIndex {
			x := wantIndex(nil)
			if len(in.Elements) >= wantIndexMinElems {
				indexed++
				x = newWantIndex(in.Elements, fields)
			}
			return x
		}
		scan := func(*spec.NFTSet, []int) wantIndex { return nil }
		a, err := scopedElems(doc, hs, addrs, nil, idx, byIndex)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		b, err := scopedElems(doc, hs, addrs, nil, idx, scan)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !slices.Equal(elemTexts(a), elemTexts(b)) {
			t.Fatalf("round %d (addresses %v): through the index %d elements, by a scan %d", round, addrs, a.elems.len(), b.elems.len())
		}
		if b == hs || len(b.added)+len(b.removed) == 0 {
			t.Fatalf("round %d: the scope changed nothing: the round tests nothing", round)
		}
	}
	if indexed != 40 {
		t.Fatalf("the index was used in %d rounds of 40", indexed)
	}
}

func elemTexts(s *set) []string {
	var out []string
	for text, e := range s.elems.all() {
		out = append(out, text+" "+e.String())
	}
	slices.Sort(out)
	return out
}
