package render

import (
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/terway-reconciler/terway/spec"
)

// Patching the last document by the pods that changed.
//
// A Cache reuses each part of its last render, but a render still walks
// every pod, policy and group to put the document together: 4 to 5 ms at
// 250 pods and 1,000 policies, for a CNI ADD whose pod changes a handful of
// the document's items. When only some pods changed since the last render,
// and none of them changed as any policy's peer (a local pod is one only
// once admitted, Inputs.PeersHeldBack: so every ADD; and a DEL leaves its
// pod's address a peer until the agent withdraws it,
// Inputs.PeersDeparting), no policy's rules change: what each changed pod adds
// to the document is its own datapath, its own problems, its entry, its
// elements in the dispatch sets, and its membership of the policy groups
// of the policies that select it (a policy whose rules are not resolved,
// because it had no target and no pod awaiting its ADD, has them resolved
// then, against the peers the patch leaves as they are). The patch renders
// those for the changed pods alone and splices them into the last document
// at their places in canonical order (spec.NodeState.Spliced), in time that
// does not grow with the node's pods or policies, beyond a scan of the
// inputs for what changed.
//
// A pod's namespace without a Namespace object becomes a namespace
// selectors see (namespaceLabels) with its first pod, but selectors only
// look for peers there, and a patched pod is none, or was one before with
// an object the same to every policy (samePeerObject).
//
// In eni-multi-ip mode the eni section (the IPs in use, the idle pool,
// the ENIs to add or release) counts every pod: a patch computes it again
// from its record of the pods, without rendering them (eniNeeds). That
// walk of the records grows with the node's pods, as the scan of the
// inputs for what changed does.
//
// Anything else renders whole, as before: another configuration or Node,
// a changed policy, namespace or ENI, a pod whose peer role changed (with
// a policy in the inputs: without one, a peer role changes nothing), an
// exclusive ENI pod, a document where one pod's input decided another's
// (renderer.crossPod), a pod whose address or interface an unchanged pod
// holds, or an item whose key the document already has.
// TestCachePatchMatchesRender compares renders, patched or not, with
// renders from scratch.

// maxPatchedPods bounds the pods one patch changes: a batch of ADDs is a
// patch, a resync after a burst of changes renders whole.
const maxPatchedPods = 32

// patchBase is the cache's last document and what patching it needs of
// the render that made it, kept up to date by each patch.
type patchBase struct {
	// doc is the last document, but for the items of the pods in lag in
	// its kernel item sections, which scoped renders left to settle
	// (patch_scoped.go): by pod key, what they had there (nil: nothing).
	doc        *spec.NodeState
	lag        map[string]*spec.NodeState
	nodeItems  *spec.NodeState // doc's kernel items of no pod; nil: not made yet
	cfg        Config
	node       *corev1.Node
	podCIDR    netip.Prefix
	nodeIPs    []netip.Addr
	namespaces []*corev1.Namespace
	policies   []*networkingv1.NetworkPolicy
	enis       []spec.ENI
	heldBack   map[string]bool
	departing  map[string]DepartingPeer

	pods map[string]*patchPod // every pod of the render, by key
	// podObjs is the inputs' pod list of the last scan that saw every
	// pod once (changedPods), a copy; nil: none yet.
	podObjs []*corev1.Pod
	// podEntries are the base entries of podObjs' pods, by position, as
	// that scan found them: nil for a pod it found new or changed.
	podEntries []*patchPod
	// allocEntries are the base entries of the pods of the last scan's
	// allocations, by position (scanAllocations); nil where the scan
	// found none.
	allocEntries []*patchPod
	objects      int // pods with an object
	allocs       int // pods with an allocation
	groups       map[string]*patchGroup
	targets      map[*policyEntry]int // each policy's targets
	owners       map[netip.Addr]string
	slots        map[string]string // interface (netns and name) to the pod whose allocation holds it
	// peers are the pods that are policy peers, in a renderer of their
	// own (by namespace and in key order, as the render had them), with
	// the namespaces' labels: what resolving a policy's rules reads.
	peers    *renderer
	nsLabels map[string]labels.Set
	nsNames  []string
	// eniProblems are the document's problems of the eni section
	// (eni-multi-ip mode), which a patch makes again.
	eniProblems []spec.Problem
	// gen numbers the scans of the inputs (changedPods).
	gen uint64
}

