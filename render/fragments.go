package render

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/spec"
)

// Per-pod datapath fragments, kept by the Cache.
//
// A local pod's datapath (its veth pair, addresses, routes, neighbours,
// rules, qdiscs, and the problems of its annotations) depends on the pod
// object, its allocation, the ENI its address is on, and the node's
// configuration, pod CIDR and addresses; nothing else. A render keeps what
// each pod added to the document, and the next render adds the same again
// while those inputs are the same: at 250 pods, rendering every pod's
// datapath on every CNI ADD was a third of the render of a node without
// policies.

// fragmentEnv is the node-wide part of a fragment's inputs.
type fragmentEnv struct {
	cfg     Config
	node    string
	podCIDR netip.Prefix
	nodeIPs []netip.Addr
}

func (e *fragmentEnv) same(o *fragmentEnv) bool {
	return e.cfg == o.cfg && e.node == o.node && e.podCIDR == o.podCIDR && slices.Equal(e.nodeIPs, o.nodeIPs)
}

// podFragment is what one pod's datapath added to the document, and the
// inputs it was made from.
type podFragment struct {
	pod   *corev1.Pod // objects are replaced, never modified (see Cache)
	alloc spec.Allocation
	ip    netip.Addr
	eni   *spec.ENI // nil when the allocation names none we have; a copy once kept

	entry *spec.Pod // nil: the pod's datapath was refused (problems say why)
	part  spec.NodeState
}

// fragmentInputs is podFragment's inputs for p in this render; its ENI is
// the render's own until the fragment is kept.
func (r *renderer) fragmentInputs(p *podInfo) podFragment {
	return podFragment{pod: p.pod, alloc: *p.alloc, ip: p.ip, eni: r.enis[p.alloc.Spec.ENI]}
}

func (f *podFragment) sameInputs(o *podFragment) bool {
	if f.pod != o.pod || f.alloc != o.alloc || f.ip != o.ip || (f.eni == nil) != (o.eni == nil) {
		return false
	}
	return f.eni == nil || sameENI(f.eni, o.eni)
}

// sameENI tells whether two ENIs render the same.
func sameENI(a, b *spec.ENI) bool {
	return a.Metadata == b.Metadata && a.Spec.MAC == b.Spec.MAC && a.Spec.PrimaryIP == b.Spec.PrimaryIP &&
		a.Spec.VSwitchCIDR == b.Spec.VSwitchCIDR && a.Spec.Gateway == b.Spec.Gateway &&
		a.Spec.DeviceIndex == b.Spec.DeviceIndex && a.Spec.Exclusive == b.Spec.Exclusive &&
		slices.Equal(a.Spec.SecondaryIPs, b.Spec.SecondaryIPs)
}

// stateLens are the lengths of the document's lists a pod's datapath
// appends to.
type stateLens struct{ links, addrs, routes, rules, neighbors, sysctls, tc, problems int }

func lensOf(s *spec.NodeState) stateLens {
	return stateLens{len(s.Links), len(s.Addresses), len(s.Routes), len(s.Rules), len(s.Neighbors), len(s.Sysctls), len(s.TC), len(s.Problems)}
}

// since is what s gained after l: its own copies of the lists' tails.
func since(s *spec.NodeState, l stateLens) spec.NodeState {
	return spec.NodeState{
		Links: slices.Clone(s.Links[l.links:]), Addresses: slices.Clone(s.Addresses[l.addrs:]),
		Routes: slices.Clone(s.Routes[l.routes:]), Rules: slices.Clone(s.Rules[l.rules:]),
		Neighbors: slices.Clone(s.Neighbors[l.neighbors:]), Sysctls: slices.Clone(s.Sysctls[l.sysctls:]),
		TC: slices.Clone(s.TC[l.tc:]), Problems: slices.Clone(s.Problems[l.problems:]),
	}
}

