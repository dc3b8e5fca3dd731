package render

import (
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// Splicing a patch into the last document (patch.go): the changed pods'
// items and dispatch elements out and in, at their canonical places.

// splice makes the patched document: the changed pods' items out, their
// items now in, and the groups they leave empty or start.
// With lagKernel, the document's kernel item sections are the base's: the
// patch's items are left for the base to settle (patch_scoped.go).
func (b *patchBase) splice(r *renderer, changes map[string]*podChange, p *podPolicies,
	problems map[string][]spec.Problem, lagKernel bool) (*spec.NodeState, bool) {
	var remove, add spec.NodeState
	var removeTable, addTable spec.NFTable
	removeElems, addElems := map[string][]spec.NFTElement{}, map[string][]spec.NFTElement{}
	for key := range changes {
		if before := b.pods[key]; before != nil {
			putPart(&remove, before.part)
			remove.Problems = append(remove.Problems, before.problems...)
			if before.entry != nil {
				remove.Pods = append(remove.Pods, before.entry)
				dispatchElements(before.entry, before.local, removeElems)
			} else if before.awaits {
				awaitingElements(key, b.chainOf(p, before.groups[0]), b.chainOf(p, before.groups[1]), removeElems)
			}
		}
		after := r.byKey[key]
		if after == nil {
			continue
		}
		putPart(&add, after.part)
		after.groups = p.groups[key]
		if after.entry != nil {
			keys := after.groups
			after.entry.IngressChain, after.entry.EgressChain = b.chainOf(p, keys[0]), b.chainOf(p, keys[1])
			add.Pods = append(add.Pods, after.entry)
			dispatchElements(after.entry, after.local, addElems)
		} else if after.awaiting() {
			awaitingElements(key, b.chainOf(p, after.groups[0]), b.chainOf(p, after.groups[1]), addElems)
		}
	}
	for _, ps := range problems {
		add.Problems = append(add.Problems, ps...)
	}
	remove.Problems = append(remove.Problems, p.problemsOut...)
	add.Problems = append(add.Problems, p.problemsIn...)
	slices.SortFunc(add.Problems, spec.CompareProblems)
	add.Problems = slices.Compact(add.Problems)
	slices.SortFunc(remove.Problems, spec.CompareProblems)
	remove.Problems = slices.Compact(remove.Problems)
	for gk, d := range p.pods() {
		switch g := b.groups[gk]; {
		case g != nil && g.members+g.awaiting+d == 0:
			removeTable.Chains = append(removeTable.Chains, g.out.chain)
			removeTable.Sets = append(removeTable.Sets, g.out.sets...)
		case g == nil && d > 0:
			out := p.created[gk].out
			addTable.Chains = append(addTable.Chains, out.chain)
			addTable.Sets = append(addTable.Sets, out.sets...)
		}
	}
	doc := *b.doc
	t := *doc.NFTables
	cloned := false // t.Sets is still the last document's list
	for _, name := range []string{mapIngressPods, mapEgressPods, setHairpin, setPodSources} {
		if sameElements(removeElems[name], addElems[name]) {
			// Nothing to do, and most often so: a pod awaiting its ADD
			// has the jumps its entry then gets. The set stays the very
			// set, with its very list, which the nftables planner
			// recognises by identity (apply/nft: keptsets.go, reuse.go)
			// rather than by comparing it.
			continue
		}
		i := spec.SetIndex(t.Sets, name)
		if i < 0 {
			return nil, false
		}
		elems, ok := spec.SplicedElements(t.Sets[i].Elements, removeElems[name], addElems[name])
		if !ok {
			return nil, false
		}
		if !cloned {
			// The list of pointers is copied, not the sets: the other
			// sets are the last document's, which stays as it is.
			t.Sets, cloned = slices.Clone(t.Sets), true
		}
		s := *t.Sets[i]
		s.Elements = elems
		t.Sets[i] = &s
	}
	doc.NFTables = &t
	if len(removeTable.Chains)+len(addTable.Chains) > 0 {
		remove.NFTables, add.NFTables = &removeTable, &addTable
	}
	if !lagKernel {
		return doc.Spliced(&remove, &add)
	}
	removeKernel, addKernel := kernelItems(&remove), kernelItems(&add)
	if pendingOut, pendingIn := b.pending(); !doc.CanSplice(pendingOut, pendingIn, removeKernel, addKernel) {
		return nil, false
	}
	return doc.Spliced(withoutKernelItems(&remove), withoutKernelItems(&add))
}

// sameElements tells whether two lists of a set's elements, each with
// a key once, hold the same elements in any order. They are a patch's
// few.
func sameElements(a, b []spec.NFTElement) bool {
	if len(a) != len(b) {
		return false
	}
	for _, e := range a {
		if !slices.ContainsFunc(b, func(o spec.NFTElement) bool { return sameElement(e, o) }) {
			return false
		}
	}
	return true
}

// putPart adds a datapath's items to s, its problems aside (a pod's
// problems go in and out whole).
func putPart(s *spec.NodeState, part *spec.NodeState) {
	if part == nil {
		return
	}
	problems := s.Problems
	add(s, part)
	s.Problems = problems
}

// dispatchElements adds a pod's elements of the dispatch sets by set
// name, as groupChain, hairpinElements and renderSourceValidation make
// them.
func dispatchElements(e *spec.Pod, local bool, into map[string][]spec.NFTElement) {
	jumpElements(e.HostVeth, e.IngressChain, e.EgressChain, into)
	if isolated(e) {
		into[setHairpin] = append(into[setHairpin], vethElement(e.HostVeth, e.IP))
	}
	if e.HostVeth != "" && local {
		into[setPodSources] = append(into[setPodSources], vethElement(e.HostVeth, e.IP))
	}
}

// awaitingElements adds the dispatch elements of pod key awaiting its ADD
// (podInfo.awaiting), whose groups' chains are in and out, by set name, as
// groupChain makes them.
func awaitingElements(key, in, out string, into map[string][]spec.NFTElement) {
	jumpElements(spec.HostVethName(key), in, out, into)
}

// jumpElements adds the dispatch map elements of the pod of host veth
// veth to the chains of its ingress and egress groups ("": none).
func jumpElements(veth, in, out string, into map[string][]spec.NFTElement) {
	if in != "" {
		into[mapIngressPods] = append(into[mapIngressPods], jumpElement(veth, in))
	}
	if out != "" {
		into[mapEgressPods] = append(into[mapEgressPods], jumpElement(veth, out))
	}
}
