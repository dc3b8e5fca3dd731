package agent

import (
	"context"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/render"
)

// Peer admission.
//
// A pod's ADD sets up the pod's own part of the node: its network, its
// source validation, its isolation (its policy group's chain and sets and
// its entries in the dispatch maps, which a sync has usually written
// ahead, while the pod awaited its ADD). Being admitted
// by other pods' policies, its address in every peer set whose selectors
// match it, is a second step, taken right after the ADD has answered. In
// synth's cluster of 1,000 policies a pod is a peer of about 80 of them;
// its address goes into 40 to 130 group sets, and rendering and writing
// those was most of an ADD at scale (issue 17), none of it needed for the
// pod's own network to work.
//
// Until its admission a pod is held back: the agent's renders give it no
// peer role (render.Inputs.PeersHeldBack). That only ever admits
// less. Other pods' policies do not admit it yet, as for a pod on another
// node whose address this node's watch has not delivered yet; its own
// isolation is enforced from its ADD on.
//
// The admission runs once no CNI ADD has come for admitQuiet, or when the
// oldest hold is cfg.PeerAdmissionDelay old, whichever comes first: a
// burst of ADDs goes first, and the admission writes the burst's pods
// together, a few at a time (admitChunk). Each step is rendered ahead,
// off the lock, with a cache of the admission's own (preRenderAdmission):
// under the lock the step catches up only on what came meanwhile. Every
// render holds the held pods back, a resync's too: only
// an admission, under the agent's lock, makes a pod a peer. A resync
// commits outside the lock, and a pod may be deleted and its address
// given to another pod meanwhile; the DEL takes out only what the record
// has, so a resync that admitted would write the old pod's address into
// its peer sets after it was gone, for the new pod to use. A DEL ends its
// pod's hold; a CHECK admits first, so that it compares the admitted pod.
// With cfg.AdmitBeforeAnswer an ADD admits its pods before it answers, at
// the old cost.

// admitQuiet is how long the agent must have had no ADD before it admits,
// the same quiet as the withdrawal's (withdrawQuiet): well beyond the gap
// between two ADDs of a runtime starting pods one after the other (the
// plugin's exec, 4 to 10 ms here) and the hiccups of such a run. A step
// that starts inside a burst of ADDs slows every ADD of the burst, not
// only those that wait for its lock: it renders, writes and reads back
// on the core the runtime's plugin processes need. With 20 ms, gaps of a
// busy machine started 3 to 6 steps inside each burst of 50 ADDs at 1,000
// policies even with a delay of 1 s (terwayctl bench --only scale, see
// BENCHMARKS.md "Stop 37").
const admitQuiet = 100 * time.Millisecond

// admitBudget is about how long the loop holds the agent's lock for one
// step: it admits the longest held pods, as many as fit in it at what the
// last admission took per pod, and never fewer than admitMinChunk
// (admitChunk). An admission writes each pod into the peer sets of every
// policy that selects it, tens of milliseconds per pod at 1,000 policies,
// and an ADD arriving meanwhile waits for it: a burst of 100 pods admitted
// at once would hold the lock for a second. With no policy a pod costs a
// fraction of a millisecond, and a whole burst goes in one step.
const admitBudget = 50 * time.Millisecond

// admitMinChunk is the fewest pods a step admits: a step renders the node
// and reads back what it wrote whatever the number of pods, so that
// smaller steps fell behind a run of ADDs at 1,000 policies (2 pods a step:
// pods waited 0.5 to 1.5 s to be admitted, and ADDs 17 to 27 ms for the
// lock on average, against 0.2 s and 7 to 15 ms with 4).
const admitMinChunk = 4

// admitChunk is how many pods one step of the loop admits at perPod each
// (0: not known yet).
func admitChunk(perPod time.Duration) int {
	if perPod <= 0 {
		return admitMinChunk
	}
	return max(admitMinChunk, int(admitBudget/perPod))
}

// admitRetry is the wait after an admission that failed.
const admitRetry = time.Second

