package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/chaos"
	"github.com/terway-reconciler/terway/spec"
)

// CNI error codes the agent uses (the spec reserves 1-99; 11 and 50 are
// well known, the rest are our own above 100).
const (
	codeTryAgainLater   = 11
	codeNotAvailable    = 50
	codeInvalidPod      = 101 // the pod's own inputs cannot be rendered
	codeExhausted       = 102 // no address left
	codeApplyFailed     = 103 // the kernel refused something
	codeCheckDifference = 104
)

func cniErr(code uint, msg string, details string) *types.Error {
	return &types.Error{Code: code, Msg: msg, Details: details}
}

// Add allocates an address for the attachment (persisted first), renders
// the node and applies the pod's part at once. A retried ADD gets the same
// address. If the pod's own inputs are invalid (a bad bandwidth annotation),
// the allocation is rolled back and the error names the field and value.
func (a *Agent) Add(ctx context.Context, req *wire.Request) (*types100.Result, error) {
	if err := a.waitSynced(ctx); err != nil {
		return nil, err
	}
	a.held.noteAdd(time.Now())
	key := req.Args.Key()
	a.waitForPod(ctx, key)
	var cloudAlloc *spec.Allocation
	if a.cfg.ENI == nil {
		if cerr := a.refuseExclusiveWithoutCloud(key); cerr != nil {
			return nil, cerr
		}
	} else if a.fromCloud(key) {
		var cerr *types.Error
		if cloudAlloc, cerr = a.cloudAllocate(ctx, req, key); cerr != nil {
			return nil, cerr
		}
	}
	// A large change's staged fill holds its next chunk back from now
	// until this request commits (10 ms at most): its veth, made in the
	// node's namespace, waits for any nftables transaction there.
	a.eng.ExpectScoped()
	// The allocation does not take the agent's lock (mu): it would wait
	// for the set-up of every ADD before it, a DEL or a resync's plan.
	asked := time.Now()
	a.allocMu.Lock()
	// An ADD of an attachment the store has already is a retry of a live
	// sandbox: its pod is not held back again (admission.go), or a retry
	// would take an admitted pod's peer elements out until its admission.
	_, retry, _ := a.store.Get(req.ContainerID, req.IfName)
	node := a.lookupNode()
	if node == nil {
		a.allocMu.Unlock()
		if cloudAlloc != nil {
			a.cloudRelease(*cloudAlloc)
		}
		return nil, cniErr(codeTryAgainLater, "node "+a.cfg.NodeName+" not known yet", "no Node object in the inputs")
	}
	var alloc spec.Allocation
	var commit func() error // the VPC allocation's, to run off allocMu
	var existing bool
	if cloudAlloc != nil {
		if err := a.recordCloud(*cloudAlloc); err != nil {
			a.allocMu.Unlock()
			return nil, cniErr(codeTryAgainLater, "record the address of pod "+key, err.Error())
		}
		alloc = *cloudAlloc
	} else {
		var cerr *types.Error
		if alloc, existing, commit, cerr = a.allocateVPCDeferred(req, key, node); cerr != nil {
			a.allocMu.Unlock()
			return nil, cerr
		}
		// The retry check above reads the store, which does not list an
		// allocation still committing: the store's answer says it.
		retry = retry || existing
	}
	var pendingNo uint64
	if commit != nil {
		pendingNo = a.pending.addCommitting(alloc)
	} else {
		pendingNo = a.pending.add(alloc)
	}
	a.allocMu.Unlock()
	a.m.addPhases.WithLabelValues("allocate").Observe(time.Since(asked).Seconds())
	chaos.Point(chaos.AddAfterStore)
	if a.allocated != nil {
		a.allocated()
	}
	// The address is recorded; the pod's network is set up together with
	// the other ADDs that arrive meanwhile (add_batch.go), whose leader
	// starts the commit.
	return a.setUp(ctx, req, key, alloc, pendingNo, retry, commit)
}

