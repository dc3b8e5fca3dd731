package nft

import (
	"fmt"
	"iter"
	"maps"
	"slices"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Scoped plans: the CNI path changes its pods' objects only.
//
// A CNI ADD or DEL renders the whole document, and that document may hold
// more than the pod's change: a large policy edit that the agent's own sync
// has not applied yet. Diffing the whole table would make the ADD carry
// that edit (a 50,000-element set change is seconds of kernel time). So a
// scoped plan starts from the record of what was written and takes from
// the document only what belongs to the scoped pods:
//
//   - their own sets and chains (Pod), created, rewritten or deleted;
//   - sets and chains the record lacks (a group chain or peer set the pod
//     is the first to need), whole;
//   - in the other sets and maps, the elements that name a scoped pod: a
//     map element that jumps to one of its chains, or an element whose key
//     has its address or its host veth's name as a field (Scope.Addrs). A
//     DEL so drops the pod's address from every peer set at once, and an
//     ADD puts it in.
//   - a chain whose shape changed around the scoped pods (its rules, its
//     sets, or a set of it without an address field differ from the
//     record, while its sets hold the pods' elements), whole, with its
//     sets: a pod's address can reshape a split policy group
//     (scoped_groups.go).
//
// Everything else stays as the record has it, and the next unscoped sync
// applies the rest. When the record cannot be trusted (first sync, after a
// failure) the scoped plan is the whole table's, as before.

// Scope names the pods a scoped plan (Reconciler.PlanScoped) is about.
type Scope struct {
	// Pods are the pods' keys (namespace/name), as in sets' and chains'
	// Pod field.
	Pods []string
	// Addrs are the pods' addresses, present or removed, and their host
	// veths' names: elements whose key has one of them as a field are the
	// pods' elements.
	Addrs []string
}

// PlanScoped plans like PlanPartial, limited to the objects of sc's pods
// (see above); the record then holds what was written, not desired.
// desired must not change once planned, nor any list in it: the next
// plans know a set's elements (keptsets.go, listRef) and the chain list
// (chainsets.go) by the identity of their lists, as render's documents
// hand them on.
func (r *Reconciler) PlanScoped(ns op.Namespaces, netns string, desired *spec.NFTable, sc Scope) ([]op.Op, error) {
	return r.planWith(ns, netns, desired, syncPartial, &sc)
}

// scopedTable is the record with the scoped pods' part of desired, and the
// names of the sets and chains it put or dropped: its others are the
// record's very objects. index gives a record set's elements by address (see
// addrIndex), wantIndex a desired set's (see wantIndex). kept (nil: none)
// names sets an earlier plan found held (keptsets.go); the sets this plan
// finds held come back, for the next. chainSets (nil: none) indexes
// desired's chains by the sets they match, recorded (nil: none) written's
// (chainsets.go).
func scopedTable(desired *spec.NFTable, written *table, sc *Scope, cache *canonCache, index func(*set) addrIndex,
	wantIndex func(*spec.NFTSet, []int) wantIndex, kept *keptLookup, chainSets *chainSetIndex, recorded *recordChainIndex) (*table, *scopedChanges, *keptSets, error) {
	pods := newScopedPods(sc.Pods)
	out := &scopedOut{table: &table{sets: written.sets.derive(), chains: written.chains.derive()},
		changedSets: map[string]bool{}, changedChains: map[string]bool{}}
	podChains := map[string]bool{}
	if written.chains.mayHoldPods() {
		for name, c := range written.chains.all() {
			if pods.has(c.pod) {
				podChains[name] = true
				out.dropChain(name)
			}
		}
	}
	// The chains to look at: those the record lacks and the pods' own.
	// The document's other chains are written: with the chain index,
	// those are not even looked up (chainSetIndex.absentFrom).
	var look, absent positions // nil: every chain, not known
	if chainSets != nil {
		if found, ok := chainSets.absentFrom(&written.chains); ok {
			absent, look = found, mergePositions(found, chainSets.owned)
		}
	}
	skipChains, skipSets := othersNewObjects(desired, written, pods, sc.Addrs, chainSets, absent)
	for i := range look.all(len(desired.Chains)) {
		in := &desired.Chains[i]
		if !pods.has(in.Pod) && written.chains.get(in.Name) != nil || skipChains[in.Name] {
			continue
		}
		c := cache.chain(in)
		if c == nil {
			var err error
			if c, err = canonicalChain(in); err != nil {
				return nil, nil, nil, err
			}
		}
		out.putChain(c)
		if pods.has(in.Pod) {
			podChains[in.Name] = true
		}
	}
	if written.sets.mayHoldPods() {
		for name, s := range written.sets.all() {
			if pods.has(s.pod) {
				out.dropSet(name)
			}
		}
	}
	held := make([]bool, len(desired.Sets))
	walk := newSetWalk(kept)
	for i, in := range desired.Sets {
		if walk.held(in) {
			// As below, without reading the record's set: it has one,
			// of in's source, that holds in's list. The memo's sets
			// are of no pod: none of the scope's.
			out.wantedWritten++
			held[i] = true
			continue
		}
		hs := written.sets.get(in.Name)
		if hs != nil {
			out.wantedWritten++
		}
		switch {
		case hs == nil && !pods.has(in.Pod) && skipSets[in.Name]:
			// Another pod's new policy group: the sync's, or its ADD's.
		case pods.has(in.Pod) || hs == nil:
			s, err := canonicalSet(in, cache.set(in))
			if err != nil {
				return nil, nil, nil, err
			}
			out.putSet(s)
		case pods.has(hs.pod) || !hs.sameSource(in):
			// The set changed owner or definition: the unscoped sync's.
		case hs.holdsList(in):
			// Written from this very list: its pods' elements are the
			// record's. Most sets of a CNI request's document are. The
			// memo keeps sets of no pod alone (keptsets.go).
			held[i] = in.Pod == ""
		default:
			s, err := scopedElems(in, hs, sc.Addrs, podChains, index, wantIndex)
			if err != nil {
				return nil, nil, nil, err
			}
			if s != hs {
				out.putSet(s)
			}
		}
	}
	if err := takeChangedGroups(desired, walk.unique, written, out, sc, pods, podChains, cache, chainSets, recorded); err != nil {
		return nil, nil, nil, err
	}
	// The record passed these checks: only what the scope changed is
	// checked again, at a cost that does not grow with the table.
	if err := out.checkRefsSince(written, out.changedSets, out.changedChains); err != nil {
		return nil, nil, nil, err
	}
	found := &keptSets{sets: desired.Sets, kept: held, unique: walk.unique}
	return out.table, &scopedChanges{sets: out.changedSets, chains: out.changedChains}, found, nil
}

// scopedChanges names the sets and chains a scoped table put or dropped:
// every other object of it is the record's own, so the diff against the
// record looks at these only (differ.classify).
type scopedChanges struct {
	sets, chains map[string]bool
}

// setNames are the changed sets' names, in no order: nil when c is (not
// a scoped plan), else a list, empty when no set changed (the commit's
// warmIndexes reads nil as every set).
func (c *scopedChanges) setNames() []string {
	if c == nil {
		return nil
	}
	out := make([]string, 0, len(c.sets))
	for name := range c.sets {
		out = append(out, name)
	}
	return out
}

// othersNewObjects finds the chains of desired that the record does not
// have and that the scope has no use for, and the sets only those chains
// match against (scopedTable leaves those of them that are new and no pod
// of the scope owns). Render gives a pod scheduled here its policy
// groups before its ADD (render: podInfo.awaiting), so that the sync
// writes them ahead; until it has, a scoped plan would write every such
// group of every pod whose ADD has not come, and the first CNI request
// after a burst of pods was scheduled would pay for all of them. A chain
// is the scope's use when a pod of the scope owns it, when one of the
// scope's addresses dispatches to it (its element in a verdict map), or
// when a rule jumps to it; base chains always are. What is left is the
// sync's, or the ADD of the pod it is for.
//
// absent (nil: not known) are the positions of the chains the record
// lacks, found with index, desired's chainSetIndex (absentFrom): the other
// chains are then not looked up, and their rules not read.
func othersNewObjects(desired *spec.NFTable, written *table, pods scopedPods, addrs []string,
	index *chainSetIndex, absent positions) (chains, sets map[string]bool) {
	if absent == nil {
		index = nil // walk every chain
	}
	for i := range absent.all(len(desired.Chains)) {
		in := &desired.Chains[i]
		if written.chains.get(in.Name) == nil && in.Hook == "" && !pods.has(in.Pod) {
			if chains == nil {
				chains = map[string]bool{}
			}
			chains[in.Name] = true
		}
	}
	if chains == nil {
		return nil, nil // the usual case: every group is written
	}
	for i := range desired.Sets {
		in := desired.Sets[i]
		if !in.Verdict {
			continue
		}
		for _, e := range in.Elements {
			// The scope's elements first: a dispatch map has one per
			// pod, and only the scope's few name its chains.
			if len(e.Key) == 0 || !isAnyAddr(e.Key[0], addrs) {
				continue
			}
			if e.Verdict != nil && chains[e.Verdict.Chain] {
				delete(chains, e.Verdict.Chain)
			}
		}
	}
	if index != nil {
		for name := range chains {
			if index.jumpedTo[name] {
				delete(chains, name)
			}
		}
		if len(chains) == 0 {
			return nil, nil
		}
		return chains, index.setsOnlyOf(chains)
	}
	for i := range desired.Chains {
		for _, r := range desired.Chains[i].Rules {
			delete(chains, r.Verdict.Chain)
		}
	}
	if len(chains) == 0 {
		return nil, nil
	}
	matched := map[string]bool{} // sets a chain that is written matches against
	for i := range desired.Chains {
		in := &desired.Chains[i]
		if chains[in.Name] {
			continue
		}
		for _, r := range in.Rules {
			for _, m := range r.Match {
				if m.Set != "" {
					matched[m.Set] = true
				}
			}
			if r.Verdict.Map != "" {
				matched[r.Verdict.Map] = true
			}
		}
	}
	for i := range desired.Chains {
		if !chains[desired.Chains[i].Name] {
			continue
		}
		for _, r := range desired.Chains[i].Rules {
			for _, m := range r.Match {
				if m.Set == "" || matched[m.Set] {
					continue
				}
				if sets == nil {
					sets = map[string]bool{}
				}
				sets[m.Set] = true
			}
		}
	}
	return chains, sets
}

// scopedPods are a scope's pods: a CNI request's few, looked up for each
// of a table's thousands of objects, by comparison rather than by hash.
type scopedPods []string

func newScopedPods(keys []string) scopedPods {
	return slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == "" })
}