// heldPeers are the pods held back as peers, with when each was held.
type heldPeers struct {
	mu    sync.Mutex
	since map[string]time.Time
	// kick wakes the admission loop (capacity 1).
	kick chan struct{}
	// lastAdd is when the last ADD arrived or ended, in Unix nanoseconds.
	lastAdd atomic.Int64
	// perPod is what the last admission took per pod, in nanoseconds.
	perPod atomic.Int64
	// ahead is what the last render ahead took (preRenderAdmission), in
	// nanoseconds: the loop starts that much before the delay is up.
	ahead atomic.Int64
	// checking is held while a step reads back what it wrote, after the
	// agent's lock (taken before that lock goes): who waits for the
	// admission to be over waits for it too.
	checking sync.Mutex
	// gauge follows the number held (terway_pods_held_back).
	gauge func(float64)
}

func newHeldPeers(gauge func(float64)) *heldPeers {
	return &heldPeers{since: map[string]time.Time{}, kick: make(chan struct{}, 1), gauge: gauge}
}

// hold holds pods back from now on; a pod already held keeps its time.
func (h *heldPeers) hold(now time.Time, keys ...string) {
	held := make(map[string]time.Time, len(keys))
	for _, k := range keys {
		held[k] = now
	}
	h.restore(held)
}

// release ends the holds of pods and returns those it ended, with their
// times.
func (h *heldPeers) release(keys ...string) map[string]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]time.Time{}
	for _, k := range keys {
		if at, ok := h.since[k]; ok {
			out[k] = at
			delete(h.since, k)
		}
	}
	h.gauge(float64(len(h.since)))
	return out
}

// restore holds pods again with the times release returned; a pod held
// meanwhile keeps its time. It wakes the admission loop, which may have
// found nothing held meanwhile.
func (h *heldPeers) restore(held map[string]time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, at := range held {
		if _, ok := h.since[k]; !ok {
			h.since[k] = at
		}
	}
	h.gauge(float64(len(h.since)))
	if len(held) > 0 {
		h.wake()
	}
}

// snapshot returns the held pods as render takes them (nil when none).
func (h *heldPeers) snapshot() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.since) == 0 {
		return nil
	}
	out := make(map[string]bool, len(h.since))
	for k := range h.since {
		out[k] = true
	}
	return out
}

// keys returns the held pods, the longest held first, and the time of
// the oldest hold.
func (h *heldPeers) keys() ([]string, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.since))
	for k := range h.since {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b string) int {
		if c := h.since[a].Compare(h.since[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	if len(out) == 0 {
		return nil, time.Time{}
	}
	return out, h.since[out[0]]
}

func (h *heldPeers) has(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.since[key]
	return ok
}

// wake asks the admission loop to look at the held pods.
func (h *heldPeers) wake() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// noteAdd records an ADD's activity: the admission waits for quiet.
func (h *heldPeers) noteAdd(now time.Time) { h.lastAdd.Store(now.UnixNano()) }

// admissionLoop admits the held pods when the agent is quiet, until stop
// closes.
func (a *Agent) admissionLoop(stop <-chan struct{}) {
	// Labelled so that a CPU profile (/debug/pprof) tells the admission's
	// work from the ADDs' beside it: -tagfocus=work=admission.
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("work", "admission")))
	sleep := func(d time.Duration) bool { return sleepUnless(stop, d) }
	for {
		select {
		case <-stop:
			return
		case <-a.held.kick:
		}
		for {
			keys, oldest := a.held.keys()
			if len(keys) == 0 {
				break
			}
			if wait := a.admissionWait(time.Now(), oldest); wait > 0 {
				if !sleep(wait) {
					return
				}
				continue
			}
			chunk := admitChunk(time.Duration(a.held.perPod.Load()))
			var ahead *renderedAhead
			rendering := time.Now()
			if a.views.noPolicies(a.src.Snapshot().Policies) {
				// A step of no policy plans nothing (admit) and has
				// nothing to render ahead: every held pod goes in one,
				// whatever its cost per pod with them.
				chunk = len(keys)
			} else {
				ahead = a.preRenderAdmission(keys[:min(chunk, len(keys))])
			}
			took := time.Since(rendering)
			a.held.ahead.Store(int64(took))
			a.m.admissionStep.WithLabelValues("ahead").Observe(took.Seconds())
			a.mu.Lock()
			select {
			case <-stop: // Close is waiting for the lock
				a.mu.Unlock()
				return
			default:
			}
			var later nft.LaterChecks
			ctx := nft.WithLaterChecks(context.Background(), &later)
			err := a.admitStep(ctx, ahead, chunk)
			checkLater := later.Len() > 0
			if checkLater {
				a.held.checking.Lock() // taken before the agent's lock goes
			}
			a.mu.Unlock()
			if checkLater {
				// The step's read-back, off the lock (nft/later.go): it
				// was a third of the step, and ADDs waited for it.
				checking := time.Now()
				if cerr := later.Run(); cerr != nil {
					a.log.Warn("reading back an admission's writes found the kernel otherwise; the next sync reads it whole and repairs", "err", cerr)
					if a.runner != nil {
						a.runner.Run()
					}
				}
				a.m.admissionStep.WithLabelValues("check").Observe(time.Since(checking).Seconds())
				a.held.checking.Unlock()
			}
			if err != nil {
				a.log.Warn("admitting pods as policy peers failed; retrying", "err", err, "retry", admitRetry)
				if !sleep(admitRetry) {
					return
				}
			} else if rest, _ := a.held.keys(); len(rest) > 0 && !sleep(time.Millisecond) {
				return // the rest wait for their ADD under way
			}
		}
	}
}