// startCommit starts the store's commit of w's allocation, if it has one
// to make: the store syncs it (bbolt's two fdatasyncs) while the batch
// renders and applies the pod, and the ADD answers only once it is
// durable (setUpBatch). Until then the store's writers wait, and its
// readers do not see it: the pod is pending for every render but its own
// batch's (settledAllocations). The commit starts only when the batch is
// taken, not at the allocation, so that the ADDs arriving meanwhile share
// its transaction (store.AllocateVPCDeferred): with 8 ADDs at once each
// waited for the commit before its own, about 2 ms.
func (a *Agent) startCommit(w *addWaiter) {
	if w.commit == nil {
		return
	}
	persisted := make(chan error, 1)
	w.persisted = persisted
	commit := w.commit
	w.commit = nil
	go func() {
		err := a.commitAllocation(commit)
		a.pending.committed(w.alloc, w.pendingNo)
		persisted <- err
	}()
}

// commitAllocation runs the store's commit of an ADD's allocation, through
// the test hook persist when it is set.
func (a *Agent) commitAllocation(commit func() error) error {
	if a.persist != nil {
		return a.persist(commit)
	}
	return commit()
}

// allocateVPCDeferred allocates the attachment's address from the node's
// podCIDR and hands back the store's commit of the allocation
// (store.AllocateVPCDeferred), nil when there is none to make, and whether
// the attachment had it already. A sandbox replaced without its DEL is
// committed here: until then the store would still list the old sandbox's
// allocation beside the pending new one, two of one pod in the batch's
// render.
func (a *Agent) allocateVPCDeferred(req *wire.Request, key string, node *corev1.Node) (spec.Allocation, bool, func() error, *types.Error) {
	// The same check as render's, so the refusal reads like the Node's
	// problem: "Node n1: spec.podCIDR: ...".
	cidr, err := spec.NodePodCIDR(node.Spec.PodCIDR, node.Spec.PodCIDRs)
	if fe := (*spec.FieldError)(nil); errors.As(err, &fe) && fe.Usable {
		err = nil // reported by render as the Node's problem; the network serves
	}
	if err != nil {
		p := spec.Problem{Kind: "Node", Name: node.Name, Reason: err.Error()}
		var fe *spec.FieldError
		if errors.As(err, &fe) {
			p.Field, p.Reason = fe.Field, fe.Reason
		}
		return spec.Allocation{}, false, nil, cniErr(codeNotAvailable, "node "+node.Name+" has no usable pod CIDR", p.String())
	}
	if err := a.followPodCIDR(cidr); err != nil {
		return spec.Allocation{}, false, nil, cniErr(codeTryAgainLater, "record the node's pod CIDR", err.Error())
	}
	ns, name, _ := strings.Cut(key, "/")
	// The addresses of deleted pods still in peer sets are nobody's until
	// their withdrawal (withdrawal.go).
	quarantined := a.departing.quarantined()
	alloc, replaced, existing, commit, err := a.store.AllocateVPCDeferred(store.VPCRequest{
		PodCIDR: cidr, Pod: spec.ObjectMeta{Namespace: ns, Name: name}, UID: req.Args.UID,
		ContainerID: req.ContainerID, IfName: req.IfName, Netns: req.Netns, Reserved: quarantined,
	})
	if errors.Is(err, store.ErrExhausted) && len(quarantined) > 0 {
		return spec.Allocation{}, false, nil, a.quarantineErr("free address", key, err, len(quarantined))
	}
	if errors.Is(err, store.ErrExhausted) {
		return spec.Allocation{}, false, nil, cniErr(codeExhausted, "no free address for pod "+key, err.Error())
	}
	if err != nil {
		return spec.Allocation{}, false, nil, cniErr(codeTryAgainLater, "allocate an address for pod "+key, err.Error())
	}
	if replaced != nil && commit != nil {
		if err := commit(); err != nil {
			return spec.Allocation{}, false, nil, cniErr(codeTryAgainLater, "allocate an address for pod "+key, err.Error())
		}
		commit = nil
	}
	if replaced != nil {
		a.log.Info("sandbox replaced; old attachment released", "pod", key, "old", replaced.Spec.ContainerID, "new", req.ContainerID)
	}
	return alloc, existing, commit, nil
}

