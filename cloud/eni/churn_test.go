package eni_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// churn runs pods through a warm pool: each step deletes a random running
// pod and starts a new one, and every tenth step a burst of five starts
// and five deletions follows; a resync runs every resyncEvery pod starts
// (the agent's is every 5 minutes). It returns the pods started.
func churn(t testing.TB, r *eni.Reconciler, steps, resyncEvery int) int {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 7))
	running := map[string]string{} // owner -> IP
	seq := 0
	add := func() {
		owner := fmt.Sprintf("churn-%d", seq)
		seq++
		a, err := r.AllocateIP(ctx, owner)
		if err != nil {
			t.Fatalf("allocate %s: %v", owner, err)
		}
		for o, ip := range running {
			if ip == a.IP {
				t.Fatalf("IP %s handed to %s while %s holds it", ip, owner, o)
			}
		}
		running[owner] = a.IP
		if resyncEvery > 0 && seq%resyncEvery == 0 {
			if err := r.Resync(ctx); err != nil {
				t.Fatalf("resync: %v", err)
			}
		}
	}
	del := func() {
		for _, owner := range slices.Sorted(maps.Keys(running)) { // sorted, so that the seed alone picks the pod
			if rng.IntN(3) == 0 && len(running) > 1 {
				continue
			}
			ip := running[owner]
			if err := r.ReleaseIP(owner, ip); err != nil {
				t.Fatalf("release %s: %v", owner, err)
			}
			delete(running, owner)
			return
		}
	}
	for range 10 {
		add()
	}
	// Let the pool settle after warming up; from here on, count.
	if err := r.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	start := seq
	for i := range steps {
		del()
		add()
		if i%10 == 9 {
			for range 5 {
				add()
			}
			for range 5 {
				del()
			}
		}
	}
	return seq - start
}

// In steady churn with a warm pool (min 3, max 10 idle), pods cost well
// under 0.2 API calls each: IPs come from and go back to the pool, which
// refills in batches and gives back only what exceeds its maximum.
func TestSteadyChurnAPICallsPerPod(t *testing.T) {
	e := startEmulator(t, nil)
	r := start(t, e.config(3, 10), nil)
	if err := r.Maintain(context.Background()); err != nil { // warm the pool
		t.Fatal(err)
	}
	before := e.emu.Calls()
	// Warm-up pods are counted too: they start the churn.
	pods := 10 + churn(t, r, 300, 100)
	if err := r.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := e.emu.Calls()
	calls := total(after) - total(before)
	perPod := float64(calls) / float64(pods)
	t.Logf("%d pods started, %d API calls (%d writes): %.3f calls per pod; calls %v", pods, calls, writes(after)-writes(before), perPod, diff(before, after))
	if perPod > 0.2 {
		t.Fatalf("%.3f API calls per pod, goal <= 0.2", perPod)
	}
	checkNoLeaks(t, e, r)
}

// BenchmarkSteadyChurn reports API calls per pod start in steady churn
// (one step = one pod deleted and one started, bursts included).
func BenchmarkSteadyChurn(b *testing.B) {
	e := startEmulator(b, nil)
	r := start(b, e.config(3, 10), nil)
	if err := r.Maintain(context.Background()); err != nil {
		b.Fatal(err)
	}
	before := e.emu.Calls()
	b.ResetTimer()
	pods := churn(b, r, b.N, 100)
	b.StopTimer()
	after := e.emu.Calls()
	b.ReportMetric(float64(total(after)-total(before))/float64(pods), "calls/pod")
	b.ReportMetric(float64(writes(after)-writes(before))/float64(pods), "writes/pod")
}

func diff(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
