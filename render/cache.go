package render

import (
	"maps"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/terway-reconciler/terway/spec"
)

// Cache renders like Render, but keeps the expensive parts of its last
// render and reuses each one whose inputs did not change:
//
//   - each policy parsed (selectors, ports, problems), while the policy
//     object is the same;
//   - each policy resolved against the pods (its targets, its rules' peer
//     addresses and egress named ports), until a pod or namespace it may
//     depend on changes;
//   - each policy group's chain and sets (elements built and sorted once),
//     while its policies' rules resolve to the same addresses.
//
// A change finds what it touches through indexes rather than by looking at
// every policy: policies by their namespace (their targets and same
// namespace peers), policies by the namespaces their namespaceSelector
// peers cover, and the few policies whose egress named ports are resolved
// against every pod. A changed pod (labels, address, whether its network
// rendered, whether it awaits its ADD) marks only the policies whose
// selectors match it before or after, in those lists: as a target, or as
// a peer of a policy whose rules are resolved (mayTouch).
//
//   - each local pod's datapath (fragments.go), while its object, its
//     allocation, its ENI and the node's configuration are the same;
//   - the dispatch sets' sorted elements (the verdict maps, the hairpin
//     and source validation sets), while the render builds the same ones.
//
// The document is the same, byte for byte, as Render's for the same inputs
// (TestCacheMatchesRender checks it after every one of a long random
// sequence of changes). Inputs are read-only, as in Render: an object that
// changes is a new object (informers and the file source replace, never
// modify), which is how the cache tells a changed object. Documents
// returned share their unchanged sets' elements and chains, and their
// unchanged pods' entries, with each other and with the cache: callers
// must not modify them.
//
// A Cache is safe for concurrent use; renders run one at a time.
type Cache struct {
	mu sync.Mutex

	primed bool
	cfg    Config
	// nsLabels are the labels selectors saw on each namespace last time.
	nsLabels map[string]labels.Set
	// entries are the policies of the last render, by namespace/name.
	entries map[string]*policyEntry
	// views are what each pod looked like to policy at the last render.
	views map[string]podView

	// The indexes: which policies a change of a pod of a namespace may
	// touch. Rebuilt when the policies or the namespaces change.
	indexStale bool
	byNS       map[string][]*policyEntry // policies of the namespace
	// byLabel and byNoLabel split byNS by what a pod must have to be a
	// target: one of a label's values (the first such requirement of the
	// policy's podSelector), or nothing in particular (selecting).
	byLabel   map[nsLabel][]*policyEntry
	byNoLabel map[string][]*policyEntry
	peerNS    map[string][]*policyEntry // policies with a namespaceSelector peer covering it
	everyPod  []*policyEntry            // policies that depend on every pod
	// selectedBy memoises selecting by pod object, for the index it was
	// found in: cleared with it. A pod's ADD asks it twice (the pod
	// awaiting, then set up) of a pod object the renders of its awaiting
	// state asked already.
	selectedBy map[*corev1.Pod][]*policyEntry

	groups   map[string]*groupEntry // by group key
	used     map[string]bool        // group keys of the render under way
	versions uint64                 // the last version handed out

	// fragments are local pods' datapaths by pod key (fragments.go), made
	// in fragmentEnv; usedFragments are the keys of the render under way.
	fragments     map[string]*podFragment
	fragmentEnv   fragmentEnv
	usedFragments map[string]bool
	// dispatch are the dispatch sets' last elements, by set name.
	dispatch map[string]dispatchEntry

	// base is the last document and what patching it needs (patch.go);
	// nil when the last render cannot be patched. oneShot caches (Render's
	// own) keep none. policiesTwice is set when the last render's policies
	// named one object twice.
	base          *patchBase
	oneShot       bool
	policiesTwice bool

	stats CacheStats
}

// CacheStats counts what the last render recomputed and what it reused.
type CacheStats struct {
	Policies         int // policies in the render
	PoliciesParsed   int // parsed again: new or changed objects
	PoliciesResolved int // resolved again against the pods
	Groups           int // policy groups in the render
	GroupsRendered   int // groups whose chain and sets were built again
	// Patched tells that the render patched the last document (patch.go),
	// and PodsPatched how many pods' parts it changed.
	Patched     bool
	PodsPatched int
	// PodListKept tells that the patch found the inputs' pods to be the
	// very objects of the last scan, and looked none of them up.
	PodListKept bool
}

