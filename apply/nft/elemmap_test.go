package nft

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// TestElemMapDerive: maps derived from one another, each changed at random,
// hold what plain copies changed the same way hold, and a parent keeps its
// elements while maps derived from it change; the changes of a derived map
// are bounded (it flattens).
func TestElemMapDerive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	elems := make([]*elem, 400)
	for i := range elems {
		elems[i] = &elem{text: fmt.Sprintf("198.18.%d.%d", i/250, i%250)}
	}
	type pair struct {
		m    elemMap
		want map[string]*elem
	}
	check := func(step int, p *pair) {
		t.Helper()
		if p.m.len() != len(p.want) {
			t.Fatalf("step %d: len %d, want %d", step, p.m.len(), len(p.want))
		}
		got := map[string]*elem{}
		for text, e := range p.m.all() {
			if got[text] != nil {
				t.Fatalf("step %d: %s walked twice", step, text)
			}
			got[text] = e
		}
		if !maps.Equal(got, p.want) {
			t.Fatalf("step %d: walk gives %d elements, want %d", step, len(got), len(p.want))
		}
		for _, e := range elems {
			if g := p.m.get(e.text); g != p.want[e.text] {
				t.Fatalf("step %d: get(%s) = %v, want %v", step, e.text, g, p.want[e.text])
			}
		}
		if lim := flattenAt(len(p.m.base)); len(p.m.over) >= lim {
			t.Fatalf("step %d: %d changes over a base of %d, want fewer than %d", step, len(p.m.over), len(p.m.base), lim)
		}
	}
	root := &pair{m: newElemMap(0), want: map[string]*elem{}}
	for _, e := range elems[:300] {
		root.m.put(e.text, e)
		root.want[e.text] = e
	}
	pairs := []*pair{root}
	for step := range 3000 {
		parent := pairs[rng.IntN(len(pairs))]
		child := &pair{m: parent.m.derive(), want: maps.Clone(parent.want)}
		for range 1 + rng.IntN(12) {
			e := elems[rng.IntN(len(elems))]
			if rng.IntN(2) == 0 {
				// A new element each time: a put over an element of the
				// base must replace it, not leave the base's.
				e = &elem{text: e.text}
				child.m.put(e.text, e)
				child.want[e.text] = e
			} else {
				child.m.del(e.text)
				delete(child.want, e.text)
			}
		}
		check(step, child)
		check(step, parent) // unchanged by its child's changes
		if len(pairs) < 64 {
			pairs = append(pairs, child)
		} else {
			pairs[rng.IntN(len(pairs))] = child
		}
	}
}
