package engine_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/spec"
)

// withBigSet returns a copy of s whose table also holds a concatenated
// interval set "big" of the elements i < 50,000 that keep admits, and a
// chain that matches it: a large policy's peers (ipBlocks outside the
// node's pods, from 198.19.0.0) and ports, both of pod x/p0 (the pod the
// policy selects).
func withBigSet(s *spec.NodeState, keep func(int) bool) *spec.NodeState {
	out := *s
	t := *s.NFTables
	t.Sets = slices.Clone(t.Sets)
	t.Chains = slices.Clone(t.Chains)
	big := &spec.NFTSet{Name: "big", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
		Comment: "a large policy peer set", Pod: bigSetPod}
	for i := range 50000 {
		if keep == nil || keep(i) {
			ip := fmt.Sprintf("198.19.%d.%d", i/256, i%256)
			big.Elements = append(big.Elements, spec.NFTElement{Key: []string{ip, "tcp", fmt.Sprintf("%d-%d", 1000+i%100, 2000+i%100)}})
		}
	}
	t.Sets = append(t.Sets, big)
	t.Chains = append(t.Chains, spec.NFTChain{Name: "big-peers", Comment: "admits the big set", Pod: bigSetPod, Rules: []spec.NFTRule{{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr, spec.SelL4Proto, spec.SelTHDport}, Set: "big"}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}}})
	t.Canonicalize()
	out.NFTables = &t
	return &out
}

// bigSetPod is the pod whose policy holds the big set.
const bigSetPod = "x/p0"

// BenchmarkAddDuringLargeSetChange measures the CNI ADD of a pod (a plan
// scoped to it, as the agent's ADD runs) on a node of 20 pods whose table
// holds a 50,000-element set: first idle, then while another goroutine
// keeps changing that set between 50,000 and 42,000 elements (the change
// of defect 5: x/p0's policy edited). The change is applied with a plan
// scoped to x/p0, so that it and the ADDs of x/new contend in nftables and
// the kernel only: an unscoped apply would also set up or remove x/new
// whenever its document disagreed with the ADD in flight, which is the
// agent's runner's to order, not the apply engine's. It reports the ADDs'
// p50 and p99 in both phases, their ratio, the ADDs that failed and the
// changes applied meanwhile. Each ADD is followed by the pod's DEL,
// untimed; the ADD's work is the same in both phases (its pod's objects).
// The busy phase goes on until it has at least 100 ADDs and two whole
// changes were applied during it, so that every ADD meets a change in
// progress; then as many ADDs run idle, so that both p99 come from as many
// samples (with 100, p99 is the second largest). Run:
//
//	go test -run XXX -bench AddDuringLargeSetChange -benchtime 1x ./apply/engine/
func BenchmarkAddDuringLargeSetChange(b *testing.B) {
	const adds = 100
	n := scaleNode(b, 20)
	without := n.render()
	n.addPod("x", "new", "198.18.3.10", map[string]string{"app": "svc-1"}, nil, "")
	with := n.render()
	shrink := func(i int) bool { return i%25 >= 4 }
	// docs[pod present][set shrunk]
	var docs [2][2]*spec.NodeState
	for p, s := range []*spec.NodeState{without, with} {
		docs[p][0], docs[p][1] = withBigSet(s, nil), withBigSet(s, shrink)
	}
	n.apply(docs[0][0])
	ctx := context.Background()
	scope := engine.PlanOptions{Pods: []string{"x/new"}, PodIPs: map[string]string{"x/new": "198.18.3.10"}}

	// What the agent's inputs say now: is the pod there, which set.
	var mu sync.Mutex
	present, shrunk := 0, 0
	doc := func() *spec.NodeState { mu.Lock(); defer mu.Unlock(); return docs[present][shrunk] }

	var failed atomic.Int64
	cycle := func() time.Duration {
		mu.Lock()
		present = 1
		mu.Unlock()
		start := time.Now()
		rep, err := n.eng.Apply(ctx, doc(), scope)
		d := time.Since(start)

		if err != nil || rep.Err() != nil {
			failed.Add(1)
			b.Logf("ADD: %v %v", err, rep.Err())
		}
		mu.Lock()
		present = 0
		mu.Unlock()
		if rep, err := n.eng.Apply(ctx, doc(), scope); err != nil || rep.Err() != nil {
			b.Logf("DEL: %v %v", err, rep.Err())
		}
		return d
	}
	run := func(atLeast int, more func() bool) []time.Duration {
		var ds []time.Duration
		for len(ds) < atLeast || more() {
			ds = append(ds, cycle())
		}
		slices.Sort(ds)
		return ds
	}
	never := func() bool { return false }
	var idleFailed int64
	for b.Loop() {
		cycle() // warm: the pod's namespace handles, the canonical cache

		stop := make(chan struct{})
		var changes, changeFailed atomic.Int64
		var changeTime atomic.Int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				shrunk = 1 - shrunk
				mu.Unlock()
				start := time.Now()
				rep, err := n.eng.Apply(ctx, doc(), engine.PlanOptions{Pods: []string{bigSetPod}})
				changeTime.Add(int64(time.Since(start)))
				changes.Add(1)
				if err != nil || rep.Err() != nil {
					changeFailed.Add(1)
					b.Logf("change: %v %v", err, rep.Err())
				}
			}
		}()
		busy := run(adds, func() bool { return changes.Load() < 3 })
		busyFailed := failed.Swap(0)
		close(stop)
		wg.Wait()
		// Idle after, with as many ADDs: a p99 of as many samples.
		idle := run(len(busy), never)
		idleFailed = failed.Load()

		b.Logf("slowest ADDs idle %v, during changes %v", idle[max(len(idle)-5, 0):], busy[max(len(busy)-5, 0):])
		q := func(ds []time.Duration, p float64) float64 {
			return float64(ds[int(p*float64(len(ds)-1))]) / float64(time.Millisecond)
		}
		b.ReportMetric(q(idle, 0.5), "idle-p50-ms")
		b.ReportMetric(q(idle, 0.99), "idle-p99-ms")
		b.ReportMetric(q(busy, 0.5), "change-p50-ms")
		b.ReportMetric(q(busy, 0.99), "change-p99-ms")
		b.ReportMetric(q(busy, 0.99)/q(idle, 0.99), "p99-ratio")
		b.ReportMetric(float64(idleFailed+busyFailed), "add-failures")
		b.ReportMetric(float64(len(busy)), "change-adds")
		b.ReportMetric(float64(changes.Load()), "changes")
		b.ReportMetric(float64(changeFailed.Load()), "change-failures")
		b.ReportMetric(float64(changeTime.Load())/float64(max(changes.Load(), 1))/float64(time.Millisecond), "change-ms")
	}
}