// patchPod is one pod of the last document.
type patchPod struct {
	obj   *corev1.Pod      // the input object; nil: an allocation alone
	alloc *spec.Allocation // the input allocation; nil: none
	// objGen and allocGen are the last scan that found them in its inputs.
	objGen, allocGen uint64

	local    bool
	peer     netip.Addr      // its address as a policy peer; invalid: none
	pinned   bool            // peerPinned
	entry    *spec.Pod       // its entry in the document; nil: no network
	part     *spec.NodeState // what its datapath added (problems aside)
	problems []spec.Problem  // its own problems in the document
	groups   [2]string       // its policy groups' keys: ingress, egress
	awaits   bool            // groups are those it awaits (podInfo.awaiting)
	ownIP    netip.Addr      // the address it holds, when it holds one
	slot     string          // the interface its allocation holds
	// dropped says the base no longer has this entry (drop): a scan's
	// list of entries by position (podEntries) may still.
	dropped bool
}

// patchGroup is a policy group of the last document, its members
// (targets) and its awaiting pods (podInfo.awaiting): it is in the
// document while it has either.
type patchGroup struct {
	out      *groupOutput
	members  int
	awaiting int
}

// keepBase keeps what a patch of r's document needs, or nothing when the
// document cannot be patched.
func (k *Cache) keepBase(r *renderer, in Inputs) {
	k.base = nil
	if r.crossPod || k.policiesTwice || len(r.state.PodNFTables) > 0 || r.state.NFTables == nil {
		return
	}
	b := &patchBase{
		doc: r.state, cfg: r.cfg, node: in.Node, podCIDR: r.podCIDR, nodeIPs: r.nodeIPs,
		namespaces: slices.Clone(in.Namespaces), policies: slices.Clone(in.Policies), enis: slices.Clone(in.ENIs),
		heldBack: maps.Clone(in.PeersHeldBack), departing: maps.Clone(in.PeersDeparting),
		pods: make(map[string]*patchPod, len(r.pods)), groups: r.groups, targets: make(map[*policyEntry]int, len(r.entries)),
		owners: make(map[netip.Addr]string, len(r.ipOwners)), slots: map[string]string{},
	}
	for _, p := range r.state.Problems {
		if p.Kind == "Node" && p.Field == "eni" {
			b.eniProblems = append(b.eniProblems, p)
		}
	}
	problems := podProblems(r.state.Problems, func(string) bool { return true })
	for _, p := range r.pods {
		b.put(r, p, problems[p.key])
	}
	for _, e := range r.entries {
		b.targets[e] = len(e.res.targets)
	}
	b.peers = &renderer{byNS: map[string][]*podInfo{}}
	for _, p := range r.pods {
		if p.pod != nil && r.peerIP(p).IsValid() {
			ns, _ := splitKey(p.key)
			b.peers.pods = append(b.peers.pods, p)
			b.peers.byNS[ns] = append(b.peers.byNS[ns], p)
		}
	}
	b.nsLabels, b.nsNames = r.compiler.nsLabels, r.compiler.nsNames
	k.base = b
}

// put records pod p of r as the document has it, with its problems.
func (b *patchBase) put(r *renderer, p *podInfo, problems []spec.Problem) {
	pp := &patchPod{obj: p.pod, objGen: b.gen, allocGen: b.gen, local: p.local, entry: p.entry, part: p.part,
		problems: problems, groups: p.groups, awaits: p.awaiting()}
	if p.pod != nil {
		pp.peer, pp.pinned = r.peerIP(p), peerPinned(p)
		b.objects++
	}
	if a := p.alloc; a != nil {
		pp.alloc = a
		b.allocs++
		if a.Spec.Netns != "" {
			pp.slot = slotOf(a)
			b.slots[pp.slot] = p.key
		}
	}
	if p.ip.IsValid() && r.ipOwners[p.ip] == p {
		pp.ownIP = p.ip
		b.owners[p.ip] = p.key
	}
	b.pods[p.key] = pp
}

