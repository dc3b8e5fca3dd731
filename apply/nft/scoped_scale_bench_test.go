package nft

import (
	"math"
	"testing"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// BenchmarkScopedAddPlanAtScale plans a CNI ADD's nftables on a node of
// synth's 250 local pods, 250 remote peers and 1,000 policies, as the agent
// does it: the table was written with the new pod awaiting its ADD (its
// policy groups rendered ahead) and held back as a peer, and the ADD's
// document adds the pod's own part.
//
//	go test -run '^$' -bench ScopedAddPlanAtScale ./apply/nft/
func BenchmarkScopedAddPlanAtScale(b *testing.B) {
	in := synth.Cluster(synth.Params{LocalPods: 251, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	last := in.Allocations[len(in.Allocations)-1]
	key := last.Metadata.Namespace + "/" + last.Metadata.Name
	in.PeersHeldBack = map[string]bool{key: true}
	before := in
	before.Allocations = in.Allocations[:len(in.Allocations)-1]
	was, now := mustRender(b, before), mustRender(b, in)
	e := newEnv(b, "bsaddscale")
	e.r = New(Options{FullEvery: math.MaxInt})
	e.apply(was.NFTables)
	sc := Scope{Pods: []string{key}, Addrs: []string{last.Spec.IP}}
	for b.Loop() {
		ops, err := e.r.PlanScoped(e.reg, e.ns, now.NFTables, sc)
		if err != nil {
			b.Fatal(err)
		}
		if len(ops) < 2 || len(ops) > 20 {
			b.Fatalf("the ADD plans %d ops", len(ops))
		}
	}
}

// BenchmarkCheckAheadAtScale is a converged full sync's nftables work on
// synth's node of 250 local pods, 250 remote and 1,000 policies: the check
// ahead of the lock, then the full plan it stands for (no ops). "read"
// reads and compares the table each time, as every check did before
// record.agreed; "generation" finds the ruleset generation moved by
// nothing since the last read, as the checks between two reads do.
//
//	go test -run '^$' -bench CheckAheadAtScale ./apply/nft/
func BenchmarkCheckAheadAtScale(b *testing.B) {
	in := synth.Cluster(synth.Params{LocalPods: 250, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	doc := mustRender(b, in)
	e := newEnv(b, "bcheckscale")
	e.r = New(Options{FullEvery: math.MaxInt})
	e.apply(doc.NFTables)
	for _, way := range []string{"read", "generation"} {
		b.Run(way, func(b *testing.B) {
			e.t = b
			reads, _ := e.r.CheckCounts()
			for b.Loop() {
				if way == "read" {
					e.r.mu.Lock()
					e.r.records[e.ns].agreed.Store(nil)
					e.r.mu.Unlock()
				}
				e.r.CheckAhead(e.reg, e.ns, true)
				if ops := e.plan(doc.NFTables, true); len(ops) != 0 {
					b.Fatalf("converged full plan has %d ops", len(ops))
				}
			}
			now, _ := e.r.CheckCounts()
			b.ReportMetric(float64(now-reads)/float64(b.N), "reads/op")
		})
	}
}

func mustRender(b *testing.B, in render.Inputs) *spec.NodeState {
	b.Helper()
	state, err := render.Render(in)
	if err != nil {
		b.Fatal(err)
	}
	return state
}
