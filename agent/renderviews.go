package agent

import (
	"slices"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/terway-reconciler/terway/render"
)

// Which policies a CNI request renders with, and with which cache.
//
// A render compiles whatever changed in its inputs since the last render
// of its cache. A CNI ADD or DEL renders the whole node, so if it were the
// first to see a policy edit it would pay for compiling it: 20 to 50 ms of
// a pod's start for a 42,000-element change (issue 12), and as long again
// waiting for a resync that holds the cache while it compiles the same
// edit. Compiling policy is the resync's work. So:
//
//   - CNI requests render with the pinned policies: those of the last
//     document a resync planned nftables from, which the kernel has or is
//     about to have. Pods, allocations, namespaces and ENIs are the
//     newest, as before.
//   - A resync renders the newest inputs. While its policies are the
//     pinned ones it shares the CNI's cache (main), as one cache did
//     before: each pod change is compiled once. When they differ it renders
//     with the spare cache, and CNI requests keep theirs meanwhile.
//   - When a resync has planned nftables (under the agent's lock, before
//     its commit), its document's policies are pinned, and if it rendered
//     them with the spare, the caches change places: from then on CNI
//     requests render them, already compiled.
//   - One exception: a pod that a policy edited since the pin may involve
//     (select as a target, or name as a peer) starts as the policies it
//     starts under say: a policy created before its pod is enforced from
//     the pod's first packet, and a peer an edit no longer admits is not
//     admitted. Its request renders the newest policies, with the main
//     cache (which lacks only the edit), and moves the pin to them. A pod
//     no edit involves has the same part of the document either way.
//
// The pin only moves forward: a resync whose inputs were read before the
// pin last moved does not move it back (seq). So CNI requests never
// render policies older than what any commit wrote before them: the
// resync's commits come after their pin, and CNI requests commit what they
// render. Otherwise a CNI request behind the kernel would take a policy
// group back to an older shape (a scoped plan takes a group whose shape
// changed whole, apply/nft/scoped_groups.go) until the next resync. They
// may be ahead of the kernel, between a pin and the commit that follows,
// as any render of the newest inputs was before; the resync converges.
// The spare keeps its last render, so that the next edit compiles from it
// incrementally; it costs the memory of a second node's compiled groups.
//
// A third cache is the peer admission's (admission.go). Admitting a pod
// resolves its address into every policy that selects it as a peer and
// renders those policies' groups again: tens of milliseconds at 1,000
// policies, which ADDs would wait for behind the agent's lock. So the
// admission renders its step ahead, off the lock, with its own cache, and
// when the step runs under the lock that cache changes places with main:
// the step's render, and the CNI requests' after it, find the admitted
// pods compiled and catch up only on the requests that came meanwhile.
// The cache that was main renders the next step ahead, first made a copy
// of main (forAdmission), so that it does not compile this step's pods
// again. A copy shares main's compiled groups and fragments, which no
// render modifies; it costs the memory of a third node's policy entries
// and maps, and of its own groups as they change.
type renderViews struct {
	mu    sync.Mutex
	main  *render.Cache
	spare *render.Cache
	admit *render.Cache
	// pinned says policies is set: until the first resync plans, CNI
	// requests render the newest policies too.
	pinned   bool
	policies []*networkingv1.NetworkPolicy
	// seq counts the pin's moves.
	seq uint64
	// reach holds the reach of the policies edited since the pin, by
	// object (policytouch.go).
	reach map[*networkingv1.NetworkPolicy]*policyReach
}

func newRenderViews() *renderViews {
	return &renderViews{main: render.NewCache(), spare: render.NewCache(), admit: render.NewCache(),
		reach: map[*networkingv1.NetworkPolicy]*policyReach{}}
}

// forAdmission returns the cache an admission renders its step ahead with
// (Agent.preRenderAdmission), the policies a CNI request renders now (the
// pinned ones, or the newest while none are), and the pin's moves. It
// moves no pin: a render ahead is thrown away, and the step's own render
// under the lock asks forCNI.
//
// The admission's cache is first made a copy of main (render.Cache.
// CopyFrom): otherwise it would be a step behind, and resolve the pods the
// last step admitted into their policies again, as main already did.
func (v *renderViews) forAdmission(newest []*networkingv1.NetworkPolicy) (*render.Cache, []*networkingv1.NetworkPolicy, uint64) {
	v.mu.Lock()
	main, admit, policies, seq := v.main, v.admit, v.policies, v.seq
	if !v.pinned {
		policies = newest
	}
	v.mu.Unlock()
	// Off the views' lock: the copy waits for a CNI render under way with
	// main. A swap of main meanwhile (a resync's pin) leaves a copy of a
	// cache that is as valid a start, if a less recent one.
	admit.CopyFrom(main)
	return admit, policies, seq
}