// sleepUnless sleeps for d, or until stop closes: false then.
func sleepUnless(stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-stop:
		return false
	case <-t.C:
		return true
	}
}

// renderedAhead is an admission step's render ahead (preRenderAdmission):
// the pods it admitted, its cache, and the pin's moves when it chose its
// policies.
type renderedAhead struct {
	keys  []string
	cache *render.Cache
	seq   uint64
}

// preRenderAdmission renders, off the agent's lock, what the admission of
// keys is about to render under it, with the admission's own cache
// (renderViews.admit). Most of a step's render is done so while ADDs go
// on: the admitted pods' addresses resolved into every policy that
// selects them as peers, and those policies' groups rendered again. The
// document is thrown away. The step renders again under the lock, after
// renderViews.admitting has made this cache the main one, and catches up
// only on what changed since: the ADDs meanwhile, or a DEL, whose pod
// this render may still have as a peer. nil when the render failed: the
// step then renders all of it under the lock, and reports any error.
func (a *Agent) preRenderAdmission(keys []string) *renderedAhead {
	snap := a.src.Snapshot()
	if snap.Node == nil {
		return nil
	}
	cache, policies, seq := a.views.forAdmission(snap.Policies)
	allocs, _, err := a.settledAllocations()
	if err != nil {
		return nil
	}
	held := a.held.snapshot()
	for _, k := range keys {
		delete(held, k)
	}
	if _, err := a.renderWith(cache, snap, policies, allocs, held, a.departing.snapshot()); err != nil {
		return nil
	}
	return &renderedAhead{keys: keys, cache: cache, seq: seq}
}

// admitStep is the admission step under the agent's lock: it admits the
// pods rendered ahead, with the cache that rendered them, or without a
// render ahead the chunk longest held. Not the longest held now after a
// render ahead: a pod held since (an ADD during that render) would be
// resolved into its policies under the lock after all, and the step's
// render, a patch otherwise, would render the node whole.
func (a *Agent) admitStep(ctx context.Context, ahead *renderedAhead, chunk int) error {
	if ahead == nil {
		return a.admitHeld(ctx, "admission", chunk)
	}
	a.views.admitting(ahead.cache, ahead.seq)
	return a.admit(ctx, "admission", ahead.keys)
}

// admissionWait is how long the admission waits before it runs: while
// ADDs are arriving or under way, until admitQuiet after the last one, and
// never beyond cfg.PeerAdmissionDelay after the oldest hold, less what the
// last render ahead took (at most half the delay), so that a step the
// delay decides lands about when it is up rather than a render later.
func (a *Agent) admissionWait(now, oldest time.Time) time.Duration {
	early := min(time.Duration(a.held.ahead.Load()), a.cfg.PeerAdmissionDelay/2)
	deadline := oldest.Add(a.cfg.PeerAdmissionDelay - early)
	if !now.Before(deadline) {
		return 0
	}
	wait := time.Unix(0, a.held.lastAdd.Load()).Add(admitQuiet).Sub(now)
	if a.addsUnderWay() {
		wait = max(wait, time.Millisecond)
	}
	return min(wait, deadline.Sub(now))
}

