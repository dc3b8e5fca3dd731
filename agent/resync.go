package agent

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// The resync and the CNI path share the kernel. The CNI path (ADD, DEL)
// holds the agent's lock (a.mu) for its render and its scoped apply. A
// full resync used to hold it too, for its whole render, plan and apply:
// about 4 s at 2,000 pods, all of it an ADD's wait. Now a resync holds it
// only to plan nftables and execute:
//
//  1. Without the lock, it renders and plans the kernel kinds (links,
//     addresses, routes, ...). That plan reads the kernel and writes
//     nothing: it is the long part, and ADDs go on meanwhile.
//  2. With the lock, it drops the operations of pods a CNI request wrote
//     since step 1 began (their render and observation may be stale: a pod
//     allocated after our render but set up before our observation would
//     plan as an orphan to delete; a pod deleted meanwhile as missing
//     items to create). Those pods were just converged by their own
//     request; the next run looks at them again. Then it plans nftables,
//     from a document rendered again under the lock if a CNI request wrote
//     meanwhile, because an nftables plan diffs against the record of the
//     last commit (a stale document would take back a new pod's elements)
//     and two of them must not interleave with a commit between. Its
//     policies become the ones CNI requests render from then on
//     (renderviews.go). Then it executes both plans and releases the lock.
//
// So no update is lost (every write after our render is either seen by
// our observation and not acted on, or made after our execution), nothing
// is pruned before the inputs are synced (the runner does not run before),
// and an ADD waits at most for one execution and an nftables plan, never
// for the observation of the whole node.

// writeTracker notes the pods CNI requests wrote while a resync plans
// without the lock.
type writeTracker struct {
	mu       sync.Mutex
	tracking bool
	pods     map[string]bool
	veths    []string
	ips      []string // as "ip/32", how routes and rules print them
	netns    map[string]bool
	// nftOnly says a write changed nftables alone (an admission,
	// admission.go): the document changed, though no pod's items did.
	nftOnly bool
}

// start begins noting writes (a resync is about to render).
func (w *writeTracker) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tracking = true
	w.pods, w.netns, w.veths, w.ips, w.nftOnly = map[string]bool{}, map[string]bool{}, nil, nil, false
}

// note records a scoped write: called by the writer under the agent's
// lock, after its apply (or its rollback's release, with no state), so
// that a write that overlaps a resync's plan is always seen by the
// resync's step 2.
func (w *writeTracker) note(state *spec.NodeState, opts engine.PlanOptions) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.tracking {
		return
	}
	if slices.Equal(opts.Kinds, []string{nft.Kind}) {
		// Only nftables (an admission, admission.go): a resync rendered
		// before it holds those pods back and would take their peer
		// elements out again, so it renders nftables again under the
		// lock; their items did not change, and it keeps its plan of them.
		w.nftOnly = true
		return
	}
	for _, key := range opts.Pods {
		w.pods[key] = true
		w.veths = append(w.veths, spec.HostVethName(key))
		if ip := opts.PodIPs[key]; ip != "" {
			w.ips = append(w.ips, ip+"/32")
		}
		if state == nil {
			continue
		}
		if p := state.PodEntry(key); p != nil {
			w.ips = append(w.ips, p.IP+"/32")
			w.netns[p.Netns] = true
		}
	}
	for _, n := range opts.Namespaces {
		w.netns[n] = true
	}
}

// stop ends noting and returns what was written (nil: nothing).
func (w *writeTracker) stop() *writeTracker {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tracking = false
	if len(w.pods) == 0 && len(w.netns) == 0 && !w.nftOnly {
		return nil
	}
	return &writeTracker{pods: w.pods, veths: w.veths, ips: w.ips, netns: w.netns, nftOnly: w.nftOnly}
}

// wroteItems reports whether CNI requests wrote pods' items (nil: no).
func (w *writeTracker) wroteItems() bool { return w != nil && (len(w.pods) > 0 || len(w.netns) > 0) }

// touches reports whether an operation may concern a written pod: its
// own items, anything in its namespace, and node items that name its host
// veth or its address (an orphan's route, rule or qdisc has no pod).
// nftables is planned under the lock and never dropped.
func (w *writeTracker) touches(o op.Op) bool {
	if o.Kind == nft.Kind {
		return false
	}
	if w.pods[o.Pod] || w.netns[o.Netns] {
		return true
	}
	for _, s := range [][]string{w.veths, w.ips} {
		for _, v := range s {
			if strings.Contains(o.Text, v) || strings.Contains(o.Key, v) {
				return true
			}
		}
	}
	return false
}

