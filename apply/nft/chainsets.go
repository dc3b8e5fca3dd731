package nft

import (
	"slices"
	"sync/atomic"
	"unsafe"

	"github.com/terway-reconciler/terway/spec"
)

// chainSetIndex finds a document's chains by the sets their rules match
// against, for takeChangedGroups: of a CNI request's thousand group
// chains, only those matching a set the scope changed can be reshaped
// around its pods, and walking every chain's rules to find them cost an
// ADD about 110 µs at 1,000 policies once the agent's other work had
// left the rules out of the CPU's caches (BenchmarkScopedAddPlanAtScale,
// cold). Render's patches of one pod's ADD or DEL pass the chain list of
// the last document on, the same slice, unless a policy group comes or
// goes; so the index is built once per list and kept on the record
// (record.chainSets), found again by the list's identity. Documents are
// never changed once made.
type chainSetIndex struct {
	chains []spec.NFTChain  // the list indexed
	bySet  map[string][]int // positions in the list, ascending
	at     map[string]int   // position of each name (the last, if twice)
	// owned are the positions of the chains a pod owns (Pod set),
	// ascending: render gives the node's table none.
	owned []int
	// jumpedTo names the chains a rule's verdict jumps or goes to, and
	// byMap the positions of the chains whose rules dispatch through a
	// verdict map, by map (othersNewObjects).
	jumpedTo map[string]bool
	byMap    map[string][]int
	// absent is the positions of the chains a record's base map lacks
	// (absentFrom), for the last such map asked about.
	absent atomic.Pointer[absentChains]
}

// absentChains are the positions, ascending, of a chain list's chains
// that the map of identity base lacks.
type absentChains struct {
	base      unsafe.Pointer
	positions positions
}

// newChainSetIndex indexes chains (not empty).
func newChainSetIndex(chains []spec.NFTChain) *chainSetIndex {
	x := &chainSetIndex{chains: chains, bySet: map[string][]int{}, at: make(map[string]int, len(chains)),
		jumpedTo: map[string]bool{}, byMap: map[string][]int{}}
	for i := range chains {
		x.at[chains[i].Name] = i
		if chains[i].Pod != "" {
			x.owned = append(x.owned, i)
		}
		for _, r := range chains[i].Rules {
			if r.Verdict.Chain != "" {
				x.jumpedTo[r.Verdict.Chain] = true
			}
			if m := r.Verdict.Map; m != "" {
				if at := x.byMap[m]; len(at) == 0 || at[len(at)-1] != i {
					x.byMap[m] = append(at, i)
				}
			}
		}
		for _, r := range chains[i].Rules {
			for _, m := range r.Match {
				if m.Set == "" {
					continue
				}
				if at := x.bySet[m.Set]; len(at) == 0 || at[len(at)-1] != i {
					x.bySet[m.Set] = append(at, i)
				}
			}
		}
	}
	return x
}

// indexes reports whether x is chains' index: the same list.
func (x *chainSetIndex) indexes(chains []spec.NFTChain) bool {
	return x != nil && len(chains) > 0 && sameList(x.chains, chains)
}

// matching marks, by position, the chains that match any of sets.
func (x *chainSetIndex) matching(sets map[string]bool) []bool {
	out := make([]bool, len(x.chains))
	for name := range sets {
		for _, i := range x.bySet[name] {
			out[i] = true
		}
	}
	return out
}

// absentFrom returns the positions, ascending, of the indexed chains that
// a record's chains lack. Found from the record's base map once per base
// (a scoped plan's record is most often derived from the last one, and
// shares its map), then for the chains on top of it (byName.over): a CNI
// request looks up only those, not every chain of the document. ok is
// false when the list names a chain twice: only a walk of every chain
// then finds each.
func (x *chainSetIndex) absentFrom(chains *byName[chain]) (absent positions, ok bool) {
	if len(x.at) != len(x.chains) {
		return nil, false
	}
	base := mapIdentity(chains.base)
	memo := x.absent.Load()
	if memo == nil || memo.base != base {
		memo = &absentChains{base: base, positions: positions{}} // none: an empty list, not every chain
		for i := range x.chains {
			if chains.base[x.chains[i].Name] == nil {
				memo.positions = append(memo.positions, i)
			}
		}
		x.absent.Store(memo)
	}
	if len(chains.over) == 0 {
		return memo.positions, true
	}
	absent = positions{}
	for _, i := range memo.positions {
		if chains.over[x.chains[i].Name] == nil {
			absent = append(absent, i) // not put on top either
		}
	}
	for name, c := range chains.over {
		if i, listed := x.at[name]; listed && c == nil && chains.base[name] != nil {
			absent = append(absent, i) // removed on top
		}
	}
	slices.Sort(absent)
	return absent, true
}