// followPodCIDR records the node's pod CIDR in the store when it changed.
// Allocations outside a new CIDR stay held (their pods keep running) until
// their DEL; they are logged.
func (a *Agent) followPodCIDR(cidr netip.Prefix) error {
	cur, ok, err := a.store.PodCIDR()
	if err != nil || (ok && cur == cidr.Masked()) {
		return err
	}
	outside, err := a.store.SetPodCIDR(cidr)
	if err != nil {
		return err
	}
	for _, o := range outside {
		a.log.Warn("allocation outside the node's new pod CIDR; kept until its pod is deleted", "pod", o.Metadata.Namespace+"/"+o.Metadata.Name, "ip", o.Spec.IP, "podCIDR", cidr)
	}
	return nil
}

// podProblems returns the render problems of the pod's own inputs that
// must fail its ADD (invalid annotations): the pod would otherwise run
// without what it asked for.
func podProblems(state *spec.NodeState, key string) string {
	var msgs []string
	for _, p := range state.Problems {
		if p.Kind == "Pod" && p.Namespace+"/"+p.Name == key && strings.HasPrefix(p.Field, "metadata.annotations") {
			msgs = append(msgs, p.Field+": "+p.Reason)
		}
	}
	return strings.Join(msgs, "; ")
}

func problemsOf(state *spec.NodeState, key string) string {
	var msgs []string
	for _, p := range state.Problems {
		if p.Namespace+"/"+p.Name == key {
			msgs = append(msgs, p.String())
		}
	}
	return strings.Join(msgs, "; ")
}

func (a *Agent) rollback(req *wire.Request) {
	a.held.release(req.Args.Key())
	released, found, err := a.store.Release(req.ContainerID, req.IfName)
	if err != nil {
		a.log.Error("roll back allocation", "container", req.ContainerID, "err", err)
	}
	a.pending.released(attachmentKey(req.ContainerID, req.IfName)) // the batch's next render leaves it out
	if found {
		a.cloudRelease(released)
		// A resync that rendered before this release must not set the
		// pod up again while its address goes to another pod.
		key := released.Metadata.Namespace + "/" + released.Metadata.Name
		a.writes.note(nil, engine.PlanOptions{Pods: []string{key}, PodIPs: map[string]string{key: released.Spec.IP},
			Namespaces: []string{released.Spec.Netns}})
	}
	a.reg.Forget(req.Netns) // a refused ADD holds nothing of its namespace
}

// result is the CNI result of a rendered pod.
func result(p *spec.Pod) *types100.Result {
	mac := spec.PodVethMAC(p.Key)
	ip := net.ParseIP(p.IP).To4()
	return &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{{Name: p.IfName, Mac: mac, Sandbox: p.Netns}},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(0), Address: net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)},
			Gateway: net.ParseIP(spec.PodGateway).To4(),
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP(spec.PodGateway).To4()}},
	}
}

// Del releases the attachment and removes the pod's network. It is
// idempotent and needs neither the Pod object nor the netns. DELs that
// arrive together are torn down together (del_batch.go).
func (a *Agent) Del(ctx context.Context, req *wire.Request) error {
	a.eng.ExpectScoped() // as an ADD does
	a.departing.dels.Add(1)
	defer func() {
		a.departing.lastDel.Store(time.Now().UnixNano())
		a.departing.dels.Add(-1)
	}()
	return a.tearDown(ctx, req)
}

