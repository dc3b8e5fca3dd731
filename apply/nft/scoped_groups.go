package nft

import (
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// takeChangedGroups takes whole, into out, every chain the scope does not
// own whose shape changed while the scope's pods' elements change in its
// sets: its rules, the sets they match against, or a set of them with no
// address field (which a scoped plan never updates). scopedTable keeps
// such a chain as written and changes only the pods' elements, which is
// right while the chain and its sets mean what they meant. When render
// reshapes a policy group around a pod (the split form's profiles are
// numbered in address order, and a pod's address can start a new one, end
// one, or switch the group between the split and the concatenated forms),
// the written sets no longer mean what the document's sets of the same
// name do: an ADD would put its address in a set whose ports belong to
// another profile, and a DEL would leave it in a set the document no
// longer has. The chain and its sets are then the document's, and the
// written sets no chain matches against any more are dropped. A group the
// pods are not in stays as written, whatever its pending change: that is
// the sync's to apply. (The base chains' hairpin and source validation
// sets hold every pod: a pending change of their rules, a small one, goes
// with the next ADD or DEL.)
//
// chainSets (nil: none) indexes desired's chains by the sets they match:
// the document's side of a chain is looked at only when it matches a set
// the scope changed, as it would be found touched only then. recorded
// (nil: none) indexes written's chains the same way: with both, a chain
// is looked at only when one of its sides matches such a set.
func takeChangedGroups(desired *spec.NFTable, unique bool, written *table, out *scopedOut, sc *Scope, pods scopedPods, podChains map[string]bool,
	cache *canonCache, chainSets *chainSetIndex, recorded *recordChainIndex) error {
	wanted := documentSets(desired, unique)
	var candidate []bool // by position in desired.Chains; nil: every chain
	if chainSets != nil {
		candidate = chainSets.matching(out.changedSets)
	}
	// Every set of the record is the document's too (most often): no
	// record set can be gone from the document while holding the pods'.
	everyWritten := unique && out.wantedWritten == written.sets.len()
	// Then a chain can be touched only through a set the scope changed,
	// matched on the document's side or on the record's: with both
	// indexes, the chains that match none are passed over unread.
	onlyCandidates := candidate != nil && everyWritten && recorded != nil && len(chainSets.at) == len(desired.Chains)
	if onlyCandidates {
		recorded.mark(&written.chains, out.changedSets, chainSets, candidate)
	}
	var dropped []string
	for i := range desired.Chains {
		if onlyCandidates && !candidate[i] {
			continue
		}
		in := &desired.Chains[i]
		wc := written.chains.get(in.Name)
		if pods.has(in.Pod) || wc == nil {
			continue // the pods' own, or made whole already
		}
		// Touched: a set it matches against gets the pods' elements
		// changed, is new and holds some, or is gone from the document
		// while holding some. A set new for another reason (a pending
		// edit) does not count: that edit is the sync's. Most groups are
		// not touched: this looks without allocating.
		// Only a set the scope changed (out.changedSets, a few) can
		// differ from the record's.
		touched := false
		for _, r := range in.Rules {
			if candidate != nil && !candidate[i] {
				break // matches no set the scope changed (chainSets)
			}
			for _, m := range r.Match {
				if !touched && out.changedSets[m.Set] {
					if s, hs := out.sets.get(m.Set), written.sets.get(m.Set); s != hs {
						touched = hs != nil || s != nil && setHoldsPods(s, sc.Addrs, podChains)
					}
				}
			}
		}
		for _, r := range wc.rules {
			for _, m := range r.ir.Match {
				if touched || m.Set == "" {
					continue
				}
				if out.changedSets[m.Set] {
					touched = written.sets.get(m.Set) != nil && out.sets.get(m.Set) != written.sets.get(m.Set)
				}
				if !touched && !everyWritten {
					if hs := written.sets.get(m.Set); hs != nil && wanted(m.Set) == nil {
						touched = setHoldsPods(hs, sc.Addrs, podChains)
					}
				}
			}
		}
		if !touched {
			continue
		}
		refsIn, refsW := specChainSets(in), recordChainSets(wc)
		complete := true
		for _, name := range refsIn {
			complete = complete && wanted(name) != nil
		}
		if !complete {
			continue // a chain naming a set the document lacks: a full plan reports it
		}
		c := cache.chain(in)
		if c == nil {
			var err error
			if c, err = canonicalChain(in); err != nil {
				return err
			}
		}
		changed := !slices.Equal(refsIn, refsW) || !sameRuleTexts(c, wc)
		for _, name := range refsIn {
			if changed {
				break
			}
			hs := written.sets.get(name)
			if hs == nil || len(addrFields(hs)) > 0 {
				continue
			}
			ds, err := canonicalSet(wanted(name), cache.set(wanted(name)))
			if err != nil {
				return err
			}
			changed = ds != hs && sameElems(ds, hs) != nil
		}
		if !changed {
			continue
		}
		out.putChain(c)
		for _, name := range refsIn {
			s, err := canonicalSet(wanted(name), cache.set(wanted(name)))
			if err != nil {
				return err
			}
			out.putSet(s)
			if candidate != nil {
				// A chain after this one that matches the set is now
				// one to look at, as in the walk of every chain.
				for _, j := range chainSets.bySet[name] {
					candidate[j] = true
				}
				if onlyCandidates {
					recorded.markSet(&written.chains, name, chainSets, candidate)
				}
			}
		}
		for _, name := range refsW {
			if wanted(name) == nil {
				dropped = append(dropped, name)
			}
		}
	}
	if len(dropped) == 0 {
		return nil
	}
	matched := map[string]bool{}
	for _, c := range out.chains.all() {
		for _, name := range recordChainSets(c) {
			matched[name] = true
		}
	}
	for _, name := range dropped {
		if !matched[name] {
			out.dropSet(name)
		}
	}
	return nil
}

// documentSets finds a document's sets by name: by binary search in its
// canonical order (render's documents are canonical) when unique says the
// names are in strictly increasing order, so each once (scopedTable finds
// that as it walks them), else through a map built on the first call.
func documentSets(desired *spec.NFTable, unique bool) (find func(name string) *spec.NFTSet) {
	if unique {
		return func(name string) *spec.NFTSet {
			if i := spec.SetIndex(desired.Sets, name); i >= 0 {
				return desired.Sets[i]
			}
			return nil
		}
	}
	var want map[string]*spec.NFTSet
	return func(name string) *spec.NFTSet {
		if want == nil {
			want = make(map[string]*spec.NFTSet, len(desired.Sets))
			for i := range desired.Sets {
				want[desired.Sets[i].Name] = desired.Sets[i]
			}
		}
		return want[name]
	}
}

// specChainSets are the named sets a document chain's rules match
// against, sorted, each once.
func specChainSets(c *spec.NFTChain) []string {
	return matchedSets(len(c.Rules), func(i int) []spec.NFTMatch { return c.Rules[i].Match })
}

// recordChainSets is specChainSets of a canonical chain.
func recordChainSets(c *chain) []string {
	return matchedSets(len(c.rules), func(i int) []spec.NFTMatch { return c.rules[i].ir.Match })
}

// matchedSets are the sets named by the matches of n rules, sorted, each
// once.
func matchedSets(n int, matches func(rule int) []spec.NFTMatch) []string {
	var out []string
	for i := range n {
		for _, m := range matches(i) {
			if m.Set != "" {
				out = append(out, m.Set)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// sameRuleTexts reports whether two canonical chains hold the same rules.
func sameRuleTexts(a, b *chain) bool {
	return slices.EqualFunc(a.rules, b.rules, func(x, y rule) bool { return x.text == y.text })
}

// setHoldsPods reports whether a record set has an element of the scope's
// pods (elemIsPods over its address fields).
func setHoldsPods(s *set, addrs []string, podChains map[string]bool) bool {
	fields := addrFields(s)
	for _, e := range s.elems.all() {
		if elemIsPods(e, fields, addrs, podChains) {
			return true
		}
	}
	return false
}