// setsOnlyOf returns the sets that chains (names of indexed chains) match
// against and no other indexed chain matches or dispatches through, as
// othersNewObjects' walk of every chain finds them; nil when there are
// none.
func (x *chainSetIndex) setsOnlyOf(chains map[string]bool) map[string]bool {
	var out map[string]bool
	for name := range chains {
		i, ok := x.at[name]
		if !ok {
			continue
		}
		for _, r := range x.chains[i].Rules {
			for _, m := range r.Match {
				if m.Set == "" || out[m.Set] || x.usedElsewhere(m.Set, chains) {
					continue
				}
				if out == nil {
					out = map[string]bool{}
				}
				out[m.Set] = true
			}
		}
	}
	return out
}

// usedElsewhere reports whether a chain not in chains matches against set
// or dispatches through it.
func (x *chainSetIndex) usedElsewhere(set string, chains map[string]bool) bool {
	for _, at := range [][]int{x.bySet[set], x.byMap[set]} {
		for _, i := range at {
			if !chains[x.chains[i].Name] {
				return true
			}
		}
	}
	return false
}

// chainSetsFor returns cached's index when it indexes desired's chains,
// else a new one; nil for a document without chains.
func chainSetsFor(desired *spec.NFTable, cached *chainSetIndex) *chainSetIndex {
	switch {
	case len(desired.Chains) == 0:
		return nil
	case cached.indexes(desired.Chains):
		return cached
	default:
		return newChainSetIndex(desired.Chains)
	}
}

// recordChainIndex finds a record's chains by the sets their rules match
// against: the record's side of takeChangedGroups. A chain the record
// has and the document's side does not find (chainSetIndex) may still
// be touched through its written rules, which can match a set the
// scope changed when a pending edit reshaped it; walking every written
// chain's rules to find those cost a CNI request more than its own
// objects at 1,000 policies. The index is of the map a record's chains
// share with the records derived from it (byName.base), which never
// changes, so it is built once per such map and kept on the record
// (record.recordChains); the few chains on top of it (byName.over) are
// looked at one by one.
type recordChainIndex struct {
	base  unsafe.Pointer      // the map indexed (its identity)
	bySet map[string][]string // names of its chains, by set matched
}

// newRecordChainIndex indexes the base map of a record's chains.
func newRecordChainIndex(chains *byName[chain]) *recordChainIndex {
	x := &recordChainIndex{base: mapIdentity(chains.base), bySet: map[string][]string{}}
	for name, c := range chains.base {
		for _, set := range recordChainSets(c) {
			x.bySet[set] = append(x.bySet[set], name)
		}
	}
	return x
}

// indexes reports whether x is of chains' base map.
func (x *recordChainIndex) indexes(chains *byName[chain]) bool {
	return x != nil && x.base == mapIdentity(chains.base)
}

// recordChainsFor returns cached when it indexes chains' base map, else a
// new index.
func recordChainsFor(chains *byName[chain], cached *recordChainIndex) *recordChainIndex {
	if cached.indexes(chains) {
		return cached
	}
	return newRecordChainIndex(chains)
}

// mark sets, in candidate (by position in the document's chains, which
// docs indexes), the chains whose written rules match one of sets.
func (x *recordChainIndex) mark(chains *byName[chain], sets map[string]bool, docs *chainSetIndex, candidate []bool) {
	for set := range sets {
		for _, name := range x.bySet[set] {
			if _, changed := chains.over[name]; changed {
				continue // on top of the base: the walk below
			}
			if i, ok := docs.at[name]; ok {
				candidate[i] = true
			}
		}
	}
	for name, c := range chains.over {
		if c == nil {
			continue
		}
		if i, ok := docs.at[name]; ok && !candidate[i] && matchesAny(c, sets) {
			candidate[i] = true
		}
	}
}

// markSet is mark for one set.
func (x *recordChainIndex) markSet(chains *byName[chain], set string, docs *chainSetIndex, candidate []bool) {
	x.mark(chains, map[string]bool{set: true}, docs, candidate)
}

// matchesAny reports whether a chain's rules match one of sets.
func matchesAny(c *chain, sets map[string]bool) bool {
	for _, r := range c.rules {
		for _, m := range r.ir.Match {
			if m.Set != "" && sets[m.Set] {
				return true
			}
		}
	}
	return false
}

// mapIdentity is the address of a map's header: two maps are the same
// map when it is.
func mapIdentity[K comparable, V any](m map[K]V) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&m))
}
