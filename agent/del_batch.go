package agent

import (
	"context"
	"fmt"
	"strings"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/chaos"
	"github.com/terway-reconciler/terway/spec"
)

// DELs that arrive together are torn down together, as ADDs are set up
// together (add_batch.go): a node drained, or a deployment scaled down,
// sends many at once. The kernel holds each veth's deletion until RCU
// grace periods have passed, about 20 ms here, and DELs one after the
// other behind the agent's lock waited for each other's: eight at once
// took 176 ms each at the agent. A batch releases its attachments in one
// store transaction, renders once, and applies one plan scoped to all its
// pods, whose
// veth deletions run side by side (op.Op.Concurrent). A pod whose part
// fails to be removed fails its own DEL; a failure of the node's (the
// nftables commit, the render) fails them all.

type delWaiter struct {
	req  *wire.Request
	done chan error
}

// tearDown joins the current batch of DELs and waits for its answer.
func (a *Agent) tearDown(ctx context.Context, req *wire.Request) error {
	w := &delWaiter{req: req, done: make(chan error, 1)}
	if a.dels.join(w) {
		// The batch is every waiter's: the runtime giving up on the
		// leader's DEL must not fail the others.
		a.leadTearDown(context.WithoutCancel(ctx))
	}
	return <-w.done // the leader answers every waiter, whatever happens
}

// leadTearDown takes the queued DELs and tears them down under the
// agent's lock. A panic (recovered above, by the CNI server, for the
// leader's request) leaves neither the lock held nor a waiter without an
// answer.
func (a *Agent) leadTearDown(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	batch := a.dels.take()
	defer answerPanic(batch, func(w *delWaiter, msg string) {
		select {
		case w.done <- cniErr(codeTryAgainLater, "DEL "+w.req.ContainerID, msg):
		default: // answered already
		}
	})
	a.tearDownBatch(ctx, batch)
}

// answerPanic, deferred by a batch's leader, gives every waiter of the
// batch an answer when the batch panics (answer must not block on a waiter
// answered already), then lets the panic go on.
func answerPanic[W any](batch []W, answer func(w W, msg string)) {
	if r := recover(); r != nil {
		for _, w := range batch {
			answer(w, fmt.Sprintf("internal error: %v", r))
		}
		panic(r)
	}
}

// podFailures sorts the failures of a batch's apply: a failure of a pod's
// own item is that pod's (failed, by key); any other (a node-level item,
// the nftables commit, the plan itself: err) is common to all. Items
// observed, not rendered, carry no pod: a deleted pod's are known by its
// host veth, whose name derives from the pod's key.
func podFailures(rep *engine.Report, err error, keys []string) (failed map[string]error, common error) {
	failed, common = map[string]error{}, err
	if rep == nil {
		return failed, common
	}
	for _, r := range rep.Results {
		if r.Err == nil {
			continue
		}
		ferr := fmt.Errorf("%s: %w", r.Op.String(), r.Err)
		pod := r.Op.Pod
		for _, key := range keys {
			if pod != "" {
				break
			}
			if strings.Contains(r.Op.Key+" "+r.Op.Text, spec.HostVethName(key)) {
				pod = key
			}
		}
		switch {
		case pod != "" && failed[pod] == nil:
			failed[pod] = ferr
		case pod == "" && common == nil:
			common = ferr
		}
	}
	return failed, common
}

// departure is one DEL of a batch after its release.
type departure struct {
	w        *delWaiter
	released spec.Allocation
	found    bool
	departs  bool
	key      string
}

// finish does what the DEL leaves for after its kernel objects are gone
// (or could not be removed), then answers it.
func (a *Agent) finish(d *departure, err error) {
	if d.departs {
		// Its address stays in the peer sets, and with this pod, until
		// the withdrawal (withdrawal.go).
		a.departing.wake()
	} else if d.found {
		// The cloud gets the address back once the pod's kernel objects
		// are gone (an exclusive ENI back in the node), or now when they
		// cannot be rendered.
		a.cloudRelease(d.released)
	}
	// Whatever the agent opened in the pod's namespace goes with the pod:
	// an open descriptor or socket keeps a deleted namespace alive, and
	// the node's id for it, until the agent exits.
	if d.found && d.released.Spec.Netns != d.w.req.Netns {
		a.reg.Forget(d.released.Spec.Netns)
	}
	a.reg.Forget(d.w.req.Netns)
	d.w.done <- err
}

