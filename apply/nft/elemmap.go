package nft

import (
	"iter"
	"maps"
)

// elemMap is a set's elements by key text (without the verdict).
//
// A set derived from another (a scoped plan's, scopedElems; a desired set
// canonicalised from the last one of its name, canonicalSet) differs from
// it by a few elements. Copying the parent's whole map for each was most
// of an admission step's scoped plan at scale: the step changes a hundred
// peer sets of hundreds of elements each, under the agent's lock. So a
// derived map shares its parent's map (base), which nothing modifies once
// a map is derived from it, and keeps its own changes over it (over); it
// takes a map of its own once those reach a quarter of it (flattenAt), so
// that lookups and walks stay within a constant of a plain map's, and a
// derive copies at most that quarter.
//
// The zero elemMap is empty and ready for use.
type elemMap struct {
	base map[string]*elem
	// over holds the changes over base of a derived map: an element put,
	// or nil for one taken out. nil for a map that owns base.
	over map[string]*elem
	n    int
}

func newElemMap(hint int) elemMap { return elemMap{base: make(map[string]*elem, hint)} }

// get returns the element of key text, nil when there is none.
func (m *elemMap) get(text string) *elem {
	if m.over != nil {
		if e, ok := m.over[text]; ok {
			return e
		}
	}
	return m.base[text]
}

func (m *elemMap) len() int { return m.n }

// all yields every element with its key text, in no order.
func (m *elemMap) all() iter.Seq2[string, *elem] {
	return func(yield func(string, *elem) bool) {
		for text, e := range m.base {
			if m.over != nil {
				if _, changed := m.over[text]; changed {
					continue
				}
			}
			if !yield(text, e) {
				return
			}
		}
		for text, e := range m.over {
			if e != nil && !yield(text, e) {
				return
			}
		}
	}
}

// put sets the element of key text; e is not nil (del takes one out).
func (m *elemMap) put(text string, e *elem) {
	if m.get(text) == nil {
		m.n++
	}
	if m.over == nil {
		if m.base == nil {
			m.base = map[string]*elem{}
		}
		m.base[text] = e
		return
	}
	m.over[text] = e
	m.flattenIfLarge()
}

// del takes out the element of key text, if any.
func (m *elemMap) del(text string) {
	if m.get(text) == nil {
		return
	}
	m.n--
	if m.over == nil {
		delete(m.base, text)
		return
	}
	if _, inBase := m.base[text]; inBase {
		m.over[text] = nil
	} else {
		delete(m.over, text)
	}
	m.flattenIfLarge()
}

// derive returns a map holding m's elements, for changes that m does not
// see. It costs m's changes over its base, not its size.
// m must not change afterwards: the sets of a record or of a desired
// table never do once made (only a new set, being made, is changed).
func (m *elemMap) derive() elemMap {
	over := maps.Clone(m.over)
	if over == nil {
		over = map[string]*elem{}
	}
	return elemMap{base: m.base, over: over, n: m.n}
}

func (m *elemMap) flattenIfLarge() {
	if len(m.over) < flattenAt(len(m.base)) {
		return
	}
	own := make(map[string]*elem, m.n)
	for text, e := range m.all() {
		own[text] = e
	}
	m.base, m.over = own, nil
}