// addsUnderWay reports whether an ADD has allocated and not set up yet.
func (a *Agent) addsUnderWay() bool {
	return a.adds.busy() || a.pending.snapshot() != nil
}

// admitHeld admits the held pods, at most the most longest held ones
// (0: all): it renders them as peers and applies the nftables part of
// their scope, which is their addresses in the peer sets. Called with the
// agent's lock held; by says who admits, for the metric; keep are pending
// ADDs (by attachmentID) to render, an ADD batch's own pods. On failure
// the pods stay held.
func (a *Agent) admitHeld(ctx context.Context, by string, most int, keep ...string) error {
	keys, _ := a.held.keys()
	if most > 0 && len(keys) > most {
		keys = keys[:most]
	}
	return a.admit(ctx, by, keys, keep...)
}

// admit admits those of keys that are still held, as admitHeld does.
func (a *Agent) admit(ctx context.Context, by string, keys []string, keep ...string) error {
	began := time.Now()
	held := a.held.release(keys...)
	keys = slices.DeleteFunc(slices.Clone(keys), func(k string) bool { _, ok := held[k]; return !ok })
	if len(keys) == 0 {
		return nil
	}
	slices.Sort(keys)
	state, pending, with, err := a.renderSettledFor(forCNI, keys, keep...)
	a.m.admissionStep.WithLabelValues("render").Observe(time.Since(began).Seconds())
	if err != nil {
		a.held.restore(held)
		return err
	}
	// A pod whose ADD is under way again (a new sandbox) is that ADD's:
	// it holds the pod back again. A pod the document does not have
	// otherwise (its object gone, its inputs invalid) is not set up:
	// nothing of it to admit, and a scoped plan would take it for a
	// deleted pod.
	var live []string
	for _, k := range keys {
		switch {
		case pendingPod(pending, k):
			delete(held, k)
		case state.PodEntry(k) != nil:
			live = append(live, k)
		}
	}
	// A document of no policy: a peer role changes nothing of it. The
	// render above was a patch of the pods (render/patch.go), so that the
	// next ADD's render finds them admitted; planning nftables to find
	// nothing to write cost a step 3 to 13 ms under the lock beside every
	// burst of ADDs on a node without policies. Decided by the policies
	// the document was rendered with (a policy may have come since a
	// look at the inputs), and a step that planned nothing tells nothing
	// of what a pod costs to admit (perPod).
	skip := len(with.policies) == 0
	if len(live) > 0 && skip {
		// The pods are peers from now on, as after an admission that
		// wrote nothing: a resync rendered meanwhile, with newer
		// policies, renders nftables again under the lock.
		a.writes.note(nil, engine.PlanOptions{Pods: live, Kinds: []string{nft.Kind}})
	} else if len(live) > 0 {
		applied := time.Now()
		defer func() { a.m.admissionStep.WithLabelValues("apply").Observe(time.Since(applied).Seconds()) }()
		rep, err := a.apply(ctx, "admit "+strings.Join(live, ", "), state, engine.PlanOptions{Pods: live, Kinds: []string{nft.Kind}})
		if err == nil {
			err = rep.Err()
		}
		if err != nil {
			a.held.restore(held)
			return err
		}
	}
	if !skip {
		a.held.perPod.Store(int64(time.Since(began)) / int64(len(keys)))
	}
	a.observeAdmitted(held, by)
	return nil
}

// admitBatch admits as an ADD batch with cfg.AdmitBeforeAnswer does: its
// pods are still pending, and are rendered.
func (a *Agent) admitBatch(ctx context.Context, batch []*addWaiter) error {
	ids := make([]string, 0, len(batch))
	for _, w := range batch {
		ids = append(ids, attachmentID(w.alloc))
	}
	return a.admitHeld(ctx, "add", 0, ids...)
}

// observeAdmitted records how long each pod waited to be admitted.
func (a *Agent) observeAdmitted(held map[string]time.Time, by string) {
	now := time.Now()
	for _, at := range held {
		a.m.admission.WithLabelValues(by).Observe(now.Sub(at).Seconds())
	}
}
