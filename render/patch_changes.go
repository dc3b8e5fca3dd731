package render

import (
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/spec"
)

// What changed since the last document (patch.go): the pods whose
// object, allocation, holding back or departing address changed, and
// whether each changed pod is the same policy peer it was.

// scanLookAhead is how far on in the last scan's list (podObjs) a scan
// looks for an object not at its place: past pods gone since.
const scanLookAhead = 4

// podChange is a changed pod's inputs now: nil when it has none.
type podChange struct {
	obj   *corev1.Pod
	alloc *spec.Allocation
}

// changedPods finds the pods whose object, allocation, holding back or
// departing address changed since the last document, and tells whether
// in's pods were the last scan's list (podObjs). ok, the last result, is
// false when in lists a pod or an allocation twice, or more than
// maxPatchedPods changed.
func (b *patchBase) changedPods(in Inputs) (map[string]*podChange, bool, bool) {
	b.gen++
	gen := b.gen
	changes := map[string]*podChange{}
	note := func(key string) *podChange {
		c := changes[key]
		if c == nil {
			c = &podChange{}
			changes[key] = c
		}
		return c
	}
	// A pod's key is looked up from a buffer, not a new string: the loops
	// visit every pod of the cluster on every CNI request; only a changed
	// pod's key is made a string.
	var buf []byte
	keyOf := func(ns, name string) []byte {
		buf = append(append(append(buf[:0], ns...), '/'), name...)
		return buf
	}
	// The cluster's pods are most often the very objects of the last scan
	// (an ADD or DEL changes an allocation): one comparison of the lists
	// then stands for a lookup of each, whose cost grew with the cluster
	// (0.3 ms at 5,000 pods).
	podsSame := b.podObjs != nil && slices.Equal(in.Pods, b.podObjs)
	objects := b.objects
	if !podsSame {
		var ok bool
		if objects, ok = b.scanPods(in, gen, note, keyOf, changes); !ok {
			return nil, false, false
		}
	}
	allocs, ok := b.scanAllocations(in, gen, note, keyOf, changes)
	if !ok {
		return nil, false, false
	}
	if objects != b.objects || allocs != b.allocs {
		for key, pp := range b.pods {
			if pp.obj != nil && !podsSame && pp.objGen != gen || pp.alloc != nil && pp.allocGen != gen {
				note(key) // gone
			}
		}
	}
	noteDiffering(in.PeersHeldBack, b.heldBack, note)
	noteDiffering(in.PeersDeparting, b.departing, note)
	if len(changes) > maxPatchedPods {
		return nil, false, false
	}
	// What did not change is what the last document had.
	for key, c := range changes {
		if pp := b.pods[key]; pp != nil {
			if c.obj == nil && pp.obj != nil && (podsSame || pp.objGen == gen) {
				c.obj = pp.obj
			}
			if c.alloc == nil && pp.alloc != nil && pp.allocGen == gen {
				c.alloc = pp.alloc
			}
		}
	}
	return changes, podsSame, true
}