// kernelKinds are the kinds planned without the lock.
var kernelKinds = slices.DeleteFunc(engine.Kinds(), func(k string) bool { return k == nft.Kind })

// maxSyncRounds bounds the plan-execute rounds of one sync: re-creating a
// link takes its addresses and routes with it, which the next round puts
// back (engine.Apply does the same).
const maxSyncRounds = 3

// sync is one run of the runner: it converges the whole node, records
// every item's status and says when to run again.
func (a *Agent) sync(ctx context.Context, full bool) runOutcome {
	start := a.clock.Now()
	var total engine.Report
	again, rendered := false, false
	for round := 0; round < maxSyncRounds; round++ {
		a.writes.start()
		// No lock needed: a snapshot and a store read. The pods whose ADD
		// is under way are their ADD's (pending.go).
		state, _, with, err := a.renderSettledFor(forResync, nil)
		if err != nil {
			a.writes.stop()
			a.m.reconcileErrors.Inc()
			a.status.fail(itemKey{kindRender, "node " + a.cfg.NodeName}, "", "render", err)
			a.log.Warn("render failed; the next sync retries", "err", err)
			break
		}
		rendered = true
		a.status.ok(itemKey{kindRender, "node " + a.cfg.NodeName})
		if round == 0 {
			a.publishRendered(state)
		}
		if a.planning != nil {
			a.planning()
		}
		kernel, err := a.eng.Plan(ctx, state, engine.PlanOptions{Full: full, Kinds: kernelKinds})
		if err != nil {
			a.writes.stop()
			a.status.fail(itemKey{kindObserve, "node " + a.cfg.NodeName}, "", "observe", err)
			a.log.Warn("observing the node failed; the next sync retries", "err", err)
			break
		}
		a.status.ok(itemKey{kindObserve, "node " + a.cfg.NodeName})
		rep, kept, cut := a.execute(ctx, state, with, kernel, full)
		total.Results = append(total.Results, rep.Results...)
		total.Writes += rep.Writes
		total.Rounds++
		conflicted := a.status.record(rep)
		a.status.settle(rep, kept, full && round == 0)
		again = again || cut || conflicted
		if rep.Err() != nil || conflicted || !touchesLinks(rep) {
			break
		}
		full = false // later rounds trust the nftables record just written
	}
	if rendered && !a.resynced.Load() {
		// Ready once a document could be rendered (the Node is known), even
		// if some kernel items failed: one broken pod must not keep every
		// other pod from starting.
		a.resynced.Store(true)
		a.log.Info("inputs synced; first full reconcile done")
	}
	if rendered && total.Rounds > 0 && total.Failed()[nft.Kind] == 0 {
		// The nftables part was written: no address departed before a
		// restart is left in a peer set (cni_cloud.go, startCloud).
		a.firstResyncOnce.Do(func() { close(a.firstResync) })
	}
	total.Duration = a.clock.Since(start)
	a.m.observeReport(&total, total.Duration)
	if len(total.Results) > 0 {
		a.log.Info("reconciled", "operations", len(total.Results), "applied", total.Applied(), "failed", total.Failed(),
			"writes", total.Writes, "rounds", total.Rounds, "duration", total.Duration)
	}
	a.healthChanged()
	return runOutcome{Retry: a.status.nextRetry(), Again: again}
}