// releaseOutcome is one DEL's release (releaseAll).
type releaseOutcome struct {
	released spec.Allocation
	found    bool
	// departs says the address departs (withdrawal.go).
	departs bool
	err     error
}

// releaseAll releases the DELs' attachments in the store, in one
// transaction. An admitted pod's address departs (withdrawal.go): it is
// quarantined before the store frees it, under allocMu, so that no ADD
// allocating meanwhile gets it.
func (a *Agent) releaseAll(reqs []*wire.Request) []releaseOutcome {
	out := make([]releaseOutcome, len(reqs))
	a.allocMu.Lock()
	defer a.allocMu.Unlock()
	// An ADD's allocation may be committing (Add): a DEL that came before
	// its ADD answered (a runtime that gave up on it) must find it. Only
	// then does it wait for the store's writer: another ADD's commit is
	// none of its business.
	for _, req := range reqs {
		if a.pending.committing(attachmentKey(req.ContainerID, req.IfName)) {
			if err := a.store.Settle(); err != nil {
				for i := range out {
					out[i].err = err
				}
				return out
			}
			break
		}
	}
	var ids []store.Attachment
	var at []int // reqs' indexes of ids
	have := make([]spec.Allocation, len(reqs))
	now := time.Now()
	for i, req := range reqs {
		h, found, err := a.store.Get(req.ContainerID, req.IfName)
		if err != nil || !found {
			out[i].err = err
			continue
		}
		have[i] = h
		if key := store.PodKey(h.Metadata); a.departs(key, h) {
			out[i].departs = a.departing.depart(now, key, h)
		}
		ids = append(ids, store.Attachment{ContainerID: req.ContainerID, IfName: req.IfName})
		at = append(at, i)
	}
	if len(ids) == 0 {
		return out
	}
	released, found, err := a.store.ReleaseAll(ids)
	if err != nil {
		released, found = make([]spec.Allocation, len(ids)), make([]bool, len(ids))
	}
	for j, i := range at {
		o := &out[i]
		switch {
		case err != nil && len(ids) > 1:
			// One bad record must not fail the others: each alone.
			released[j], found[j], o.err = a.store.Release(ids[j].ContainerID, ids[j].IfName)
		case err != nil:
			o.err = err
		}
		if o.err == nil && found[j] {
			o.released, o.found = released[j], true
			// An ADD of the attachment whose commit ended just now must
			// not render it again (pendingAdds.released).
			a.pending.released(attachmentKey(reqs[i].ContainerID, reqs[i].IfName))
		}
		if o.departs && (o.err != nil || !o.found || o.released.Spec.IP != have[i].Spec.IP) {
			a.departing.cancel(store.PodKey(have[i].Metadata))
			o.departs = false
		}
	}
	return out
}

// Check compares the kernel with the pod's part of the document.
func (a *Agent) Check(ctx context.Context, req *wire.Request) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	alloc, found, err := a.store.Get(req.ContainerID, req.IfName)
	if err != nil {
		return cniErr(codeTryAgainLater, "read attachment", err.Error())
	}
	if !found {
		return cniErr(codeCheckDifference, "CHECK: no attachment "+req.ContainerID+"/"+req.IfName+" on this node", "")
	}
	key := alloc.Metadata.Namespace + "/" + alloc.Metadata.Name
	if a.held.has(key) {
		// Compare the pod admitted, as it will be in a moment anyway; if
		// that fails, its render still holds it back and matches.
		if err := a.admitHeld(ctx, "check", 0); err != nil {
			a.log.Warn("admitting pods as policy peers failed; retrying", "err", err)
		}
	}
	// As its ADD rendered it: with the policies CNI requests render
	// (renderviews.go), not an edit the resync has yet to apply.
	allocs, err := a.listAllocations()
	if err != nil {
		return cniErr(codeTryAgainLater, "read attachments", err.Error())
	}
	state, _, err := a.renderInputs(a.src.Snapshot(), 0, allocs, forCNI, key)
	if err != nil {
		return cniErr(codeTryAgainLater, "render node "+a.cfg.NodeName, err.Error())
	}
	p, err := a.eng.Plan(ctx, state, engine.PlanOptions{Pods: []string{key}, Full: true})
	if err != nil {
		return cniErr(codeTryAgainLater, "observe pod "+key, err.Error())
	}
	if !p.Empty() {
		return cniErr(codeCheckDifference, fmt.Sprintf("CHECK: pod %s differs from its desired state in %d places", key, len(p.Ops)),
			strings.TrimSpace(p.String()))
	}
	return nil
}

