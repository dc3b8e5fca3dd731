package agent

import (
	"slices"
	"sync"

	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/spec"
)

// pendingAdds are the CNI ADDs whose address is allocated (in the store)
// but whose set-up has not ended: Add allocates without the agent's lock
// (under allocMu, with its entry here in the same step) and takes the lock
// to set the pod up with the batch.
//
// A resync that took the lock in between would render such a pod from
// the store and write its part itself: its veth, and its elements in the
// node's shared sets (pod-sources, the peer sets). The ADD then writes the
// same elements, and whichever nftables commit comes second is refused as
// stale. A large policy change's commit, which takes seconds outside the
// lock, lost that race every time while ADDs kept coming, and after
// nftStaleMax refusals committed under the lock, where every ADD waited
// for it. So a resync renders without the pending pods and keeps away
// from their items, as from the pods written during its plan: each is its
// ADD's to write.
type pendingAdds struct {
	mu sync.Mutex
	by map[string]pendingEntry // by attachmentID
	// commits are the entries whose store commit is under way (Add), by
	// attachmentID: the store does not list them yet.
	commits map[string]uint64
	entries uint64
}

// pendingEntry is one ADD's allocation, numbered: a retried ADD of the
// same attachment, its first one refused or failed, has an entry of its
// own, which the first one's end must leave.
type pendingEntry struct {
	alloc spec.Allocation
	no    uint64
}

func attachmentID(a spec.Allocation) string { return attachmentKey(a.Spec.ContainerID, a.Spec.IfName) }

// attachmentKey is attachmentID of a CNI request's container and interface.
func attachmentKey(containerID, ifName string) string { return containerID + "/" + ifName }

// add adds a and returns its entry's number, for done.
func (p *pendingAdds) add(a spec.Allocation) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.by == nil {
		p.by = map[string]pendingEntry{}
	}
	p.entries++
	p.by[attachmentID(a)] = pendingEntry{a, p.entries}
	return p.entries
}

// done ends entry n of a, unless a later ADD of the attachment took its
// place.
func (p *pendingAdds) done(a spec.Allocation, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := attachmentID(a)
	if p.by[id].no == n {
		delete(p.by, id)
	}
	if p.commits[id] == n {
		delete(p.commits, id)
	}
}

// addCommitting adds a, whose store commit is under way, and returns its
// entry's number, for committed and done.
func (p *pendingAdds) addCommitting(a spec.Allocation) uint64 {
	n := p.add(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.commits == nil {
		p.commits = map[string]uint64{}
	}
	p.commits[attachmentID(a)] = n
	return n
}

// committed notes that the commit of entry n of a ended, done or failed;
// a later allocation of the same attachment (a retried ADD after a failed
// commit) keeps its own.
func (p *pendingAdds) committed(a spec.Allocation, n uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.commits[attachmentID(a)] == n {
		delete(p.commits, attachmentID(a))
	}
}

// released notes that the store no longer has the attachment id (a DEL,
// a rollback, a GC): whatever its commit did, no render may take it from
// here again. The commit may end after the store's writer lock went, so
// its own committed can come later than a release.
func (p *pendingAdds) released(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.commits, id)
}

// committing tells whether a store commit of attachment id is under way.
func (p *pendingAdds) committing(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.commits[id]
	return ok
}

// uncommitted returns the pending allocation id whose store commit is
// under way, if it is one.
func (p *pendingAdds) uncommitted(id string) (spec.Allocation, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.by[id]
	n, committing := p.commits[id]
	return e.alloc, ok && committing && n == e.no
}

// snapshot returns the pending allocations (nil when none).
func (p *pendingAdds) snapshot() map[string]spec.Allocation {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.by) == 0 {
		return nil
	}
	out := make(map[string]spec.Allocation, len(p.by))
	for k, e := range p.by {
		out[k] = e.alloc
	}
	return out
}

// pendingPod reports whether one of the pending allocations is pod key's.
func pendingPod(pending map[string]spec.Allocation, key string) bool {
	for _, a := range pending {
		if a.Metadata.Namespace+"/"+a.Metadata.Name == key {
			return true
		}
	}
	return false
}

// without returns allocs, a list in List's order, less the pending ones
// (allocs itself when it has none). They are found by binary search, by
// pod and attachment (the store holds an attachment for one pod only):
// the pending are a few, the list every allocation of the node.
func without(allocs []*spec.Allocation, pending map[string]spec.Allocation) []*spec.Allocation {
	var drop []int
	for _, p := range pending {
		if i, found := slices.BinarySearchFunc(allocs, &p, store.CompareAllocations); found {
			drop = append(drop, i)
		}
	}
	if len(drop) == 0 {
		return allocs
	}
	slices.Sort(drop)
	out := make([]*spec.Allocation, 0, len(allocs)-len(drop))
	next := 0
	for _, i := range drop {
		out = append(out, allocs[next:i]...)
		next = i + 1
	}
	return append(out, allocs[next:]...)
}

// pendingWrites is what the pending ADDs will write, as a writeTracker:
// their pods, host veths, addresses and namespaces.
func pendingWrites(pending map[string]spec.Allocation) *writeTracker {
	if len(pending) == 0 {
		return nil
	}
	w := &writeTracker{pods: map[string]bool{}, netns: map[string]bool{}}
	for _, a := range pending {
		key := a.Metadata.Namespace + "/" + a.Metadata.Name
		w.pods[key] = true
		w.veths = append(w.veths, spec.HostVethName(key))
		if a.Spec.IP != "" {
			w.ips = append(w.ips, a.Spec.IP+"/32")
		}
		if a.Spec.Netns != "" {
			w.netns[a.Spec.Netns] = true
		}
	}
	return w
}

// merge returns the union of two trackers' writes (either may be nil).
func (w *writeTracker) merge(o *writeTracker) *writeTracker {
	switch {
	case w == nil:
		return o
	case o == nil:
		return w
	}
	out := &writeTracker{pods: map[string]bool{}, netns: map[string]bool{}, nftOnly: w.nftOnly || o.nftOnly}
	for _, t := range []*writeTracker{w, o} {
		for k := range t.pods {
			out.pods[k] = true
		}
		for k := range t.netns {
			out.netns[k] = true
		}
		out.veths = append(out.veths, t.veths...)
		out.ips = append(out.ips, t.ips...)
	}
	return out
}