func (p scopedPods) has(pod string) bool { return pod != "" && slices.Contains(p, pod) }

// scopedOut is a scoped plan's table while scopedTable builds it from the
// record, with the names of the sets and chains it replaced, added or
// removed.
type scopedOut struct {
	*table
	changedSets, changedChains map[string]bool
	// wantedWritten counts the document's sets that the record has.
	wantedWritten int
}

func (o *scopedOut) putSet(s *set) {
	o.sets.put(s.name, s)
	o.changedSets[s.name] = true
}

func (o *scopedOut) dropSet(name string) {
	o.sets.del(name)
	o.changedSets[name] = true
}

func (o *scopedOut) putChain(c *chain) {
	o.chains.put(c.name, c)
	o.changedChains[c.name] = true
}

func (o *scopedOut) dropChain(name string) {
	o.chains.del(name)
	o.changedChains[name] = true
}

// scopedElems returns hs with the scoped pods' elements of in: hs itself
// when they are the same, else a set derived from hs by that delta (so
// that diffing it against hs looks at the delta only).
func scopedElems(in *spec.NFTSet, hs *set, addrs []string, podChains map[string]bool, index func(*set) addrIndex,
	wantIndex func(*spec.NFTSet, []int) wantIndex) (*set, error) {
	fields := addrFields(hs) // the key's address fields
	jumps := hs.verdict && len(podChains) > 0
	if len(fields) == 0 && !jumps {
		return hs, nil
	}
	mine := func(key []string, v *spec.NFTVerdict) bool {
		if v != nil && podChains[v.Chain] {
			return true
		}
		for _, i := range fields {
			if i >= len(key) {
				continue
			}
			for _, a := range addrs {
				if isAddr(key[i], a) {
					return true
				}
			}
		}
		return false
	}
	// The desired elements to look at: those of the pods' addresses
	// through the index of a large set (a verdict map's jumps to the pods'
	// chains are not indexed: those maps are scanned), else every one.
	candidates := in.Elements
	if !jumps {
		if idx := wantIndex(in, fields); idx != nil {
			candidates = idx.lookup(in.Elements, addrs)
		}
	}
	wanted := map[string]*elem{}
	for _, e := range candidates {
		if !mine(e.Key, e.Verdict) {
			continue
		}
		ce, err := canonicalElem(hs, e)
		if err != nil {
			return nil, fmt.Errorf("nft set %s: element %q: %w", in.Name, spec.FormatElement(e), err)
		}
		if other := wanted[ce.text]; other != nil {
			return nil, fmt.Errorf("nft set %s: element %q: same key as %q", in.Name, spec.FormatElement(e), other.String())
		}
		wanted[ce.text] = ce
	}
	var added, removed []*elem
	for text, e := range wanted {
		if he := hs.elems.get(text); he == nil || !he.same(e) {
			added = append(added, e)
			if he != nil {
				removed = append(removed, he)
			}
		}
	}
	drop := func(he *elem) {
		if wanted[he.text] == nil && !slices.Contains(removed, he) {
			removed = append(removed, he)
		}
	}
	if hs.elems.len() < indexMinElems {
		for _, he := range hs.elems.all() {
			if elemIsPods(he, fields, addrs, podChains) {
				drop(he)
			}
		}
	} else {
		idx := index(hs)
		for _, a := range addrs {
			for _, he := range idx.get(a) {
				drop(he)
			}
		}
		if jumps {
			for _, he := range hs.elems.all() {
				if he.verdict != nil && podChains[he.verdict.Chain] {
					drop(he)
				}
			}
		}
	}
	// hs holds the elements of hs.src when it knows that list. If in's
	// list differs from it only by the pods' elements, then hs changed by
	// those holds in's list: later scoped plans of the same list skip the
	// set (madeFrom) rather than scan it again, as they skip sets written
	// whole. The peer sets an admission changes are so scanned once, not
	// on every ADD until the next resync.
	follows := hs.src != nil && onlyPodsDiffer(hs.src, in.Elements, mine)
	if len(added)+len(removed) == 0 {
		if follows && hs.seen != nil {
			hs.seen.set(refOf(in.Elements))
		}
		return hs, nil
	}
	s := *hs
	s.id, s.from = setIDs.Add(1), hs.id
	s.src, s.canon, s.of, s.seen = nil, nil, listRef{}, nil
	if follows {
		// The document's list itself, not a copy: a scoped plan's
		// document does not change (PlanScoped), and a copy of a
		// dispatch set's elements on every CNI request was garbage that
		// grew with the node's pods.
		s.src, s.of, s.seen = slices.Clip(in.Elements), refOf(in.Elements), &seenList{}
	}
	s.elems, s.jumps = hs.elems.derive(), maps.Clone(hs.jumps)
	for _, he := range removed {
		s.elems.del(he.text)
		s.countJump(he, -1)
	}
	for _, e := range added {
		s.elems.put(e.text, e)
		s.countJump(e, 1)
	}
	s.added, s.removed = added, removed
	return &s, nil
}

