package agent

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// runner runs the agent's sync the way kube-proxy's BoundedFrequencyRunner
// and statedb's reconciler run theirs, instead of once per event:
//
//   - Requests are coalesced: any number of Run calls before a run starts
//     (a burst of pod and policy changes) make one run, and requests that
//     arrive during a run make one more after it.
//   - Runs are spaced: a run starts at least minInterval after the previous
//     one ended, so a node whose sync takes 4 s is not kept busy syncing by
//     a steady trickle of changes, and the CNI path keeps CPU and the
//     kernel for itself between runs.
//   - A run is full (the nftables table is read back to catch drift, or
//     found unchanged since its last read by the ruleset generation, which
//     every nftables change moves: nft.Reconciler.CheckAhead) every
//     fullInterval, and the first run is full.
//   - Retries are scheduled: a run reports when the earliest of its failed
//     items is due again (status.go keeps a backoff per item), and the
//     runner runs then, even if nothing else asks.
//   - Nothing runs until ready says so (the inputs' first listing): an
//     empty cache must never prune a live node.
//
// One goroutine (loop) owns the schedule; Run only signals it.
type runner struct {
	fn           func(ctx context.Context, full bool) runOutcome
	ready        func() bool
	minInterval  time.Duration
	fullInterval time.Duration
	// poll is how often ready is asked again while it says no.
	poll  time.Duration
	clock clock.Clock
	kick  chan struct{}
	// waiting, if set, is called each time the loop blocks, with the time
	// of the next run it has scheduled (tests read the schedule from it).
	waiting func(due time.Time)

	// waitMu guards waiters: RunAndWait callers, released by the end of
	// the first run that starts after they asked.
	waitMu  sync.Mutex
	waiters []chan struct{}
}

// runOutcome is what one run tells the runner about the next.
type runOutcome struct {
	// Retry, when not zero, is when the earliest failed item is due for
	// another attempt.
	Retry time.Time
	// Again asks for another run as soon as minInterval allows: this one
	// left work (a follow-up round after links were re-created, or part of
	// its plan was dropped because a CNI request changed the same pods).
	Again bool
}

// Defaults of the runner's schedule.
const (
	// DefaultMinSyncInterval: one second bounds how long a change waits
	// while keeping a node under churn from syncing back to back (kube-
	// proxy's --min-sync-period defaults to 1s for the same reason).
	DefaultMinSyncInterval = time.Second
	// readyPoll: the inputs' first listing usually completes within a
	// second; polling at 100 ms makes the first sync follow it closely.
	readyPoll = 100 * time.Millisecond
)

func newRunner(fn func(ctx context.Context, full bool) runOutcome, ready func() bool, minInterval, fullInterval time.Duration, clk clock.Clock) *runner {
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &runner{fn: fn, ready: ready, minInterval: minInterval, fullInterval: fullInterval,
		poll: readyPoll, clock: clk, kick: make(chan struct{}, 1)}
}

// Run asks for a run. It never blocks; requests coalesce.
func (r *runner) Run() {
	select {
	case r.kick <- struct{}{}:
	default: // a request is already pending
	}
}

// RunAndWait asks for a run and waits until a run that started after the
// request has ended, or ctx ends.
func (r *runner) RunAndWait(ctx context.Context) error {
	done := make(chan struct{})
	r.waitMu.Lock()
	r.waiters = append(r.waiters, done)
	r.waitMu.Unlock()
	r.Run()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop runs until ctx ends.
func (r *runner) loop(ctx context.Context) {
	pending := true // the first run
	var lastEnd, nextFull, retry time.Time
	for {
		select {
		case <-r.kick: // asked during the last run
			pending = true
		default:
		}
		now := r.clock.Now()
		due := nextFull // zero: the first run is full and due now
		if !retry.IsZero() && retry.Before(due) {
			due = retry
		}
		if pending {
			due = now
		}
		if earliest := lastEnd.Add(r.minInterval); !lastEnd.IsZero() && due.Before(earliest) {
			due = earliest
		}
		if !due.After(now) && !r.ready() {
			due = now.Add(r.poll)
		}
		if !due.After(now) {
			full := nextFull.IsZero() || !now.Before(nextFull)
			pending = false
			r.waitMu.Lock()
			waiters := r.waiters
			r.waiters = nil
			r.waitMu.Unlock()
			out := r.fn(ctx, full)
			for _, w := range waiters {
				close(w)
			}
			if ctx.Err() != nil {
				return
			}
			lastEnd = r.clock.Now()
			if full {
				nextFull = now.Add(r.fullInterval)
			}
			if out.Again {
				pending = true
			}
			// The run saw every failed item: its earliest retry replaces ours.
			retry = out.Retry
			continue
		}
		if r.waiting != nil {
			r.waiting(due)
		}
		t := r.clock.NewTimer(due.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.kick:
			pending = true
		case <-t.C():
		}
		t.Stop()
	}
}