// policyEntry is one policy in the cache.
type policyEntry struct {
	parsed *parsedPolicy
	res    *resolution // nil: not resolved yet
	// dirty is set when a change may have changed res.
	dirty bool
	// version changes whenever res's rules change: groups made with
	// another version are rendered again.
	version uint64
	// nsPeers tells whether a peer has a namespaceSelector.
	nsPeers bool
}

// podView is what policies see of a pod: its object (labels, ports), its
// address as a peer and whether it is pinned, and whether it is a target
// (local, network rendered) or awaiting its ADD here (podInfo.awaiting).
type podView struct {
	pod      *corev1.Pod
	peerIP   netip.Addr
	pinned   bool // peerPinned: how its address merges with others
	target   bool
	awaiting bool
}

// same tells whether a pod is the same to every policy in both views: a
// new object of it whose status alone was written is (samePeerObject).
func (v podView) same(o podView) bool {
	return v.peerIP == o.peerIP && v.pinned == o.pinned && v.target == o.target && v.awaiting == o.awaiting &&
		samePeerObject(v.pod, o.pod)
}

// groupEntry is a rendered group and the versions of its policies then.
type groupEntry struct {
	versions []uint64
	out      *groupOutput
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{} }

// Render renders the node's document from in, as Render does.
func (k *Cache) Render(in Inputs) (*spec.NodeState, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return render(in, k, nil)
}

// RenderScoped renders the node's document from in for a request about
// pods (namespace/name): a CNI ADD's, whose plan is scoped to them
// (engine.PlanOptions.Pods). When it patches the last document, its
// kernel item sections (links, addresses, routes, rules, neighbours,
// sysctls, qdiscs) hold only the node's own items and those pods', and
// the cache splices the other pods' changes to them later, several at
// once (patch_scoped.go); its other sections are always whole. A plan
// scoped to pods, or to some of them, makes the same operations of either
// document; a plan of any other pod must not be made from it (that pod's
// items may be missing, and would plan as deletions).
func (k *Cache) RenderScoped(in Inputs, pods []string) (*spec.NodeState, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return render(in, k, pods)
}

// Stats returns the counts of the last render.
func (k *Cache) Stats() CacheStats {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.stats
}

// reset forgets everything: for the first render and a new configuration.
func (k *Cache) reset(cfg Config) {
	k.primed, k.cfg, k.nsLabels, k.views = true, cfg, nil, nil
	k.entries, k.groups, k.indexStale = map[string]*policyEntry{}, map[string]*groupEntry{}, true
}

func (k *Cache) nextVersion() uint64 {
	k.versions++
	return k.versions
}

// policies brings every policy of this render up to date and returns
// their entries in the order given (name order), resolved.
func (k *Cache) policies(c *policyCompiler, nps []*networkingv1.NetworkPolicy) []*policyEntry {
	r := c.r
	if !k.primed || k.cfg != r.cfg {
		k.reset(r.cfg)
	}
	k.stats = CacheStats{Policies: len(nps)}
	k.policiesTwice = false
	out := make([]*policyEntry, 0, len(nps))
	seen := make(map[string]bool, len(nps))
	for _, np := range nps {
		key := np.Namespace + "/" + np.Name
		if seen[key] {
			// A second object of one name (files may hold both): it
			// renders as Render always did, but is never kept.
			k.policiesTwice = true
			k.stats.PoliciesParsed++
			out = append(out, newEntry(np))
			continue
		}
		seen[key] = true
		e := k.entries[key]
		if e == nil || e.parsed.np != np {
			k.stats.PoliciesParsed++
			e = newEntry(np)
			k.entries[key] = e
			k.indexStale = true
		}
		out = append(out, e)
	}
	for key := range k.entries {
		if !seen[key] {
			delete(k.entries, key)
			k.indexStale = true
		}
	}
	if !maps.EqualFunc(k.nsLabels, c.nsLabels, labels.Equals) {
		// Rare: a namespace's labels changed, or one came or went. Only
		// namespaceSelector peers read them.
		for _, e := range k.entries {
			e.dirty = e.dirty || e.nsPeers
		}
		k.nsLabels = c.nsLabels
		k.indexStale = true
	}
	if k.indexStale {
		k.rebuildIndex()
	}
	k.comparePods(c)
	for _, e := range out {
		if e.res != nil && !e.dirty {
			continue
		}
		k.stats.PoliciesResolved++
		res := &resolution{}
		if e.parsed.podSel != nil {
			res = c.resolve(e.parsed)
		}
		if e.res == nil || !res.sameRules(e.res) {
			e.version = k.nextVersion()
		}
		e.res, e.dirty = res, false
	}
	k.used = map[string]bool{}
	return out
}

