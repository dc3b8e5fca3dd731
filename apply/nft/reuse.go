package nft

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/terway-reconciler/terway/spec"
)

// Canonicalising a document parses every address and port of every set and
// rule; a sync that changes one pod of 250 would spend most of its time on
// the 249 others. So the canonical sets and chains of the last document are
// kept by name, each with the document content it was made from, and the
// next document reuses them:
//
//   - a chain or set whose content is equal is reused as it is;
//   - a set with the same definition whose elements differ reuses the
//     elements of the longest common prefix and suffix of the two element
//     lists (render writes elements in a stable order, so one pod's change
//     is one element inserted, removed or replaced) and parses the middle
//     only. The new set records that middle as its delta against the old
//     one, so that diffing it against the old set (a partial sync's record)
//     looks at the delta only.
//
// Deciding is string comparison, no parsing and no hashing. The document's
// element lists are kept by reference (the list itself is copied): a
// document must not be modified after it was planned, which holds for
// render's output: a new document every time, whose sets are those of the
// last one where they did not change, never modified (spec.NFTable.Sets).

// canonCache holds the canonical sets and chains of the last document by
// name, and prev, those of the last different document before it: while
// a resync applies a policy edit, CNI requests plan the document before
// the edit (agent/renderviews.go), and the two alternate; each finds its
// sets and chains in one of the two rather than parsing them again. A nil
// cache holds nothing.
type canonCache struct {
	sets   map[string]*set
	chains map[string]*chain
	prev   *canonCache // its own prev is nil
}

// set returns the cached set of in's name that in's elements share the
// most with (the longest common prefix and suffix): the one to reuse or
// derive in from.
func (c *canonCache) set(in *spec.NFTSet) *set {
	if c == nil {
		return nil
	}
	best := c.sets[in.Name]
	if c.prev == nil {
		return best
	}
	alt := c.prev.sets[in.Name]
	if alt == nil || alt == best {
		return best
	}
	// One made from in's very list (or one found equal to it before) is
	// in's: counting what each shares would compare every element of
	// both, on every converged sync.
	for _, s := range []*set{best, alt} {
		if s != nil && s.sameSource(in) && s.holdsListByRef(in) {
			return s
		}
	}
	if best == nil || shared(alt, in) > shared(best, in) {
		return alt
	}
	return best
}

// shared counts the elements of in that s can lend (canonicalSet); -1
// when s's definition differs.
func shared(s *set, in *spec.NFTSet) int {
	if !s.sameSource(in) {
		return -1
	}
	p, x := commonEnds(s.src, in.Elements)
	return p + x
}

// chain returns the cached chain of in's name whose content is in's, nil
// if none is.
func (c *canonCache) chain(in *spec.NFTChain) *chain {
	for ; c != nil; c = c.prev {
		if ch := c.chains[in.Name]; ch != nil && sameChain(ch.src, in) {
			return ch
		}
	}
	return nil
}

// next returns the cache after a document canonicalised as sets and
// chains from cache c: c becomes its prev, unless every object was
// reused from c's own (a document like the last: c's prev stays the
// alternative).
func (c *canonCache) next(sets map[string]*set, chains map[string]*chain) *canonCache {
	out := &canonCache{sets: sets, chains: chains}
	if c == nil {
		return out
	}
	out.prev = &canonCache{sets: c.sets, chains: c.chains}
	if len(sets) != len(c.sets) || len(chains) != len(c.chains) {
		return out
	}
	for name, s := range sets {
		if c.sets[name] != s {
			return out
		}
	}
	for name, ch := range chains {
		if c.chains[name] != ch {
			return out
		}
	}
	out.prev = c.prev
	return out
}

// setIDs numbers desired sets, so that a set can name the one it was
// derived from without keeping it (and its own ancestor) alive.
var setIDs atomic.Uint64

// sameSource compares what canonicalSet reads of a set besides its
// elements; sets differing here are not reused.
func (s *set) sameSource(in *spec.NFTSet) bool {
	return s.name == in.Name && slices.Equal(s.typeNames, in.Type) && s.interval == in.Interval &&
		s.verdict == in.Verdict && s.comment == in.Comment && s.pod == in.Pod
}

