package nft

import (
	"fmt"
	"slices"
	"sync"
)

// Replacing a large interval set instead of editing it.
//
// The kernel deletes an element of an interval set slowly: a pipapo set
// (concatenated, `flags interval`) rebuilds its lookup tables for every
// element deleted, and an rbtree set (one interval field) walks and
// rebalances per element. Measured on Linux 6.18 with nft(8), a set of
// 50,000 elements: one pipapo delete costs 4 to 20 ms of kernel time, one
// rbtree delete about 1 ms, while filling a new set costs 14 µs (pipapo) and
// 4 µs (rbtree) per element. Deleting 8,000 elements one by one took 3 min
// 23 s where creating the set with its 42,000 remaining elements takes
// well under a second; deleting a whole set is cheap (its memory is freed
// after the commit, not element by element).
//
// So above a threshold the plan recreates such a set in the same
// transaction: the rules that name it are flushed, the set is deleted and
// created again with the wanted elements, and the rules are added back
// (the existing "recreate" path). The transaction is atomic, so no packet
// sees a half-updated set or a chain without its rules.
//
// The threshold compares the two costs, measured through this package (one
// transaction, read back) on Linux 6.18 (BenchmarkIntervalSetDeleteWays).
// For a one-field (rbtree) set, replace when
//
//	deletions × replaceCost ≥ wanted elements
//
// with replaceCost the ratio of a delete's cost to an add's: 8,000 of
// 50,000 deleted cost 0.25 s, 31 µs each, where a new set of the 42,000
// left costs 0.73 s, 17 µs an element; DefaultReplaceCost is 2. (An
// earlier measure with nft(8), a delete 1 ms, an add 4 µs, had set it to
// 200: one-field sets of a few hundred elements were recreated for two
// deletions, at three times the cost of deleting them.) Replacing also
// rewrites the referencing chains, and its plan is coarser (one line for
// the set instead of one per element).
//
// A concatenated (pipapo) set's delete costs in proportion to the set: 2.6
// µs per element of the set per delete, on Linux 6.18 from 350 to 10,000
// elements, against 14 to 17 µs per element to fill the set anew
// (BenchmarkIntervalSetDeleteWays). Both grow with the set, so a count of
// deletions decides: about 5 make the two ways cost the same, and the set
// is recreated from concatReplaceDeletes. The ratio above, measured at
// 50,000 elements only, made a pod's DEL recreate every group set of a few
// hundred elements it was in for its 2 deletions (2 × 200 ≥ 358: 21 sets,
// 7,267 elements filled and read back, where deleting took a third of the
// time), and made 40 deletions of a 10,000-element set take 1 s where a
// new set takes 0.17 s. (With another ReplaceCost the count is scaled by
// DefaultReplaceCost/ReplaceCost.)
//
// Sets smaller than replaceMinElems are always edited: there every way is
// cheap and the plan stays element by element (a pod's change reads as
// that pod's). Hash sets and maps delete in constant time and are never
// replaced.

// DefaultReplaceCost is Options.ReplaceCost's default: a one-field
// interval set's element deletion counted as this many element additions
// (measured 1.8; see above).
const DefaultReplaceCost = 2

// replaceMinElems is the set size below which a set is always edited
// element by element.
const replaceMinElems = 256

// concatReplaceDeletes is the number of deletions from which a
// concatenated interval set is recreated (with the default ReplaceCost; a
// higher ReplaceCost lowers it in proportion).
const concatReplaceDeletes = 8

// elemDelta is the element change of a kept set: the wanted elements the
// set lacks or holds otherwise, and the set's elements that are not wanted.
type elemDelta struct {
	changed, gone []*elem
	deletes       int // elements the kernel must delete: gone and replaced
}

// replaceSet decides whether the kept set hs is better recreated with ws's
// elements than edited, and records the element change for elems either
// way. It is called for sets of the same definition only.
func (d *differ) replaceSet(ws, hs *set) bool {
	if d.replaceCost < 0 || !ws.interval || hs.elems.len() < replaceMinElems {
		return false
	}
	var dl elemDelta
	if ws.from != 0 && ws.from == hs.id {
		dl.changed, dl.gone = derivedChanges(ws, hs)
	} else {
		dl.changed, dl.gone = largeDeltas.changes(ws, hs)
	}
	dl.deletes = len(dl.gone)
	for _, e := range dl.changed {
		if hs.elems.get(e.text) != nil {
			dl.deletes++
		}
	}
	d.deltas[ws.name] = &dl
	if dl.deletes == 0 {
		return false
	}
	if len(ws.typeNames) > 1 {
		// pipapo: a delete's cost grows with the set as a refill's does,
		// so a count of deletions decides, whatever the set's size.
		return dl.deletes >= max(1, concatReplaceDeletes*DefaultReplaceCost/d.replaceCost)
	}
	return dl.deletes*d.replaceCost >= ws.elems.len()
}

// reason is the plan's explanation of a replacement.
func (dl *elemDelta) reason(ws *set) string {
	return fmt.Sprintf("%d elements go, a new set of %d costs less than deleting them one by one", dl.deletes, ws.elems.len())
}

// largeDeltas remembers the element change between a large desired set
// and the record's set of its name, by the two sets' ids (sets are never
// modified): a resync computes it when it prepares its document
// (Reconciler.Prepare, before the agent's lock), and its plan under the
// lock finds it. A 42,000-element change takes 2 to 9 ms to compare on a
// busy machine, which every CNI request would wait for.
var largeDeltas = &deltaMemo{}

// largeDeltaMin is the size of a record set from which its change is
// remembered; largeDeltaKeep is how many changes are.
const (
	largeDeltaMin  = stageMinElems
	largeDeltaKeep = 4
)

type deltaMemo struct {
	mu      sync.Mutex
	entries []deltaEntry // the latest last
}

type deltaEntry struct {
	ws, hs        uint64
	changed, gone []*elem
}

// changes returns the wanted elements of ws that hs lacks or holds
// otherwise, and hs's elements ws does not want, as elemChanges does
// without bounces; the caller may reorder the lists.
func (m *deltaMemo) changes(ws, hs *set) (changed, gone []*elem) {
	if hs.elems.len() < largeDeltaMin || ws.id == 0 || hs.id == 0 {
		// Small, or a set read from the kernel (no id): compared each time.
		return elemChanges(ws, hs, func(*elem) string { return "" })
	}
	m.mu.Lock()
	for _, e := range m.entries {
		if e.ws == ws.id && e.hs == hs.id {
			m.mu.Unlock()
			return slices.Clone(e.changed), slices.Clone(e.gone)
		}
	}
	m.mu.Unlock()
	changed, gone = elemChanges(ws, hs, func(*elem) string { return "" })
	m.mu.Lock()
	m.entries = append(m.entries, deltaEntry{ws: ws.id, hs: hs.id, changed: slices.Clone(changed), gone: slices.Clone(gone)})
	if len(m.entries) > largeDeltaKeep {
		m.entries = slices.Delete(m.entries, 0, len(m.entries)-largeDeltaKeep)
	}
	m.mu.Unlock()
	return changed, gone
}

// warm computes the changes a plan of want against the record written
// would ask for (replaceSet's), and remembers the large ones.
func (m *deltaMemo) warm(want, written *table) {
	if want == nil || written == nil {
		return
	}
	for name, ws := range want.sets.all() {
		hs := written.sets.get(name)
		if hs == nil || hs == ws || !ws.interval || !hs.sameDef(ws) || hs.elems.len() < largeDeltaMin ||
			ws.from != 0 && ws.from == hs.id {
			continue
		}
		m.changes(ws, hs)
	}
}