func newEntry(np *networkingv1.NetworkPolicy) *policyEntry {
	e := &policyEntry{parsed: parsePolicy(np)}
	for _, rule := range slices.Concat(e.parsed.ingress, e.parsed.egress) {
		for _, peer := range rule.peers {
			e.nsPeers = e.nsPeers || peer.nsSel != nil
		}
	}
	return e
}

// rebuildIndex indexes the entries by the namespaces whose pods they
// select.
func (k *Cache) rebuildIndex() {
	k.byNS, k.peerNS, k.everyPod, k.selectedBy = map[string][]*policyEntry{}, map[string][]*policyEntry{}, nil, nil
	k.byLabel, k.byNoLabel = map[nsLabel][]*policyEntry{}, map[string][]*policyEntry{}
	for _, e := range k.entries {
		pp := e.parsed
		if pp.podSel == nil {
			continue // selects nothing whatever the pods
		}
		k.byNS[pp.ns] = append(k.byNS[pp.ns], e)
		if key, values := requiredLabel(pp.podSel); values != nil {
			for _, v := range values {
				at := nsLabel{pp.ns, key, v}
				k.byLabel[at] = append(k.byLabel[at], e)
			}
		} else {
			k.byNoLabel[pp.ns] = append(k.byNoLabel[pp.ns], e)
		}
		if pp.everyPod {
			k.everyPod = append(k.everyPod, e)
		}
		if !e.nsPeers {
			continue
		}
		for ns, set := range k.nsLabels {
			if coversNamespace(pp, ns, set) {
				k.peerNS[ns] = append(k.peerNS[ns], e)
			}
		}
	}
	k.indexStale = false
}

// nsLabel is a label's value in a namespace (Cache.byLabel).
type nsLabel struct{ ns, key, value string }

// requiredLabel returns a label key of sel's first requirement that a pod
// must have with one of the values returned (=, == or in), or no values
// when sel has no such requirement. A pod has one value per key, so a
// policy listed under each of them is found once.
func requiredLabel(sel labels.Selector) (string, []string) {
	reqs, selectable := sel.Requirements()
	if !selectable {
		return "", nil
	}
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			if values := r.Values().UnsortedList(); len(values) > 0 {
				return r.Key(), values
			}
		}
	}
	return "", nil
}

// coversNamespace tells whether a namespaceSelector peer of the policy
// looks for pods in namespace ns.
func coversNamespace(pp *parsedPolicy, ns string, set labels.Set) bool {
	for _, rule := range slices.Concat(pp.ingress, pp.egress) {
		for _, peer := range rule.peers {
			if peer.nsSel != nil && peer.nsSel.Matches(set) {
				return true
			}
		}
	}
	return false
}

// comparePods compares every pod's view with the last render's and marks
// the policies a changed pod may touch.
func (k *Cache) comparePods(c *policyCompiler) {
	views := make(map[string]podView, len(k.views))
	for _, p := range c.r.pods {
		if p.pod != nil {
			views[p.key] = podView{pod: p.pod, peerIP: c.peerIP(p), pinned: peerPinned(p), target: p.entry != nil, awaiting: p.awaiting()}
		}
	}
	for key, v := range views {
		if old, ok := k.views[key]; !ok || !old.same(v) {
			k.podChanged(key, old, v)
		}
	}
	for key, old := range k.views {
		if _, ok := views[key]; !ok {
			k.podChanged(key, old, podView{})
		}
	}
	k.views = views
}

