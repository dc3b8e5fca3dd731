package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// runnerHarness drives a runner on a fake clock: every run is reported on
// runs (its full flag) and answers with the next outcome from outcomes;
// every time the loop blocks, the time it will run next is on waits.
type runnerHarness struct {
	t        *testing.T
	clk      *clocktesting.FakeClock
	r        *runner
	runs     chan bool
	release  chan runOutcome
	waits    chan time.Time
	ready    atomic.Bool
	lastDue  time.Time
	runCount int
}

const (
	testMin  = time.Second
	testFull = 30 * time.Second
)

func newRunnerHarness(t *testing.T, ready bool) *runnerHarness {
	h := &runnerHarness{t: t, clk: clocktesting.NewFakeClock(time.Unix(1000, 0)),
		runs: make(chan bool, 100), release: make(chan runOutcome), waits: make(chan time.Time, 100)}
	h.ready.Store(ready)
	fn := func(ctx context.Context, full bool) runOutcome {
		h.runs <- full
		select {
		case out := <-h.release:
			return out
		case <-ctx.Done():
			return runOutcome{}
		}
	}
	h.r = newRunner(fn, h.ready.Load, testMin, testFull, h.clk)
	h.r.waiting = func(due time.Time) { h.waits <- due }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.r.loop(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// run expects a run to start, checks its full flag and lets it end with out.
func (h *runnerHarness) run(wantFull bool, out runOutcome) {
	h.t.Helper()
	select {
	case full := <-h.runs:
		h.runCount++
		if full != wantFull {
			h.t.Fatalf("run %d: full=%v, want %v", h.runCount, full, wantFull)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatalf("run %d did not start", h.runCount+1)
	}
	h.release <- out
}

// blocked waits until the loop blocks and returns when it will run next.
func (h *runnerHarness) blocked() time.Time {
	h.t.Helper()
	select {
	case due := <-h.waits:
		// A burst of requests may wake the loop more than once (each
		// wake-up reports its due time again): take the last, so that no
		// stale report is read by a later call.
		for settled := false; !settled; {
			select {
			case due = <-h.waits:
			case <-time.After(20 * time.Millisecond):
				settled = true
			}
		}
		// The timer is made right after the hook; Step must not come first.
		for h.clk.Waiters() == 0 {
			time.Sleep(time.Millisecond)
		}
		h.lastDue = due
		return due
	case full := <-h.runs:
		h.t.Fatalf("unexpected run (full=%v) while waiting for the loop to block", full)
	case <-time.After(10 * time.Second):
		h.t.Fatal("the loop did not block")
	}
	return time.Time{}
}

// noRun checks that no run has started.
func (h *runnerHarness) noRun() {
	h.t.Helper()
	select {
	case full := <-h.runs:
		h.t.Fatalf("unexpected run (full=%v)", full)
	default:
	}
}

// TestRunnerCoalescesAndSpaces: the first run is full; a burst of requests
// before a run makes one run; requests during a run make one more after
// it; a run never starts sooner than the minimum interval after the last
// one ended.
func TestRunnerCoalescesAndSpaces(t *testing.T) {
	h := newRunnerHarness(t, true)
	t0 := h.clk.Now()
	h.run(true, runOutcome{})
	if due := h.blocked(); !due.Equal(t0.Add(testFull)) {
		t.Fatalf("idle after the first run: next run at +%s, want the full resync at +%s", due.Sub(t0), testFull)
	}
	for i := 0; i < 50; i++ {
		h.r.Run()
	}
	if due := h.blocked(); !due.Equal(t0.Add(testMin)) {
		t.Fatalf("requested right after a run: next run at +%s, want +%s (the minimum interval)", due.Sub(t0), testMin)
	}
	h.noRun()
	h.clk.Step(testMin / 2) // the timer does not fire: still no run
	time.Sleep(10 * time.Millisecond)
	h.noRun()
	h.clk.Step(testMin / 2)
	// 50 requests, one run; the requests during it make exactly one more.
	select {
	case full := <-h.runs:
		h.runCount++
		if full {
			t.Fatal("a requested run between full resyncs was full")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no run after the minimum interval")
	}
	for i := 0; i < 20; i++ {
		h.r.Run()
	}
	h.release <- runOutcome{}
	t1 := h.clk.Now()
	if due := h.blocked(); !due.Equal(t1.Add(testMin)) {
		t.Fatalf("requests during a run: next run at +%s after it, want +%s", due.Sub(t1), testMin)
	}
	h.clk.Step(testMin)
	h.run(false, runOutcome{})
	if due := h.blocked(); !due.Equal(t0.Add(testFull)) {
		t.Fatalf("after the burst: next run at +%s, want only the full resync at +%s", due.Sub(t0), testFull)
	}
	h.noRun()
	if h.runCount != 3 {
		t.Fatalf("%d runs, want 3 (first, the 50 requests, the 20 during the run)", h.runCount)
	}
}

// TestRunnerPeriodicFull: without requests, a full run happens every
// full interval; a run that takes long still leaves the minimum interval.
func TestRunnerPeriodicFull(t *testing.T) {
	h := newRunnerHarness(t, true)
	t0 := h.clk.Now()
	h.run(true, runOutcome{})
	for i := 1; i <= 3; i++ {
		due := h.blocked()
		if want := t0.Add(time.Duration(i) * testFull); !due.Equal(want) {
			t.Fatalf("full resync %d at +%s, want +%s", i, due.Sub(t0), want.Sub(t0))
		}
		h.clk.SetTime(due)
		h.run(true, runOutcome{})
	}
	// A run that asks again is followed by a partial run, one interval
	// after it ended.
	h.blocked()
	h.r.Run()
	start := h.clk.Now()
	h.blocked()
	h.clk.Step(testMin)
	select {
	case <-h.runs:
	case <-time.After(10 * time.Second):
		t.Fatal("no run")
	}
	h.clk.Step(5 * time.Second) // the run takes 5 s
	h.release <- runOutcome{Again: true}
	if due := h.blocked(); !due.Equal(start.Add(testMin + 5*time.Second + testMin)) {
		t.Fatalf("run asked again: next at +%s, want the minimum interval after its end", due.Sub(start))
	}
}

// TestRunnerRetries: a run that reports a failed item's retry time is
// followed by a run then, without any request; the earliest retry wins, a
// run with no failures clears it, and a retry never beats the minimum
// interval.
func TestRunnerRetries(t *testing.T) {
	h := newRunnerHarness(t, true)
	t0 := h.clk.Now()
	h.run(true, runOutcome{Retry: t0.Add(4 * time.Second)})
	if due := h.blocked(); !due.Equal(t0.Add(4 * time.Second)) {
		t.Fatalf("retry due at +4s: next run at +%s", due.Sub(t0))
	}
	h.clk.Step(4 * time.Second)
	h.run(false, runOutcome{Retry: h.clk.Now().Add(8 * time.Second)}) // backoff doubled
	t1 := h.clk.Now()
	if due := h.blocked(); !due.Equal(t1.Add(8 * time.Second)) {
		t.Fatalf("retry due at +8s: next run at +%s", due.Sub(t1))
	}
	h.clk.Step(8 * time.Second)
	h.run(false, runOutcome{Retry: h.clk.Now()}) // due at once: still spaced
	t2 := h.clk.Now()
	if due := h.blocked(); !due.Equal(t2.Add(testMin)) {
		t.Fatalf("retry due at once: next run at +%s, want the minimum interval", due.Sub(t2))
	}
	h.clk.Step(testMin)
	h.run(false, runOutcome{}) // recovered
	if due := h.blocked(); !due.Equal(t0.Add(testFull)) {
		t.Fatalf("after recovery: next run at +%s, want the full resync at +%s", due.Sub(t0), testFull)
	}
}

// TestRunnerWaitsForReady: nothing runs before the inputs are synced, not
// even when asked; the first run after is full.
func TestRunnerWaitsForReady(t *testing.T) {
	h := newRunnerHarness(t, false)
	for i := 0; i < 3; i++ {
		h.r.Run()
		h.blocked()
		h.noRun()
		h.clk.Step(readyPoll)
	}
	h.ready.Store(true)
	h.r.Run()
	h.run(true, runOutcome{})
}
