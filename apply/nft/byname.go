package nft

import (
	"iter"
	"maps"
)

// byName holds a table's sets or its chains by name.
//
// A scoped plan's table is its record with a few objects changed
// (scopedTable). It shares the record's map and keeps its changes on
// top of it (derive), so that making it costs what changed, not a copy of
// the record's thousands of objects: that copy was a tenth of the garbage
// of a CNI ADD at 1,000 policies. Any other table owns one map.
//
// A byName that another was derived from must not change afterwards (a
// record never does): the other reads its map.
type byName[T any] struct {
	base map[string]*T
	// over holds the changes on top of base, nil for an object removed;
	// nil when base is this byName's own.
	over map[string]*T
	n    int // objects, while over is set
	// podOf (nil: not counted) names the pod an object belongs to, and
	// owned counts the objects that belong to one: a scoped plan looks
	// for its pods' objects only when there are any (render gives the
	// node's table none).
	podOf func(*T) string
	owned int
}

// get returns the object of a name, nil when there is none.
func (m *byName[T]) get(name string) *T {
	if m.over != nil {
		if v, ok := m.over[name]; ok {
			return v
		}
	}
	return m.base[name]
}

// put sets the object of a name; v must not be nil.
func (m *byName[T]) put(name string, v *T) {
	old := m.get(name)
	if m.podOf != nil {
		m.count(old, -1)
		m.count(v, 1)
	}
	if m.over == nil {
		if m.base == nil {
			m.base = map[string]*T{}
		}
		m.base[name] = v
		return
	}
	if old == nil {
		m.n++
	}
	m.over[name] = v
}

// del removes the object of a name, if any.
func (m *byName[T]) del(name string) {
	old := m.get(name)
	if old == nil {
		return
	}
	if m.podOf != nil {
		m.count(old, -1)
	}
	if m.over == nil {
		delete(m.base, name)
		return
	}
	m.n--
	if _, shared := m.base[name]; shared {
		m.over[name] = nil
	} else {
		delete(m.over, name)
	}
}

// count counts v (nil: nothing) as d more objects of a pod, if it is one.
func (m *byName[T]) count(v *T, d int) {
	if v != nil && m.podOf(v) != "" {
		m.owned += d
	}
}

// mayHoldPods is false when no object belongs to a pod.
func (m *byName[T]) mayHoldPods() bool { return m.podOf == nil || m.owned > 0 }

// len is the number of objects.
func (m *byName[T]) len() int {
	if m.over == nil {
		return len(m.base)
	}
	return m.n
}

// all yields every object with its name, in no order.
func (m *byName[T]) all() iter.Seq2[string, *T] {
	return func(yield func(string, *T) bool) {
		for name, v := range m.over {
			if v != nil && !yield(name, v) {
				return
			}
		}
		for name, v := range m.base {
			if m.over != nil {
				if _, changed := m.over[name]; changed {
					continue
				}
			}
			if !yield(name, v) {
				return
			}
		}
	}
}

// names yields every name, in no order.
func (m *byName[T]) names() iter.Seq[string] {
	return func(yield func(string) bool) {
		for name := range m.all() {
			if !yield(name) {
				return
			}
		}
	}
}

// has reports whether there is an object of the name.
func (m *byName[T]) has(name string) bool { return m.get(name) != nil }

// derive returns a byName with m's objects, to change without changing
// m; m must not change afterwards. It shares m's map while m's changes
// on top of it are few, and otherwise makes one map of them: with k
// changes a plan, a map of n objects is copied about every sqrt(2n/k)
// plans and the changes about as many times in between, each copy the
// size of the other's.
func (m *byName[T]) derive() byName[T] {
	out := *m
	switch {
	case m.over == nil:
		out.over, out.n = map[string]*T{}, len(m.base)
	case len(m.over)*len(m.over) <= 8*len(m.base):
		out.over = maps.Clone(m.over)
	default:
		out.base, out.over = m.plain(), map[string]*T{}
	}
	return out
}

// plain returns m's objects as one map: m's own, or a new one.
func (m *byName[T]) plain() map[string]*T {
	if m.over == nil {
		if m.base == nil {
			m.base = map[string]*T{}
		}
		return m.base
	}
	flat := make(map[string]*T, m.n)
	for name, v := range m.all() {
		flat[name] = v
	}
	return flat
}

// newByName returns an empty byName that counts the objects podOf names a
// pod of.
func newByName[T any](podOf func(*T) string) byName[T] {
	return byName[T]{base: map[string]*T{}, podOf: podOf}
}

// sameNames reports whether two byNames have objects of the same names.
func sameNames[T any](a, b *byName[T]) bool {
	if a.len() != b.len() {
		return false
	}
	for name := range a.names() {
		if !b.has(name) {
			return false
		}
	}
	return true
}