// podChanged marks the policies that select the pod, before or after its
// change, as targets or as peers.
func (k *Cache) podChanged(key string, before, after podView) {
	ns, _ := splitKey(key)
	check := func(e *policyEntry) {
		if e.dirty || e.res == nil {
			return
		}
		for _, v := range []podView{before, after} {
			if v.pod != nil && k.mayTouch(e.parsed, ns, v, e.res.rulesResolved) {
				e.dirty = true
				return
			}
		}
	}
	for _, list := range [][]*policyEntry{k.byNS[ns], k.peerNS[ns], k.everyPod} {
		for _, e := range list {
			check(e)
		}
	}
}

// mayTouch tells whether the policy selects the pod seen as v, of
// namespace ns, as a target (or an awaiting pod), or as a peer when its
// rules are resolved (peersResolved); or depends on every pod. A policy
// that selects no pod here has no rules resolved (resolution): which pods
// are its peers changes nothing of it until it selects one, and that is a
// change of a pod it selects. An admission step (a pod held back made a
// peer, agent/admission.go) so leaves alone the policies that only name
// the pod as a peer and select nothing here. (A patch that resolves a
// policy's rules for a pod it sets up leaves the entry dirty, and
// podChanged looks no further at dirty entries.)
func (k *Cache) mayTouch(pp *parsedPolicy, ns string, v podView, peersResolved bool) bool {
	if pp.everyPod {
		return true
	}
	set := labels.Set(v.pod.Labels)
	if (v.target || v.awaiting) && pp.ns == ns && pp.podSel.Matches(set) {
		return true
	}
	if !peersResolved || !v.peerIP.IsValid() {
		return false
	}
	for _, rule := range slices.Concat(pp.ingress, pp.egress) {
		for i := range rule.peers {
			peer := &rule.peers[i]
			if peer.covers(pp, ns, k.nsLabels) && peer.podSel.Matches(set) {
				return true
			}
		}
	}
	return false
}

// group returns the group's chain and sets: the cached ones when its
// policies resolve as when they were made, else newly rendered ones.
func (k *Cache) group(g *policyGroup, render func() *groupOutput) *groupOutput {
	k.stats.Groups++
	versions := make([]uint64, len(g.policies))
	for i, pe := range g.policies {
		versions[i] = pe.version
	}
	k.used[g.key] = true
	if e := k.groups[g.key]; e != nil && slices.Equal(e.versions, versions) {
		return e.out
	}
	k.stats.GroupsRendered++
	out := render()
	k.groups[g.key] = &groupEntry{versions: versions, out: out}
	return out
}

// endGroups forgets the groups this render did not use.
func (k *Cache) endGroups() {
	for key := range k.groups {
		if !k.used[key] {
			delete(k.groups, key)
		}
	}
}

// CopyFrom makes k a copy of from, to render from where from's last
// render left off: its parsed and resolved policies, groups, fragments and
// dispatch sets. The parts are shared where nothing modifies them (parsed
// policies, resolutions, rendered groups and fragments) and copied where
// renders do (each policy's entry); k keeps no document to patch, so its
// next render is whole. The agent's admission renders its steps ahead with
// a cache of its own (agent/renderviews.go), which was otherwise a step
// behind: it resolved each admitted pod's policies again after the main
// cache had.
func (k *Cache) CopyFrom(from *Cache) {
	if k == from {
		return
	}
	from.mu.Lock()
	primed, cfg, nsLabels, versions, twice := from.primed, from.cfg, from.nsLabels, from.versions, from.policiesTwice
	entries := make(map[string]*policyEntry, len(from.entries))
	for key, e := range from.entries {
		c := *e
		entries[key] = &c
	}
	views, groups := maps.Clone(from.views), maps.Clone(from.groups)
	fragments, env, dispatch := maps.Clone(from.fragments), from.fragmentEnv, maps.Clone(from.dispatch)
	from.mu.Unlock()

	k.mu.Lock()
	defer k.mu.Unlock()
	k.primed, k.cfg, k.nsLabels, k.versions, k.policiesTwice = primed, cfg, nsLabels, versions, twice
	k.entries, k.views, k.groups = entries, views, groups
	k.indexStale, k.byNS, k.peerNS, k.everyPod, k.selectedBy = true, nil, nil, nil, nil
	k.byLabel, k.byNoLabel = nil, nil
	k.fragments, k.fragmentEnv, k.dispatch = fragments, env, dispatch
	k.base, k.stats = nil, CacheStats{}
}
