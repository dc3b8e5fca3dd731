package nft

import (
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// The address indexes a record keeps for scoped plans (scoped.go, addrindex.go): of its
// large written sets (indexed, built after a commit), and of the desired
// element lists CNI requests and resyncs plan from (wantIndexed, warmed
// by Prepare).

// wantIndexLists is how many element lists of one set name keep their
// wantIndex.
const wantIndexLists = 2

// wantIndexed is a wantIndex of one desired element list, named by its
// first element's address and its length.
type wantIndexed struct {
	first *spec.NFTElement
	n     int
	idx   wantIndex
}

// indexed is an addrIndex of one set object.
type indexed struct {
	of  *set
	idx addrIndex
}

// warmIndexes builds the address indexes of rec's large sets that are not
// built yet: after a commit, by the committing sync, so that the next
// scoped plan (a CNI ADD) finds them ready. With names, only those sets
// are looked at: a scoped plan's commit changes a few sets, and leaves
// the record's other sets, hundreds at 1,000 policies, the same objects
// (looking at each was a quarter of a millisecond of every CNI ADD).
func (r *Reconciler) warmIndexes(rec *record, names ...string) {
	r.mu.Lock()
	var sets []*set
	stale := func(name string, s *set) bool {
		x, ok := rec.indexes[name]
		return s.elems.len() >= indexMinElems && (!ok || x.of != s)
	}
	switch {
	case rec.written == nil:
	case names != nil:
		for _, name := range names {
			if s := rec.written.sets.get(name); s != nil && stale(name, s) {
				sets = append(sets, s)
			}
		}
	default:
		for name, s := range rec.written.sets.all() {
			if stale(name, s) {
				sets = append(sets, s)
			}
		}
	}
	r.mu.Unlock()
	index := r.indexer(rec)
	for _, s := range sets {
		index(s)
	}
}

// wantIndexer returns the wantIndex of a desired set of rec, built once
// per element list; nil for a set small enough to scan. A scan of a list
// costs less than indexing it, so a scoped plan indexes a list only the
// second time it plans from it: the first time it notes the list and
// scans. A list seen once is never indexed: a CNI request's dispatch maps
// are new on every request. With build (a resync preparing the document
// it is about to write, warmWantIndexes) the index is built at once.
func (r *Reconciler) wantIndexer(rec *record, build bool) func(*spec.NFTSet, []int) wantIndex {
	return func(in *spec.NFTSet, fields []int) wantIndex {
		if len(in.Elements) < wantIndexMinElems {
			return nil
		}
		first := &in.Elements[0]
		same := func(x wantIndexed) bool { return x.first == first && x.n == len(in.Elements) }
		// use puts x first (the one used last) and keeps wantIndexLists.
		use := func(x wantIndexed) {
			lists := append([]wantIndexed{x}, slices.DeleteFunc(slices.Clone(rec.wantIndexes[in.Name]), same)...)
			rec.wantIndexes[in.Name] = lists[:min(len(lists), wantIndexLists)]
		}
		r.mu.Lock()
		if i := slices.IndexFunc(rec.wantIndexes[in.Name], same); i >= 0 {
			x := rec.wantIndexes[in.Name][i]
			if i > 0 {
				use(x)
			}
			r.mu.Unlock()
			return x.idx
		}
		if ref := refOf(in.Elements); !build && rec.wantScanned[in.Name] != ref {
			if rec.wantScanned == nil {
				rec.wantScanned = map[string]listRef{}
			}
			rec.wantScanned[in.Name] = ref
			r.mu.Unlock()
			return nil
		}
		delete(rec.wantScanned, in.Name)
		r.mu.Unlock()
		idx := newWantIndex(in.Elements, fields)
		r.mu.Lock()
		if rec.wantIndexes == nil {
			rec.wantIndexes = map[string][]wantIndexed{}
		}
		use(wantIndexed{first: first, n: len(in.Elements), idx: idx})
		r.mu.Unlock()
		return idx
	}
}

// warmWantIndexes builds the wantIndexes of desired's large sets that a
// scoped plan would build: by a resync, before it commits, so that the
// first CNI request that renders its document finds them ready.
func (r *Reconciler) warmWantIndexes(rec *record, desired *spec.NFTable) {
	index := r.wantIndexer(rec, true)
	for i := range desired.Sets {
		in := desired.Sets[i]
		if len(in.Elements) < wantIndexMinElems {
			continue
		}
		if fields := addrFieldsOf(in.Type); len(fields) > 0 {
			index(in, fields)
		}
	}
}

// pruneWantIndexes forgets the desired indexes of sets desired no longer
// has, once they are many: groups come and go with policy edits.
func (r *Reconciler) pruneWantIndexes(rec *record, desired *spec.NFTable) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(desired.Sets) + 64; len(rec.wantIndexes) <= n && len(rec.wantScanned) <= n {
		return
	}
	names := make(map[string]bool, len(desired.Sets))
	for i := range desired.Sets {
		names[desired.Sets[i].Name] = true
	}
	for name := range rec.wantIndexes {
		if !names[name] {
			delete(rec.wantIndexes, name)
		}
	}
	for name := range rec.wantScanned {
		if !names[name] {
			delete(rec.wantScanned, name)
		}
	}
}

// indexer returns the addrIndex of a record set of rec, built once per set
// object (record sets are never modified).
func (r *Reconciler) indexer(rec *record) func(*set) addrIndex {
	return func(s *set) addrIndex {
		r.mu.Lock()
		x, ok := rec.indexes[s.name]
		r.mu.Unlock()
		if ok && x.of == s {
			return x.idx
		}
		// x, when there, indexes the set s replaced in the record: derive
		// from it when s is that set with a small change.
		var idx addrIndex
		if ok && s.from != 0 && x.of.id == s.from && len(s.added)+len(s.removed) < s.elems.len()/4 {
			idx = x.idx.derive(s)
		} else {
			idx = newAddrIndex(s)
		}
		r.mu.Lock()
		if rec.indexes == nil {
			rec.indexes = map[string]indexed{}
		}
		rec.indexes[s.name] = indexed{of: s, idx: idx}
		r.mu.Unlock()
		return idx
	}
}