// listRef names a document's element list by its first element and its
// length. Render hands unchanged sets' lists from document to document as
// they are (render/cache.go, render/patch.go), and documents are not
// modified once planned: a set made from the very list another document
// has holds its elements, without comparing them.
type listRef struct {
	head  *spec.NFTElement
	n     int
	known bool
}

func refOf(elems []spec.NFTElement) listRef {
	ref := listRef{n: len(elems), known: true}
	if len(elems) > 0 {
		ref.head = &elems[0]
	}
	return ref
}

// madeFrom tells whether s was made from in's very element list, or
// from a list equal to it (and in's definition): then its elements are
// in's. Each render cache of the agent hands out lists of its own
// (agent/renderviews.go), so a set written from one cache's document is
// compared once with another's list, and the list is remembered (seen).
func (s *set) madeFrom(in *spec.NFTSet) bool { return s.sameSource(in) && s.holdsList(in) }

// holdsList is madeFrom for a set whose definition is known to be in's.
func (s *set) holdsList(in *spec.NFTSet) bool {
	ref := refOf(in.Elements)
	switch {
	case !s.of.known:
		return false
	case s.holdsListByRef(in):
		return true
	case len(s.src) != len(in.Elements):
		return false
	}
	if p, _ := commonEnds(s.src, in.Elements); p != len(in.Elements) {
		return false
	}
	s.seen.set(ref)
	return true
}

// holdsListByRef tells, without comparing elements, that s was made from
// in's very element list or found equal to it before.
func (s *set) holdsListByRef(in *spec.NFTSet) bool {
	ref := refOf(in.Elements)
	return s.of.known && (s.of == ref || s.seen.is(ref))
}

// seenList is a list found equal to a set's source list. Scoped plans of
// one table may run at once: it is set under a lock of its own.
type seenList struct {
	mu  sync.Mutex
	ref listRef
}

func (l *seenList) is(ref listRef) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ref == ref
}

func (l *seenList) set(ref listRef) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ref = ref
}

func sameElement(a, b *spec.NFTElement) bool {
	return slices.Equal(a.Key, b.Key) && sameVerdict(a.Verdict, b.Verdict)
}

func sameVerdict(a, b *spec.NFTVerdict) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Kind == b.Kind && a.Chain == b.Chain && a.Map == b.Map && slices.Equal(a.Selectors, b.Selectors)
}

// commonEnds returns the lengths of the longest common prefix and suffix of
// two element lists, not overlapping in either.
func commonEnds(a, b []spec.NFTElement) (prefix, suffix int) {
	for prefix < len(a) && prefix < len(b) && sameElement(&a[prefix], &b[prefix]) {
		prefix++
	}
	for suffix < len(a)-prefix && suffix < len(b)-prefix && sameElement(&a[len(a)-1-suffix], &b[len(b)-1-suffix]) {
		suffix++
	}
	return prefix, suffix
}

func sameChain(a, b *spec.NFTChain) bool {
	return a.Name == b.Name && a.Hook == b.Hook && a.Priority == b.Priority && a.Policy == b.Policy &&
		a.Comment == b.Comment && a.Pod == b.Pod && slices.EqualFunc(a.Rules, b.Rules, sameRule)
}

func sameRule(a, b spec.NFTRule) bool {
	return a.Comment == b.Comment && a.Counter == b.Counter && sameVerdict(&a.Verdict, &b.Verdict) && slices.EqualFunc(a.Match, b.Match, sameMatch)
}

func sameMatch(a, b spec.NFTMatch) bool {
	return a.Negate == b.Negate && a.Set == b.Set && slices.Equal(a.Selectors, b.Selectors) && slices.Equal(a.Values, b.Values)
}

// cloneChain copies a document chain deeply: a chain is small, and its
// canonical form keeps it to compare the next document's with.
func cloneChain(c *spec.NFTChain) *spec.NFTChain {
	out := *c
	out.Rules = make([]spec.NFTRule, len(c.Rules))
	for i, r := range c.Rules {
		r.Verdict.Selectors = slices.Clone(r.Verdict.Selectors)
		r.Match = slices.Clone(r.Match)
		for j := range r.Match {
			r.Match[j].Selectors = slices.Clone(r.Match[j].Selectors)
			r.Match[j].Values = slices.Clone(r.Match[j].Values)
		}
		out.Rules[i] = r
	}
	return &out
}