// add appends a fragment's part to s.
func add(s *spec.NodeState, part *spec.NodeState) {
	s.Links = append(s.Links, part.Links...)
	s.Addresses = append(s.Addresses, part.Addresses...)
	s.Routes = append(s.Routes, part.Routes...)
	s.Rules = append(s.Rules, part.Rules...)
	s.Neighbors = append(s.Neighbors, part.Neighbors...)
	s.Sysctls = append(s.Sysctls, part.Sysctls...)
	s.TC = append(s.TC, part.TC...)
	s.Problems = append(s.Problems, part.Problems...)
}

// podDatapath renders p's datapath, or adds what the last render of the
// cache did for the same inputs.
func (r *renderer) podDatapath(p *podInfo) {
	k := r.cache
	if k == nil {
		r.renderPodDatapath(p)
		return
	}
	in := r.fragmentInputs(p)
	k.usedFragments[p.key] = true
	if f := k.fragments[p.key]; f != nil && f.sameInputs(&in) {
		add(r.state, &f.part)
		p.part = &f.part
		if f.entry != nil {
			e := *f.entry // policy adds its chains to the render's own copy
			p.entry = &e
		}
		return
	}
	before := lensOf(r.state)
	r.renderPodDatapath(p)
	in.part = since(r.state, before)
	p.part = &in.part
	if in.eni != nil {
		c := *in.eni
		c.Spec.SecondaryIPs = slices.Clone(c.Spec.SecondaryIPs)
		in.eni = &c
	}
	if p.entry != nil {
		e := *p.entry
		in.entry = &e
	}
	k.fragments[p.key] = &in
}

// beginFragments readies the fragments for a render in env, forgetting
// them all when the node's configuration, pod CIDR or addresses changed.
func (k *Cache) beginFragments(env fragmentEnv) {
	if k.fragments == nil || !k.fragmentEnv.same(&env) {
		k.fragments = map[string]*podFragment{}
	}
	env.nodeIPs = slices.Clone(env.nodeIPs)
	k.fragmentEnv = env
	k.usedFragments = map[string]bool{}
}

// endFragments forgets the fragments of pods this render did not render.
func (k *Cache) endFragments() {
	for key := range k.fragments {
		if !k.usedFragments[key] {
			delete(k.fragments, key)
		}
	}
}

// The dispatch sets (the ingress and egress verdict maps, the hairpin set
// and the source validation set) hold one element per pod and are built on
// every render, which costs little; sorting them costs more. The cache
// keeps each one's last elements as built and as sorted, and hands out the
// same sorted list while the built one is the same: a render that changed
// no pod's address, veth or policy group sorts none of them, and the nft
// side, which indexes a set's elements once per list, indexes none again.

// dispatchEntry is a dispatch set's last elements, as built and sorted.
type dispatchEntry struct {
	built, sorted []spec.NFTElement
}

// sortDispatch returns elems (built by this render, in pod or group order)
// in canonical order: the cache's last sorted list when they are the same
// as last time.
func (r *renderer) sortDispatch(name string, elems []spec.NFTElement) []spec.NFTElement {
	k := r.cache
	if k == nil {
		spec.SortElements(elems)
		return elems
	}
	if e, ok := k.dispatch[name]; ok && slices.EqualFunc(e.built, elems, sameElement) {
		return e.sorted
	}
	sorted := slices.Clone(elems)
	spec.SortElements(sorted)
	if k.dispatch == nil {
		k.dispatch = map[string]dispatchEntry{}
	}
	k.dispatch[name] = dispatchEntry{built: elems, sorted: sorted}
	return sorted
}

func sameElement(a, b spec.NFTElement) bool {
	if !slices.Equal(a.Key, b.Key) || (a.Verdict == nil) != (b.Verdict == nil) {
		return false
	}
	return a.Verdict == nil || a.Verdict.Kind == b.Verdict.Kind && a.Verdict.Chain == b.Verdict.Chain &&
		a.Verdict.Map == b.Verdict.Map && slices.Equal(a.Verdict.Selectors, b.Verdict.Selectors)
}