// scanPods looks up each pod of in in the base, notes the new and the
// changed ones, and marks every one seen in scan gen; it returns how many
// the base knew. ok is false when in lists a pod twice or more than
// maxPatchedPods changed. A scan that saw every pod once is podObjs.
//
// The inputs' list is most often the last scan's, in the same order, with
// a few objects new, added or gone: the status of some pod somewhere in
// the cluster was written. The scan walks the two lists side by side, and
// an object at its place in the last one is its pod's without a lookup by
// key, which cost 0.45 ms at 5,000 pods (BenchmarkRenderCache,
// cached-add-del-held-status). The walk needs no order of the list: a pod
// new since, or gone, or its new object moves the last list's place by
// one or not at all, and any other order only finds fewer in place.
func (b *patchBase) scanPods(in Inputs, gen uint64, note func(string) *podChange, keyOf func(ns, name string) []byte,
	changes map[string]*podChange) (objects int, ok bool) {
	last, lastPods := b.podObjs, b.podEntries
	entries := make([]*patchPod, len(in.Pods))
	j := 0 // the place in the last list
	for i, p := range in.Pods {
		if j < len(last) && last[j] != p {
			// Pods gone since: the object a few places on.
			j = placeAhead(j, len(last), func(k int) bool { return last[k] == p })
		}
		if j < len(last) && last[j] == p {
			// The object the last scan saw here; its pod's base entry is
			// the one found then, while no update dropped it.
			pp := lastPods[j]
			j++
			if pp != nil && !pp.dropped && pp.obj == p {
				if pp.objGen == gen {
					return 0, false
				}
				pp.objGen = gen
				objects++
				entries[i] = pp
				continue
			}
		} else if j < len(last) && last[j].Namespace == p.Namespace && last[j].Name == p.Name {
			j++ // a new object of the pod at this place
		}
		key := keyOf(p.Namespace, p.Name)
		switch pp := b.pods[string(key)]; {
		case pp == nil || pp.obj == nil:
			c := note(string(key))
			if c.obj != nil {
				return 0, false
			}
			c.obj = p
		case pp.objGen == gen:
			return 0, false
		default:
			pp.objGen = gen
			objects++
			switch {
			case pp.obj == p:
				entries[i] = pp
			case statusOnly(pp, p):
				pp.obj = p // the document is the same
				entries[i] = pp
			default:
				note(string(key)).obj = p
			}
		}
		if len(changes) > maxPatchedPods {
			return 0, false
		}
	}
	b.podObjs, b.podEntries = slices.Clone(in.Pods), entries
	return objects, true
}

// scanAllocations is scanPods for the allocations: it notes the new and
// the changed ones, marks every one seen in scan gen, and returns how many
// the base knew. A CNI request's list is the last one with its pod's
// allocation in or out, so the scan walks the two side by side as
// scanPods does, and an allocation of the pod the last scan saw at its
// place is compared without a lookup by key: the lookups of every
// allocation were most of a patch's scan at 250 pods.
func (b *patchBase) scanAllocations(in Inputs, gen uint64, note func(string) *podChange, keyOf func(ns, name string) []byte,
	changes map[string]*podChange) (allocs int, ok bool) {
	last := b.allocEntries
	entries := make([]*patchPod, len(in.Allocations))
	samePod := func(pp *patchPod, a *spec.Allocation) bool {
		return pp != nil && !pp.dropped && pp.alloc != nil && (pp.alloc == a ||
			pp.alloc.Metadata.Name == a.Metadata.Name && pp.alloc.Metadata.Namespace == a.Metadata.Namespace)
	}
	j := 0 // the place in the last list
	for i, a := range in.Allocations {
		if j < len(last) && !samePod(last[j], a) {
			// Allocations gone since: the pod's a few places on.
			j = placeAhead(j, len(last), func(k int) bool { return samePod(last[k], a) })
		}
		var pp *patchPod // the base entry of a's pod
		if j < len(last) && samePod(last[j], a) {
			pp = last[j] // the last scan's at this place: no lookup
			j++
		} else {
			pp = b.pods[string(keyOf(a.Metadata.Namespace, a.Metadata.Name))]
		}
		switch {
		case pp == nil || pp.alloc == nil:
			c := note(string(keyOf(a.Metadata.Namespace, a.Metadata.Name)))
			if c.alloc != nil {
				return 0, false
			}
			c.alloc = a
		case pp.allocGen == gen:
			return 0, false
		default:
			pp.allocGen = gen
			allocs++
			entries[i] = pp
			switch {
			case pp.alloc == a:
			case *pp.alloc == *a:
				// The same allocation, a new record of it (the store
				// decoded it again): kept, so that the next scan finds
				// it by pointer.
				pp.alloc = a
			default:
				note(string(keyOf(a.Metadata.Namespace, a.Metadata.Name))).alloc = a
			}
		}
		if len(changes) > maxPatchedPods {
			return 0, false
		}
	}
	b.allocEntries = entries
	return allocs, true
}