// admitting makes the cache an admission rendered ahead with the main
// one, and main the admission's, if the pin has not moved since that
// render (seq): then it rendered the policies CNI requests render. Called
// under the agent's lock, which CNI renders hold, so that no CNI render
// runs across the change.
func (v *renderViews) admitting(used *render.Cache, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if used != v.admit || seq != v.seq {
		return
	}
	v.main, v.admit = v.admit, v.main
}

// noPolicies tells whether no render would see a policy: none among the
// newest, and none pinned for CNI requests. A pod's peer role then
// changes nothing of any document, and an admission renders nothing ahead
// (the step itself looks at the policies it rendered).
func (v *renderViews) noPolicies(newest []*networkingv1.NetworkPolicy) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(newest) == 0 && len(v.policies) == 0
}

// pinSeq returns the count of the pin's moves: read before the inputs a
// resync renders, and handed back to planned.
func (v *renderViews) pinSeq() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seq
}

// forCNI returns the cache a CNI request for pods renders with, and the
// policies it renders: the pinned ones, unless none are pinned or a policy
// added, changed or removed since the pin may involve one of pods (select
// it as a target, or name it as a peer: policyReach); then the newest,
// which become the pinned ones. pods are looked up only when a policy
// changed since the pin. Called under the agent's lock, as every CNI
// render is.
func (v *renderViews) forCNI(newest []*networkingv1.NetworkPolicy, pods func() []podRef) (*render.Cache, []*networkingv1.NetworkPolicy) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.pinned {
		return v.main, newest
	}
	changed := changedPolicies(v.policies, newest)
	if len(changed) == 0 {
		return v.main, v.policies
	}
	refs := pods()
	for _, np := range changed {
		reach := v.reach[np]
		if reach == nil {
			reach = reachOf(np)
			v.reach[np] = reach
		}
		for _, p := range refs {
			if reach.involves(p) {
				// The main cache lacks only the edit; the spare may be
				// many pod changes behind, or busy with a resync.
				v.policies, v.seq, v.reach = newest, v.seq+1, map[*networkingv1.NetworkPolicy]*policyReach{}
				return v.main, newest
			}
		}
	}
	return v.main, v.policies
}

// forResync returns the cache a render of the newest policies uses: the
// main one when they are the pinned ones (or none are pinned). When they
// are not, it reads the reach of the edited policies (policyReach) for
// the CNI requests meanwhile.
func (v *renderViews) forResync(newest []*networkingv1.NetworkPolicy) *render.Cache {
	v.mu.Lock()
	if !v.pinned || samePolicies(v.policies, newest) {
		defer v.mu.Unlock()
		return v.main
	}
	changed := slices.DeleteFunc(changedPolicies(v.policies, newest), func(np *networkingv1.NetworkPolicy) bool { return v.reach[np] != nil })
	v.mu.Unlock()
	read := map[*networkingv1.NetworkPolicy]*policyReach{}
	for _, np := range changed {
		read[np] = reachOf(np)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for np, r := range read {
		if v.reach[np] == nil {
			v.reach[np] = r
		}
	}
	return v.spare
}

// planned pins the policies of a document a resync has planned nftables
// from, rendered with cache used from inputs read when the pin had moved
// seq times; a pin that moved since stays. Called under the agent's lock,
// which CNI renders hold, so that no CNI render runs across the change.
func (v *renderViews) planned(policies []*networkingv1.NetworkPolicy, used *render.Cache, seq uint64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if seq != v.seq || v.pinned && samePolicies(v.policies, policies) {
		return
	}
	v.pinned, v.policies, v.seq = true, policies, v.seq+1
	v.reach = map[*networkingv1.NetworkPolicy]*policyReach{}
	if used == v.spare {
		v.main, v.spare = v.spare, v.main
	}
}

// changedPolicies lists the policies of a and b that are not in both:
// both versions of a changed one. A CNI request asks it every time, so the
// common answer (the same objects in the same order) costs no map.
func changedPolicies(a, b []*networkingv1.NetworkPolicy) []*networkingv1.NetworkPolicy {
	if slices.Equal(a, b) {
		return nil
	}
	in := make(map[*networkingv1.NetworkPolicy]bool, len(a))
	for _, p := range a {
		in[p] = true
	}
	var out []*networkingv1.NetworkPolicy
	for _, p := range b {
		if !in[p] {
			out = append(out, p)
		}
		delete(in, p)
	}
	for _, p := range a {
		if in[p] {
			out = append(out, p)
		}
	}
	return out
}

// samePolicies tells whether a and b hold the same policy objects (a
// changed policy is a new object), in any order.
func samePolicies(a, b []*networkingv1.NetworkPolicy) bool { return len(changedPolicies(a, b)) == 0 }
