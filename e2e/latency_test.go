package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// change is one API write and the kernel change it must cause.
type change struct {
	what string
	// watch opens a watch on the written object from now on: its first
	// event marks the moment the write was committed and visible to every
	// watcher, the agent's informers included. This leaves kubectl's own
	// start-up (100-300 ms) out of the figure.
	watch func(ctx context.Context) (watch.Interface, error)
	write func()
	// kernel reports whether the node's kernel shows the change yet.
	kernel func() bool
	// bound is the most the change may take; the resync interval when 0.
	bound time.Duration
}

// latency is one measurement, for the summary at the end of a test.
type latency struct {
	what       string
	apiToKern  time.Duration // API write visible to watchers -> kernel changed
	command    time.Duration // how long the write command itself ran
	resolution time.Duration // the kernel poll's period plus one poll
}

// measure makes the write and returns how long after the API server
// committed it the kernel showed it. The kernel is polled every 10 ms from
// before the write, concurrently with the watch, so neither observation
// waits for the other.
func (e *env) measure(c change) latency {
	e.t.Helper()
	bound := c.bound
	if bound == 0 {
		bound = e.resync
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound+30*time.Second)
	defer cancel()
	w, err := c.watch(ctx)
	if err != nil {
		e.t.Fatalf("%s: watch: %v", c.what, err)
	}

	var wg sync.WaitGroup
	seenAt, kernelAt := make(chan time.Time, 1), make(chan time.Time, 1)
	var pollCost time.Duration
	wg.Add(2)
	go func() {
		defer wg.Done()
		for ev := range w.ResultChan() {
			if ev.Type != watch.Bookmark {
				seenAt <- time.Now()
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			t0 := time.Now()
			ok := c.kernel()
			pollCost = time.Since(t0)
			if ok {
				kernelAt <- time.Now()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// Run last to first: end the poller and the watch, then wait for both.
	defer wg.Wait()
	defer w.Stop()
	defer cancel()

	start := time.Now()
	c.write()
	cmd := time.Since(start)
	var seen, kern time.Time
	select {
	case seen = <-seenAt:
	case <-ctx.Done():
		e.t.Fatalf("%s: the API server's watch never delivered the write", c.what)
	}
	select {
	case kern = <-kernelAt:
	case <-time.After(bound + 10*time.Second):
		e.t.Fatalf("%s: the kernel did not change within %s of the API write", c.what, bound+10*time.Second)
	}
	d := kern.Sub(seen)
	if d < 0 {
		// The agent and this test watch concurrently; the kernel poll can
		// see the change before this watch's goroutine runs.
		d = 0
	}
	l := latency{what: c.what, apiToKern: d, command: cmd, resolution: 10*time.Millisecond + pollCost}
	e.t.Logf("LATENCY %s: API write -> kernel %s (write command %s; poll resolution ~%s)",
		c.what, d.Round(time.Millisecond), cmd.Round(time.Millisecond), l.resolution.Round(time.Millisecond))
	if d > bound {
		e.t.Errorf("%s: reached the kernel %s after the API write, beyond %s", c.what, d.Round(time.Millisecond), bound)
	}
	return l
}

// summary formats measurements as a table for the test log.
func summary(ls []latency) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-46s %12s %12s\n", "API write -> kernel", "latency", "command")
	for _, l := range ls {
		fmt.Fprintf(&b, "%-46s %12s %12s\n", l.what, l.apiToKern.Round(time.Millisecond), l.command.Round(time.Millisecond))
	}
	return b.String()
}

// Watches on one object from the current resourceVersion: the list gives
// the version, so the watch delivers only what happens after it.

func watchPolicy(c kubernetes.Interface, ns, name string) func(context.Context) (watch.Interface, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return func(ctx context.Context) (watch.Interface, error) {
		l, err := c.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, err
		}
		return c.NetworkingV1().NetworkPolicies(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
	}
}

func watchNamespace(c kubernetes.Interface, name string) func(context.Context) (watch.Interface, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return func(ctx context.Context) (watch.Interface, error) {
		l, err := c.CoreV1().Namespaces().List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, err
		}
		return c.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
	}
}

func watchPod(c kubernetes.Interface, ns, name string) func(context.Context) (watch.Interface, error) {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return func(ctx context.Context) (watch.Interface, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return nil, err
		}
		return c.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: l.ResourceVersion})
	}
}
