package nft

import (
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
}

// newChainSetIndex indexes chains (not empty).
func newChainSetIndex(chains []spec.NFTChain) *chainSetIndex {
	x := &chainSetIndex{chains: chains, bySet: map[string][]int{}}
	for i := range chains {
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
