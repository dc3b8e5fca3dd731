package nft

import (
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Kept sets: what a CNI request's scoped plan (scopedTable) learnt about
// the document's sets, for the next one.
//
// A scoped plan looks at every set of the document to find the few its
// pods change: most are the very element lists the record's sets were
// made from (set.holdsList), and nothing is to be done for them. Each
// look reads the record's set, somewhere in the agent's heap: at 1,000
// policies, 780 sets, that was 0.3 to 0.6 ms of every ADD at scale, most
// of it waiting for memory. The next request's document is most often
// the last one with a few sets changed (render hands unchanged sets on as
// they are), so a set equal, field by field and by the identity of its
// lists, to one the last plan found held needs no look, as long as no
// commit since touched that set of the record (record.touchedSince).
// Documents are not modified once planned (reuse.go), and the memo keeps
// the lists it compares by identity alive.
//
// A document's sets are pointers, which render hands on from one document
// to the next while a set is unchanged: the memo's very set at the place
// the walk has reached is found without reading it (its name, its fields),
// and so is the order of two such sets that follow each other in the memo.
// A memo only keeps sets of no pod, so a set found this way is none of the
// scope's.

// keptSets is one scoped plan's finding: which of its document's sets
// (sets) the record held as they were (kept), at record version version
// and after fullSyncs of the record's full syncs. A full sync takes the
// kernel's sets as the record without logging those that differed from
// it only outside our commits (a set changed by someone else as desired
// has it): a memo older than one is not used.
type keptSets struct {
	version, fullSyncs uint64
	sets               []*spec.NFTSet
	kept               []bool // each a set of no pod
	// unique says sets' names are in strictly increasing order.
	unique bool
}

// keptLookup finds, for a scoped plan's document, the sets a keptSets
// says are held still.
type keptLookup struct {
	memo *keptSets
	// touched names the sets a commit touched since memo.version.
	touched map[string]bool
	// touchedLens has a bit per length of a name in touched, up to 255
	// (a longer name is looked up): a set whose name's length has none
	// is not touched, found without hashing or reading its name, which
	// for the thousand sets of a document at scale waits on memory each
	// time.
	touchedLens [4]uint64
	// touchedAt are the positions in memo.sets of the touched names, in
	// increasing order, when memo.unique (nil: look names up in touched);
	// touchedNext is the first of them not behind the walk.
	touchedAt   []int
	touchedNext int
	next        int // the memo's set to compare next (both lists are in name order)
	hits        int // sets found held
	// matched is the position in memo.sets of the set held last looked
	// at when it was the memo's very set, else -1.
	matched int
}

// newKeptLookup returns the lookup of memo for a record now at a version
// whose commits since memo's touched keys (record.touchedSince); nil when
// there is no memo or those commits are not all logged.
func newKeptLookup(memo *keptSets, keys map[string]bool, logged bool) *keptLookup {
	if memo == nil || !logged {
		return nil
	}
	touched := map[string]bool{}
	for k := range keys {
		if name, isSet := strings.CutPrefix(k, "set "); isSet {
			touched[name] = true
		}
	}
	l := &keptLookup{memo: memo, touched: touched, matched: -1}
	for name := range touched {
		if n := len(name); n < 64*len(l.touchedLens) {
			l.touchedLens[n/64] |= 1 << (n % 64)
		}
	}
	if memo.unique {
		l.touchedAt = []int{}
		for name := range touched {
			if i := spec.SetIndex(memo.sets, name); i >= 0 {
				l.touchedAt = append(l.touchedAt, i)
			}
		}
		slices.Sort(l.touchedAt)
	}
	return l
}

// touchedSet reports whether a commit touched the memo's set at position
// i, where the walk is (positions asked in increasing order).
func (l *keptLookup) touchedSet(i int) bool {
	if l.touchedAt == nil {
		return l.wasTouched(l.memo.sets[i].Name)
	}
	for l.touchedNext < len(l.touchedAt) && l.touchedAt[l.touchedNext] < i {
		l.touchedNext++
	}
	return l.touchedNext < len(l.touchedAt) && l.touchedAt[l.touchedNext] == i
}

// wasTouched reports whether a commit touched the set of a name since
// the memo's version.
func (l *keptLookup) wasTouched(name string) bool {
	if n := len(name); n < 64*len(l.touchedLens) && l.touchedLens[n/64]&(1<<(n%64)) == 0 {
		return false
	}
	return l.touched[name]
}

// held tells whether in, the document's next set in name order, is a set
// the memo found held, untouched since. Called for each set of a document
// in order; a document out of order only finds fewer.
func (l *keptLookup) held(in *spec.NFTSet) bool {
	if l == nil {
		return false
	}
	sets := l.memo.sets
	l.matched = -1
	if l.next < len(sets) && sets[l.next] == in {
		i := l.next
		l.next++
		l.matched = i
		if l.memo.kept[i] && !l.touchedSet(i) {
			l.hits++
			return true
		}
		return false
	}
	for l.next < len(sets) && sets[l.next].Name != in.Name && sets[l.next].Name < in.Name {
		l.next++
	}
	if l.next == len(sets) || sets[l.next].Name != in.Name {
		return false
	}
	i := l.next
	l.next++
	if l.memo.kept[i] && sameSetValue(sets[i], in) && !l.touchedSet(i) {
		l.hits++
		return true
	}
	return false
}

// sameSetValue tells whether a and b are the same set of documents: the
// same fields, and the very same lists (not equal ones: that would read
// them).
func sameSetValue(a, b *spec.NFTSet) bool {
	return a.Name == b.Name && a.Interval == b.Interval && a.Verdict == b.Verdict && a.Pod == b.Pod &&
		a.Comment == b.Comment && sameList(a.Type, b.Type) && refOf(a.Elements) == refOf(b.Elements)
}

// sameList tells whether a and b are one list: the same length, and the
// same first item in memory.
func sameList[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// setWalk walks a document's sets in order with a memo's lookup (nil:
// none), and finds whether their names are in strictly increasing order:
// two of the memo's very sets that follow each other in a memo in that
// order are, without reading their names.
type setWalk struct {
	kept   *keptLookup
	unique bool // the names so far are in strictly increasing order
	prev   *spec.NFTSet
	prevAt int // prev's position in the memo, found by identity; -1: none
}

func newSetWalk(kept *keptLookup) *setWalk { return &setWalk{kept: kept, unique: true, prevAt: -1} }

// held is kept.held of in, the document's next set.
func (w *setWalk) held(in *spec.NFTSet) bool {
	held, at := w.kept.held(in), -1
	if w.kept != nil {
		at = w.kept.matched
	}
	if w.unique && w.prev != nil && (w.prevAt < 0 || at != w.prevAt+1 || !w.kept.memo.unique) {
		w.unique = w.prev.Name < in.Name
	}
	w.prev, w.prevAt = in, at
	return held
}
