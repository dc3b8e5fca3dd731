package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/spec"
)

// ADDs that arrive together are set up together: a runtime starting a
// node's pods sends many at once, and each would otherwise render the
// whole node and plan alone, one after the other, behind the agent's lock.
// The first ADD to arrive leads: it waits for the lock while others join,
// then renders once, applies one plan scoped to all of them, and answers
// each with its own result. A pod whose inputs are invalid, or whose part
// fails to apply, is refused and rolled back alone.

// batchQueue holds the requests waiting for one of them, the leader, to
// take them together under the agent's lock.
type batchQueue[W any] struct {
	mu      sync.Mutex
	queue   []W
	leading bool // a leader is waiting for the lock
}

// join queues w; lead says the caller is the leader: it takes the lock,
// then the batch (take), and answers every waiter of it.
func (q *batchQueue[W]) join(w W) (lead bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.queue = append(q.queue, w)
	lead = !q.leading
	q.leading = true
	return lead
}

// take returns the queued waiters; the next to join leads anew.
func (q *batchQueue[W]) take() []W {
	q.mu.Lock()
	defer q.mu.Unlock()
	batch := q.queue
	q.queue, q.leading = nil, false
	return batch
}

// busy says requests are queued or a leader waits for the lock.
func (q *batchQueue[W]) busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.leading || len(q.queue) > 0
}

type addWaiter struct {
	key   string
	req   *wire.Request
	alloc spec.Allocation
	// retry says the store had the attachment before this ADD.
	retry bool
	// commit is the store's commit of the allocation, which the batch's
	// leader starts (startCommit); nil: committed already.
	commit func() error
	// persisted gives the outcome of that commit, which runs beside the
	// set-up; nil: committed already.
	persisted <-chan error
	// pendingNo is the ADD's entry in pending (pendingAdds.add).
	pendingNo uint64
	done      chan addOutcome
}

type addOutcome struct {
	res *types100.Result
	err error
}

// setUp joins the current batch of ADDs and waits for its answer.
func (a *Agent) setUp(ctx context.Context, req *wire.Request, key string, alloc spec.Allocation, pendingNo uint64, retry bool,
	commit func() error) (*types100.Result, error) {
	w := &addWaiter{key: key, req: req, alloc: alloc, retry: retry, commit: commit, pendingNo: pendingNo, done: make(chan addOutcome, 1)}
	if a.adds.join(w) {
		// The batch is every waiter's, not the leader's alone: the runtime
		// giving up on the leader's ADD must not fail the others.
		a.leadSetUp(context.WithoutCancel(ctx))
	}
	out := <-w.done // the leader answers every waiter, whatever happens
	return out.res, out.err
}

// leadSetUp takes the queued ADDs and sets them up under the agent's lock.
// A panic (recovered above, by the CNI server, for the leader's request)
// leaves neither the lock held nor a waiter without an answer.
func (a *Agent) leadSetUp(ctx context.Context) {
	asked := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m.addPhases.WithLabelValues("lock").Observe(time.Since(asked).Seconds())
	batch := a.adds.take()
	for _, w := range batch {
		a.startCommit(w)
	}
	defer answerPanic(batch, func(w *addWaiter, msg string) {
		select {
		case w.done <- addOutcome{err: cniErr(codeTryAgainLater, "ADD "+w.req.ContainerID, msg)}:
		default: // answered already
		}
	})
	a.setUpBatch(ctx, batch)
}