// placeAhead returns the first place k after j, at most scanLookAhead
// on, of a list of n where at(k) holds, else j.
func placeAhead(j, n int, at func(k int) bool) int {
	for k := j + 1; k <= min(j+scanLookAhead, n-1); k++ {
		if at(k) {
			return k
		}
	}
	return j
}

// samePeer tells whether pod key is what it was to the policies as a
// peer: none before and after, or an object the same to them
// (samePeerObject) with the same address, pinned alike (the DEL of an
// admitted pod whose address departs, Inputs.PeersDeparting). Then no
// policy's rules change.
func (b *patchBase) samePeer(r *renderer, key string) bool {
	var was, is netip.Addr
	var wasPinned, isPinned bool
	var wasObj, isObj *corev1.Pod
	if before := b.pods[key]; before != nil {
		was, wasPinned, wasObj = before.peer, before.pinned, before.obj
	}
	if after := r.byKey[key]; after != nil && after.pod != nil {
		is, isPinned, isObj = r.peerIP(after), peerPinned(after), after.pod
	}
	if !was.IsValid() && !is.IsValid() {
		return true
	}
	return was == is && wasPinned == isPinned && samePeerObject(wasObj, isObj)
}

// statusOnly tells whether p, a new object of a pod on another node
// (pp), changes nothing of the document: such a pod has no part in it but
// as a policy peer, by its status's address and what samePeerObject
// compares. A scan takes it in place rather than as a changed pod, of
// which a patch takes at most maxPatchedPods: in a large cluster more
// status writes than that come between two CNI requests. Nothing checks
// such a pod after this: a field of a pod elsewhere that the render comes
// to read (status.podIPs for two stacks, say) must be compared here or in
// samePeerObject.
func statusOnly(pp *patchPod, p *corev1.Pod) bool {
	return pp.obj != nil && !pp.local && pp.alloc == nil && p.Status.PodIP == pp.obj.Status.PodIP && samePeerObject(pp.obj, p)
}

// samePeerObject tells whether two objects of one pod are the same to the
// policies that have it as a peer, its address aside (samePeer compares
// the address the render derived, from the allocation or the status): the
// same object, or one whose every field a peer's resolution reads is the
// same (its identity, labels, container ports for named ports, node,
// phase, and what makes a local pod await its ADD). A field that policy
// resolution comes to read (policy.go, policy_nft.go) must be compared
// here too: the patch's peers (patchBase.peers) keep the objects of the
// last whole render. The kubelet and
// controllers write pods' status all the time (conditions, container
// states): in a busy cluster nearly every CNI request found some peer's
// object new, and rendered the node whole rather than patching it: 6.9 ms
// instead of 0.4 at 500 pods and 1,000 policies (BenchmarkRenderCache,
// cached-add-del-held-status).
func samePeerObject(a, b *corev1.Pod) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.Namespace == b.Namespace && a.Name == b.Name && a.UID == b.UID && maps.Equal(a.Labels, b.Labels) &&
		a.Spec.NodeName == b.Spec.NodeName && a.Spec.HostNetwork == b.Spec.HostNetwork && terminated(a) == terminated(b) &&
		(a.DeletionTimestamp == nil) == (b.DeletionTimestamp == nil) && WantsExclusiveENI(a) == WantsExclusiveENI(b) &&
		slices.EqualFunc(a.Spec.Containers, b.Spec.Containers, func(x, y corev1.Container) bool {
			return slices.Equal(x.Ports, y.Ports)
		})
}

// update makes the base the patched document's: the changed pods as r
// rendered them, with their problems.

// noteDiffering notes each key whose value differs between a and b, a
// key missing from one counting as its zero value.
func noteDiffering[V comparable](a, b map[string]V, note func(key string) *podChange) {
	for key, v := range a {
		if v != b[key] {
			note(key)
		}
	}
	for key, v := range b {
		if v != a[key] {
			note(key)
		}
	}
}