// onlyPodsDiffer tells whether two element lists differ only by elements
// that mine claims: their common prefix and suffix leave only those.
func onlyPodsDiffer(a, b []spec.NFTElement, mine func([]string, *spec.NFTVerdict) bool) bool {
	p, x := commonEnds(a, b)
	for _, middle := range [][]spec.NFTElement{a[p : len(a)-x], b[p : len(b)-x]} {
		for _, e := range middle {
			if !mine(e.Key, e.Verdict) {
				return false
			}
		}
	}
	return true
}

// elemIsPods reports whether a canonical element jumps to a scoped pod's
// chain or has one of its addresses as a key field (of those in fields).
// It does not allocate: every small set of the record is scanned.
func elemIsPods(e *elem, fields []int, addrs []string, podChains map[string]bool) bool {
	if e.verdict != nil && podChains[e.verdict.Chain] {
		return true
	}
	found := false
	eachField(e.text, fields, func(f string) {
		found = found || slices.Contains(addrs, hostAddr(f))
	})
	return found
}

// positions are places in a list, ascending; nil stands for every place.
type positions []int

// all yields the positions in a list of n.
func (p positions) all(n int) iter.Seq[int] {
	return func(yield func(int) bool) {
		if p == nil {
			for i := range n {
				if !yield(i) {
					return
				}
			}
			return
		}
		for _, i := range p {
			if !yield(i) {
				return
			}
		}
	}
}

// mergePositions returns the positions in a or b, ascending, each once;
// a list (not nil) even when both are empty.
func mergePositions(a, b []int) positions {
	out := make(positions, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || len(a) > 0 && a[0] < b[0]:
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0] < a[0]:
			out, b = append(out, b[0]), b[1:]
		default:
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	return out
}

// isAnyAddr reports whether field f is one of addrs (isAddr).
func isAnyAddr(f string, addrs []string) bool {
	for _, a := range addrs {
		if isAddr(f, a) {
			return true
		}
	}
	return false
}