// drop forgets pod key, and the address and interface it held, unless
// another pod holds them now.
func (b *patchBase) drop(key string) {
	pp := b.pods[key]
	if pp == nil {
		return
	}
	if pp.obj != nil {
		b.objects--
	}
	if pp.alloc != nil {
		b.allocs--
	}
	if pp.slot != "" && b.slots[pp.slot] == key {
		delete(b.slots, pp.slot)
	}
	if pp.ownIP.IsValid() && b.owners[pp.ownIP] == key {
		delete(b.owners, pp.ownIP)
	}
	pp.dropped = true
	delete(b.pods, key)
}

// podProblems are the Pod problems among problems by pod key, of the
// keys want keeps, each pod's in canonical order.
func podProblems(problems []spec.Problem, want func(key string) bool) map[string][]spec.Problem {
	out := map[string][]spec.Problem{}
	for _, pr := range problems {
		if key := pr.Namespace + "/" + pr.Name; pr.Kind == "Pod" && want(key) {
			out[key] = append(out[key], pr)
		}
	}
	for key, ps := range out {
		slices.SortFunc(ps, spec.CompareProblems)
		out[key] = slices.Compact(ps)
	}
	return out
}

// sameInputsBut tells whether in has the last document's inputs but for
// its pods, allocations, pods held back and departing pods.
func (b *patchBase) sameInputsBut(in Inputs, cfg Config) bool {
	return cfg == b.cfg && in.Node == b.node && slices.Equal(in.Policies, b.policies) &&
		slices.Equal(in.Namespaces, b.namespaces) &&
		slices.EqualFunc(in.ENIs, b.enis, func(x, y spec.ENI) bool { return sameENI(&x, &y) })
}

// patch returns the document of in by patching the last one, when in
// changes only what a patch may change (see above).
// With scope (a scoped render's pods), the document's kernel item sections
// are scope's (patch_scoped.go).
func (k *Cache) patch(in Inputs, cfg Config, scope []string) (*spec.NodeState, bool) {
	b := k.base
	if b == nil || !b.sameInputsBut(in, cfg) {
		return nil, false
	}
	if scope == nil && !b.settle() {
		k.base = nil
		return nil, false
	}
	changes, podsSame, ok := b.changedPods(in)
	if !ok {
		return nil, false
	}
	if len(changes) == 0 {
		k.stats = CacheStats{Policies: len(in.Policies), Groups: len(b.groups), Patched: true, PodListKept: podsSame}
		return k.answer(b.doc, scope)
	}
	r, ok := b.renderChanged(k, in, cfg, changes)
	if !ok {
		return nil, false
	}
	p := b.policyChanges(k, r, changes)
	problems := podProblems(r.state.Problems, func(key string) bool { return changes[key] != nil })
	doc, ok := b.splice(r, changes, p, problems, scope != nil)
	if !ok {
		return nil, false
	}
	var was map[string]*spec.NodeState // the changed pods' parts in doc's kernel item sections
	if scope != nil {
		was = make(map[string]*spec.NodeState, len(changes))
		for key := range changes {
			was[key] = nil
			if pp := b.pods[key]; pp != nil {
				was[key] = pp.part
			}
		}
	}
	b.update(k, r, in, changes, p, problems, doc)
	if scope != nil {
		b.lagBehind(was)
	}
	if cfg.Mode == spec.PodModeENIMultiIP && !b.eniNeeds(r.enis, doc) {
		k.base = nil // updated already: the next render is whole
		return nil, false
	}
	if len(b.lag) > maxLag && !b.settle() {
		k.base = nil
		return nil, false
	}
	k.stats = CacheStats{Policies: len(in.Policies), Groups: len(b.groups), GroupsRendered: p.rendered,
		Patched: true, PodsPatched: len(changes), PodListKept: podsSame}
	return k.answer(b.doc, scope)
}

// answer is the document a patch hands out: doc in a header of its own,
// or with scope the scope's part of it (patch_scoped.go); doc is the
// base's, and whole when scope is nil. It is false when the base's
// lagging items would not splice, which each patch's check rules out:
// the caller then renders whole.
func (k *Cache) answer(doc *spec.NodeState, scope []string) (*spec.NodeState, bool) {
	b := k.base
	if scope != nil {
		if out, ok := b.scoped(doc, scope); ok {
			return out, true
		}
		if !b.settle() {
			k.base = nil
			return nil, false
		}
		doc = b.doc
	}
	out := *doc
	return &out, true
}