// GC releases every attachment the runtime no longer has.
func (a *Agent) GC(ctx context.Context, req *wire.Request) error {
	a.mu.Lock()
	valid := make([]store.Attachment, 0, len(req.ValidAttachments))
	for _, v := range req.ValidAttachments {
		valid = append(valid, store.Attachment{ContainerID: v.ContainerID, IfName: v.IfName})
	}
	released, err := a.store.GC(valid)
	for _, r := range released {
		a.pending.released(attachmentID(r)) // an ADD of it waiting for the lock fails
		a.cloudRelease(r)
		a.reg.Forget(r.Spec.Netns) // as a DEL does
	}
	a.mu.Unlock()
	if err != nil {
		return cniErr(codeTryAgainLater, "garbage-collect attachments", err.Error())
	}
	if len(released) == 0 || !a.src.Synced() {
		return nil
	}
	a.log.Info("GC released attachments", "count", len(released))
	return a.Reconcile(ctx, false)
}

// Status says whether the agent can serve ADD.
func (a *Agent) Status(ctx context.Context, req *wire.Request) error {
	if !a.Ready() {
		return cniErr(codeNotAvailable, "terway agent not ready", "inputs not synced or first reconcile not done")
	}
	return nil
}

// waitSynced waits for the inputs' first listing, bounded by SyncTimeout.
func (a *Agent) waitSynced(ctx context.Context) error {
	deadline := time.Now().Add(a.cfg.SyncTimeout)
	for !a.Ready() {
		if time.Now().After(deadline) {
			return cniErr(codeTryAgainLater, "terway agent not ready", "inputs not synced yet; try again later")
		}
		select {
		case <-ctx.Done():
			return cniErr(codeTryAgainLater, "terway agent not ready", ctx.Err().Error())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// waitForPod waits, bounded by PodTimeout, for the pod object to reach the
// inputs: the kubelet may call ADD before the agent's watch delivers it.
func (a *Agent) waitForPod(ctx context.Context, key string) {
	deadline := time.Now().Add(a.cfg.PodTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if a.hasPod(key) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.log.Warn("pod object not in the inputs; setting it up without (no policy, no bandwidth limit until it arrives)", "pod", key)
}

// hasPod reports whether the inputs have the pod.
func (a *Agent) hasPod(key string) bool {
	_, found := a.lookupPod(key)
	return found
}

// lookupNode returns this node, directly when the source can, rather than
// copying a snapshot of every pod on each ADD.
func (a *Agent) lookupNode() *corev1.Node {
	if g, ok := a.src.(inputs.NodeGetter); ok {
		return g.Node()
	}
	return a.src.Snapshot().Node
}

// lookupPod looks the pod up directly when the source can (both of ours
// can), rather than copying a snapshot of every pod on each poll.
func (a *Agent) lookupPod(key string) (*corev1.Pod, bool) {
	ns, name, _ := strings.Cut(key, "/")
	if g, ok := a.src.(inputs.PodGetter); ok {
		return g.Pod(ns, name)
	}
	for _, p := range a.src.Snapshot().Pods {
		if p.Namespace == ns && p.Name == name {
			return p, true
		}
	}
	return nil, false
}

var _ server.Handler = (*Agent)(nil)