// setUpBatch renders the node once and applies the batch's pods in one
// scoped plan. Called with the agent's lock held.
func (a *Agent) setUpBatch(ctx context.Context, batch []*addWaiter) {
	defer func() {
		if a.setUpWritten != nil {
			a.setUpWritten()
		}
		opts := engine.PlanOptions{PodIPs: map[string]string{}}
		for _, w := range batch {
			a.pending.done(w.alloc, w.pendingNo)
			opts.Pods = append(opts.Pods, w.key)
			opts.PodIPs[w.key] = w.alloc.Spec.IP
			opts.Namespaces = append(opts.Namespaces, w.req.Netns)
		}
		// Noted again once no longer pending: a resync that started
		// between the apply's note and here forgot that note, and its
		// render left these pods out as pending; at its execution they
		// are neither pending nor written, and it would delete what the
		// batch just made (TestResyncKeepsAnAddEndingDuringItsRender).
		// Refused and rolled-back pods are noted too: that resync leaves
		// anything of theirs to the next run.
		a.writes.note(nil, opts)
	}()
	answer := func(w *addWaiter, res *types100.Result, err error) { w.done <- addOutcome{res, err} }
	began := time.Now()
	// The batch's pods are set up held back as peers: admitted once the
	// agent is quiet (admission.go). A refused or rolled-back pod's hold
	// ends with its rollback. A retried ADD of a live sandbox keeps its
	// pod as it is, held or admitted.
	for _, w := range batch {
		if !w.retry {
			a.held.hold(began, w.key)
		}
	}
	defer func() {
		a.held.noteAdd(time.Now())
		a.held.wake()
	}()
	state, err := a.renderBatch(batch)
	a.m.addPhases.WithLabelValues("render").Observe(time.Since(began).Seconds())
	if err != nil {
		for _, w := range batch {
			a.rollback(w.req)
			answer(w, nil, cniErr(codeTryAgainLater, "render node "+a.cfg.NodeName, err.Error()))
		}
		return
	}
	var live []*addWaiter
	refused := false
	for _, w := range batch {
		if msg := podProblems(state, w.key); msg != "" {
			a.rollback(w.req)
			a.publishAddRefused(state, w.key, w.req.Args.UID)
			answer(w, nil, cniErr(codeInvalidPod, "pod "+w.key+": "+msg, "fix the pod's inputs; no network was set up"))
			refused = true
			continue
		}
		if state.PodEntry(w.key) == nil {
			a.rollback(w.req)
			if w.persisted != nil {
				// A commit that failed before the render left the pod out:
				// say so, not that the pod's inputs are wrong.
				if perr := <-w.persisted; perr != nil {
					w.persisted = nil
					answer(w, nil, cniErr(codeTryAgainLater, "record the allocation of pod "+w.key, perr.Error()))
					refused = true
					continue
				}
				w.persisted = nil
			}
			answer(w, nil, cniErr(codeInvalidPod, "pod "+w.key+" did not render", problemsOf(state, w.key)))
			refused = true
			continue
		}
		live = append(live, w)
	}
	if len(live) == 0 {
		return
	}
	if refused {
		// The refused pods' allocations are gone: render without them so
		// that nothing of theirs is set up.
		if state, err = a.renderBatch(batch); err != nil {
			for _, w := range live {
				a.rollback(w.req)
				answer(w, nil, cniErr(codeTryAgainLater, "render node "+a.cfg.NodeName, err.Error()))
			}
			return
		}
	}
	keys := make([]string, 0, len(live))
	for _, w := range live {
		keys = append(keys, w.key)
	}
	began = time.Now()
	rep, err := a.apply(ctx, "ADD "+strings.Join(keys, ", "), state, engine.PlanOptions{Pods: keys})
	a.m.addPhases.WithLabelValues("apply").Observe(time.Since(began).Seconds())
	a.m.observeReport(rep, 0)
	// A failure of a pod's own item fails that pod; any other failure (a
	// node-level item, the nftables commit, the plan itself) fails all.
	failed, common := podFailures(rep, err, keys)
	// The allocations' commits ran beside the render and the apply (Add):
	// a pod whose allocation did not become durable fails, and what was
	// set up for it is undone with the other failures'.
	committed := false
	for _, w := range live {
		if w.persisted == nil {
			continue
		}
		committed = true
		if perr := <-w.persisted; perr != nil && failed[w.key] == nil {
			failed[w.key] = fmt.Errorf("record the allocation: %w", perr)
		}
	}
	var undo []string
	undoIPs := map[string]string{} // their rules are found by address
	type success struct {
		w   *addWaiter
		res *types100.Result
	}
	var succeeded []success
	for _, w := range live {
		ferr := failed[w.key]
		if ferr == nil {
			ferr = common
		}
		if ferr != nil {
			a.rollback(w.req)
			undo = append(undo, w.key)
			undoIPs[w.key] = w.alloc.Spec.IP
			answer(w, nil, cniErr(codeApplyFailed, "set up pod "+w.key, ferr.Error()))
			continue
		}
		a.log.Info("pod added", "pod", w.key, "ip", w.alloc.Spec.IP, "container", w.req.ContainerID, "batch", len(live), "writes", rep.Writes)
		succeeded = append(succeeded, success{w, result(state.PodEntry(w.key))})
	}
	if len(undo) > 0 {
		// Take out what was made: render without those pods, apply their scope.
		if again, rerr := a.renderBatch(batch); rerr == nil {
			_, _ = a.apply(ctx, "ADD "+strings.Join(undo, ", ")+" rolled back", again, engine.PlanOptions{Pods: undo, PodIPs: undoIPs})
		}
		for _, w := range live {
			if failed[w.key] != nil || common != nil {
				a.reg.Forget(w.req.Netns) // opened again if the undo needed it
			}
		}
	}
	if a.cfg.AdmitBeforeAnswer && len(succeeded) > 0 {
		began = time.Now()
		var admit []*addWaiter
		for _, s := range succeeded {
			admit = append(admit, s.w)
		}
		if err := a.admitBatch(ctx, admit); err != nil {
			// The pods work; the admission loop retries their admission.
			a.log.Warn("admitting pods as policy peers failed; retrying", "err", err)
		}
		a.m.addPhases.WithLabelValues("admit").Observe(time.Since(began).Seconds())
	}
	for _, s := range succeeded {
		answer(s.w, s.res, nil)
	}
	if committed {
		// The render listed the store before those commits; counted
		// after the answers, off the ADDs' time.
		if n, err := a.store.Count(); err == nil {
			a.m.allocations.Set(float64(n))
		}
	}
}