// tearDownBatch releases the attachments of batch, in one transaction,
// and removes their pods' kernel objects; called with the agent's lock
// held. Each round removes pods that no other DEL of the round names: a
// pod whose two sandboxes' DELs came together is removed in two rounds,
// each with its own address (PlanOptions.PodIPs holds one per pod).
func (a *Agent) tearDownBatch(ctx context.Context, batch []*delWaiter) {
	reqs := make([]*wire.Request, len(batch))
	for i, w := range batch {
		reqs[i] = w.req
	}
	var released []*departure
	for i, o := range a.releaseAll(reqs) {
		w := batch[i]
		if o.err != nil {
			w.done <- cniErr(codeTryAgainLater, "release attachment "+w.req.ContainerID+"/"+w.req.IfName, o.err.Error())
			continue
		}
		d := &departure{w: w, released: o.released, found: o.found, departs: o.departs, key: w.req.Args.Key()}
		if d.found {
			d.key = o.released.Metadata.Namespace + "/" + o.released.Metadata.Name
			chaos.Point(chaos.DelAfterRelease)
		}
		if d.key == "" {
			a.finish(d, nil) // nothing known about it: nothing to remove
			continue
		}
		released = append(released, d)
	}
	for len(released) > 0 {
		var round, next []*departure
		in := map[string]bool{}
		for _, d := range released {
			if in[d.key] {
				next = append(next, d)
				continue
			}
			in[d.key] = true
			round = append(round, d)
		}
		a.remove(ctx, round)
		released = next
	}
}

// remove takes out the kernel objects of the pods of round, one DEL's
// each, in one plan, and answers their DELs.
func (a *Agent) remove(ctx context.Context, round []*departure) {
	if !a.src.Synced() {
		// Without the inputs no document can be rendered; the pods' kernel
		// objects go with their netns or at the first full reconcile.
		for _, d := range round {
			a.held.release(d.key)
			a.finish(d, nil)
		}
		return
	}
	// Without the pending ADDs: they allocate without the lock, and one
	// may have been given an address released above. Its pod's items are
	// its ADD's to write, after these DELs.
	state, pending, _, err := a.renderSettledFor(forCNI, nil)
	if err != nil {
		for _, d := range round {
			a.finish(d, cniErr(codeTryAgainLater, "render node "+a.cfg.NodeName, err.Error()))
		}
		return
	}
	opts := engine.PlanOptions{PodIPs: map[string]string{}}
	var gone []*departure
	for _, d := range round {
		if state.PodEntry(d.key) != nil || pendingPod(pending, d.key) {
			// Another attachment of the pod (a newer sandbox) is live, or
			// its ADD is under way (a retried ADD of a live one, say): its
			// items stay.
			a.finish(d, nil)
			continue
		}
		gone = append(gone, d)
		opts.Pods = append(opts.Pods, d.key)
		if d.found {
			opts.Namespaces = append(opts.Namespaces, d.released.Spec.Netns) // an exclusive ENI comes back from there
			opts.PodIPs[d.key] = d.released.Spec.IP                          // its rules are found by address
		}
	}
	if len(gone) == 0 {
		return
	}
	rep, err := a.apply(ctx, "DEL "+strings.Join(opts.Pods, ", "), state, opts)
	failed, common := podFailures(rep, err, opts.Pods)
	for _, d := range gone {
		ferr := failed[d.key]
		if ferr == nil {
			ferr = common
		}
		if ferr != nil {
			a.finish(d, cniErr(codeTryAgainLater, "remove pod "+d.key, ferr.Error()))
			continue
		}
		a.held.release(d.key) // nothing of it left to admit
		a.log.Info("pod deleted", "pod", d.key, "container", d.w.req.ContainerID, "released", d.found, "batch", len(gone))
		a.finish(d, nil)
	}
}