// execute is step 2: under the lock, drop what concurrent CNI requests
// made stale, plan nftables and execute the kernel kinds; then execute the
// nftables plan without the lock (see nftOutsideLock). It returns the
// report, the items it left alone on purpose, and whether it cut the plan
// short.
func (a *Agent) execute(ctx context.Context, state *spec.NodeState, with renderedWith, kernel *engine.Plan, full bool) (*engine.Report, map[itemKey]bool, bool) {
	now := a.clock.Now()
	kept := map[itemKey]bool{}
	underLock := a.nftUnderLock()
	if !underLock {
		// Canonicalise the document's sets before taking the lock: a
		// 42,000-element set takes a CPU second, which the plan under the
		// lock then finds done (the document is equal, or re-rendered
		// equal but for the pods written meanwhile).
		a.eng.PrepareNFT(state, full)
	}
	a.mu.Lock()
	locked := true
	defer func() {
		if locked {
			a.mu.Unlock()
		}
	}()
	// The pods written since the render, and those whose ADD has
	// allocated but not set up yet, are left to their CNI requests. ADDs
	// allocate without the lock: the nftables plan below renders from the
	// allocations listed with these pending ones, so that one allocated
	// later is in neither.
	allocs, pending, listErr := a.settledAllocations()
	if listErr != nil {
		pending = a.pending.snapshot()
	}
	written := a.writes.stop().merge(pendingWrites(pending))
	ops := make([]op.Op, 0, len(kernel.Ops))
	for _, o := range kernel.Ops {
		switch {
		case written != nil && written.touches(o):
			kept[keyOf(o)] = true
		case !full && a.status.waiting(keyOf(o), o.String(), now):
			kept[keyOf(o)] = true // in backoff
		default:
			ops = append(ops, o)
		}
	}
	var nftOps []op.Op
	nftKey := itemKey{nft.Kind, nftItemKey}
	if !full && a.status.waiting(nftKey, "", now) {
		kept[nftKey] = true
	} else {
		nstate := state
		if written != nil {
			err := listErr
			if err == nil {
				snap, seq := a.snapshot()
				nstate, with, err = a.renderInputs(snap, seq, allocs, forResync)
			}
			if err != nil {
				kept[nftKey] = true // the render's status comes with the next sync
				nstate = nil
			}
		}
		if nstate != nil {
			p, err := a.eng.Plan(ctx, nstate, engine.PlanOptions{Full: full, Kinds: []string{nft.Kind}, TakenFrom: kernel})
			if err != nil {
				a.status.fail(nftKey, "", "observe", err)
				kept[nftKey] = true
			} else {
				nftOps = p.Ops
				// CNI requests render this document's policies from now
				// on: the kernel is about to have them.
				a.views.planned(with.policies, with.cache, with.seq)
			}
		}
	}
	reason := "resync"
	if full {
		reason = "full resync"
	}
	rep := a.eng.Execute(ctx, &engine.Plan{Ops: ops})
	if !underLock {
		if len(nftOps) > 0 {
			// A withdrawal meanwhile waits for this commit and withdraws
			// again after it (withdrawal.go).
			committed := make(chan struct{})
			a.resyncCommit = committed
			defer close(committed)
		}
		a.mu.Unlock()
		locked = false
	}
	if len(nftOps) > 0 {
		if a.committing != nil {
			a.committing()
		}
		nrep := a.eng.Execute(ctx, &engine.Plan{Ops: nftOps})
		a.noteNFTOutcome(nrep)
		if a.committed != nil {
			a.committed(nrep)
		}
		rep.Results = append(rep.Results, nrep.Results...)
		rep.Writes += nrep.Writes
		rep.Duration += nrep.Duration
	}
	a.journal.record(reason, rep)
	return rep, kept, written.wroteItems()
}

// The nftables plan of a resync is made under the agent's lock, from a
// document that holds every CNI write made before it, and committed
// without the lock: a large policy change's staged fill takes seconds, and
// CNI ADDs and DELs go on meanwhile. That is safe because the reconciler
// refuses a commit (nft.ErrStale, nothing written) whose objects another
// commit changed since its plan, and a commit that waits for a staged
// set's lock waits there rather than failing; a full plan's generation
// check counts our own commits (apply/nft). The cost is that a resync
// whose objects the CNI path keeps changing is refused again and again: so
// after nftStaleMax refusals in a row the next resync commits under the
// lock, as before, and always gets through.
const nftStaleMax = 2

// nftUnderLock says the next resync commits nftables under the lock.
func (a *Agent) nftUnderLock() bool { return a.nftAlwaysLocked || a.nftStale.Load() >= nftStaleMax }

// noteNFTOutcome counts the resync's nftables commits refused as stale in
// a row.
func (a *Agent) noteNFTOutcome(rep *engine.Report) {
	for _, r := range rep.Results {
		if r.Op.Kind == nft.Kind && r.Err != nil && errors.Is(r.Err, nft.ErrStale) {
			a.nftStale.Add(1)
			return
		}
	}
	a.nftStale.Store(0)
}

func touchesLinks(rep *engine.Report) bool {
	for _, r := range rep.Results {
		if r.Op.Kind == links.Kind && r.Err == nil {
			return true
		}
	}
	return false
}