// renderChanged renders the changed pods alone, as a render of the whole
// node would, and checks that none of them is or was a peer and that no
// unchanged pod's part depends on them.
func (b *patchBase) renderChanged(k *Cache, in Inputs, cfg Config, changes map[string]*podChange) (*renderer, bool) {
	r := &renderer{
		cfg: cfg, cache: k, node: in.Node.Name, state: spec.New(in.Node.Name, cfg.Mode),
		byKey: map[string]*podInfo{}, byNS: map[string][]*podInfo{}, enis: map[string]*spec.ENI{},
		ipOwners: map[netip.Addr]*podInfo{}, heldBack: in.PeersHeldBack, podCIDR: b.podCIDR, nodeIPs: b.nodeIPs,
	}
	r.indexENIs(in.ENIs)
	var objs []*corev1.Pod
	var allocs []*spec.Allocation
	for _, c := range changes {
		if c.obj != nil {
			if WantsExclusiveENI(c.obj) {
				return nil, false
			}
			objs = append(objs, c.obj)
		}
		if c.alloc != nil {
			allocs = append(allocs, c.alloc)
		}
	}
	r.indexPods(objs, allocs)
	r.indexDeparting(in.PeersDeparting)
	for _, p := range r.pods {
		if p.alloc == nil {
			continue
		}
		if owner, held := b.slots[slotOf(p.alloc)]; held && changes[owner] == nil && p.alloc.Spec.Netns != "" {
			return nil, false
		}
		if owner, held := b.owners[p.ip]; held && changes[owner] == nil {
			return nil, false
		}
	}
	for _, p := range r.pods {
		if p.local {
			r.renderPod(p)
		}
	}
	if r.crossPod {
		return nil, false
	}
	// Without a policy a peer role changes nothing (an agent's admission
	// of its pods on a node without policies). The base's peers then go
	// stale, but only a patch's rules resolve against them, and there are
	// none until a policy comes, which renders whole.
	for key := range changes {
		if len(in.Policies) > 0 && !b.samePeer(r, key) {
			return nil, false
		}
	}
	return r, true
}

func (b *patchBase) update(k *Cache, r *renderer, in Inputs, changes map[string]*podChange, p *podPolicies,
	problems map[string][]spec.Problem, doc *spec.NodeState) {
	b.doc = doc
	b.heldBack, b.departing = maps.Clone(in.PeersHeldBack), maps.Clone(in.PeersDeparting)
	for key := range changes {
		b.drop(key)
	}
	for key := range changes {
		after := r.byKey[key]
		if after == nil || after.part == nil {
			delete(k.fragments, key) // as the next full render would
		}
		if after != nil {
			b.put(r, after, problems[key])
		}
	}
	for e, d := range p.targets {
		b.targets[e] += d
	}
	for gk := range p.pods() {
		g := b.groups[gk]
		if g == nil {
			g = p.created[gk]
			b.groups[gk] = g
		}
		g.members += p.members[gk]
		g.awaiting += p.awaiting[gk]
		if g.members+g.awaiting == 0 {
			delete(b.groups, gk)
		}
	}
}

// eniNeeds makes doc's eni section and its problems again from the pods
// as the patch left them (b.update ran), as renderENINeeds does in a
// render of the whole node; enis are the render's attached ENIs. It
// reports false when doc does not have the problems the base recorded.
func (b *patchBase) eniNeeds(enis map[string]*spec.ENI, doc *spec.NodeState) bool {
	r := &renderer{cfg: b.cfg, node: b.node.Name, state: spec.New(b.node.Name, b.cfg.Mode), enis: enis,
		ipOwners: make(map[netip.Addr]*podInfo, len(b.owners))}
	for key, pp := range b.pods {
		p := &podInfo{key: key, pod: pp.obj, alloc: pp.alloc, local: pp.local, entry: pp.entry}
		r.pods = append(r.pods, p)
		if pp.ownIP.IsValid() && b.owners[pp.ownIP] == key {
			r.ipOwners[pp.ownIP] = p
		}
	}
	r.renderENINeeds()
	r.state.CanonicalizeOrder()
	problems, ok := doc.Spliced(&spec.NodeState{Problems: b.eniProblems}, &spec.NodeState{Problems: r.state.Problems})
	if !ok {
		return false
	}
	doc.Problems, doc.ENI, b.eniProblems = problems.Problems, r.state.ENI, r.state.Problems
	return true
}
