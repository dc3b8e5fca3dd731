package nft

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// BenchmarkScopedAddPlanAtScale plans a CNI ADD's nftables on a node of
// synth's 250 local pods, 250 remote peers and 1,000 policies, as the agent
// does it: the table was written with the new pod awaiting its ADD (its
// policy groups rendered ahead) and held back as a peer, and the ADD's
// document adds the pod's own part. "warm" plans again and again, with
// the record and the document in the CPU's caches; "cold" writes over 64
// MiB between two plans (untimed), as the plugin's exec, the render and
// the kernel's work do between an agent's two ADDs: there every pass over
// the record's thousands of sets and chains waits on memory.
//
//	go test -run '^$' -bench ScopedAddPlanAtScale ./apply/nft/
func BenchmarkScopedAddPlanAtScale(b *testing.B) {
	e, _, now, sc := scaleAddNode(b, "bsaddscale", 251)
	var evict []byte
	for _, caches := range []string{"warm", "cold"} {
		b.Run(caches, func(b *testing.B) {
			e.t = b
			if caches == "cold" && evict == nil {
				evict = make([]byte, 64<<20)
			}
			for b.Loop() {
				if evict != nil {
					b.StopTimer()
					for i := 0; i < len(evict); i += 64 {
						evict[i]++
					}
					b.StartTimer()
				}
				ops, err := e.r.PlanScoped(e.reg, e.ns, now, sc)
				if err != nil {
					b.Fatal(err)
				}
				if len(ops) < 2 || len(ops) > 20 {
					b.Fatalf("the ADD plans %d ops", len(ops))
				}
			}
		})
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

// scaleAddNode is a node of synth's local pods, 250 remote peers and
// 1,000 policies whose table was written with its last pod awaiting its
// ADD (its policy groups rendered ahead): was, and now the document with
// that pod set up and held back as a peer, and the ADD's scope.
func scaleAddNode(b testing.TB, name string, localPods int) (e *env, was, now *spec.NFTable, sc Scope) {
	in := synth.Cluster(synth.Params{LocalPods: localPods, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	last := in.Allocations[len(in.Allocations)-1]
	key := last.Metadata.Namespace + "/" + last.Metadata.Name
	in.PeersHeldBack = map[string]bool{key: true}
	before := in
	before.Allocations = in.Allocations[:len(in.Allocations)-1]
	was, now = mustRender(b, before).NFTables, mustRender(b, in).NFTables
	e = newEnv(b, name)
	e.r = New(Options{FullEvery: math.MaxInt})
	e.apply(was)
	return e, was, now, Scope{Pods: []string{key}, Addrs: []string{last.Spec.IP, spec.HostVethName(key)}}
}

func mustRender(b testing.TB, in render.Inputs) *spec.NodeState {
	b.Helper()
	state, err := render.Render(in)
	if err != nil {
		b.Fatal(err)
	}
	return state
}

// BenchmarkScopedAddCommitAtScale is a CNI ADD's and DEL's nftables work
// as the agent does it, on synth's node of 300 local pods (the 250 of
// terwayctl bench's scale row and its 50 timed ADDs), 250 remote peers
// and 1,000 policies: each request plans from a document of its own (the
// sets it changes are new element lists, as render's patch makes them),
// commits and reads back. It reports the ADD's part per round: the scoped
// plan must not grow with the table, and neither must what the commit
// does after writing (indexing the sets it wrote).
//
//	go test -run '^$' -bench ScopedAddCommitAtScale -benchtime 100x ./apply/nft/
func BenchmarkScopedAddCommitAtScale(b *testing.B) {
	e, was, now, sc := scaleAddNode(b, "bsaddcommit", 300)
	// The sets whose element lists differ between the two documents.
	differ := map[string]bool{}
	for i := range now.Sets {
		j := slices.IndexFunc(was.Sets, func(s *spec.NFTSet) bool { return s.Name == now.Sets[i].Name })
		differ[now.Sets[i].Name] = j < 0 || len(was.Sets[j].Elements) != len(now.Sets[i].Elements)
	}
	// fresh is doc with new element lists for those sets, as a request's
	// own render has them.
	fresh := func(doc *spec.NFTable) *spec.NFTable {
		out := *doc
		out.Sets = slices.Clone(doc.Sets)
		for i := range out.Sets {
			if s := out.Sets[i]; differ[s.Name] {
				c := *s
				c.Elements = slices.Clone(s.Elements)
				out.Sets[i] = &c
			}
		}
		return &out
	}
	var add time.Duration
	for b.Loop() {
		addDoc, delDoc := fresh(now), fresh(was)
		began := time.Now()
		ops, err := e.r.PlanScoped(e.reg, e.ns, addDoc, sc)
		if err != nil {
			b.Fatal(err)
		}
		e.run(ops)
		add += time.Since(began)
		if ops, err = e.r.PlanScoped(e.reg, e.ns, delDoc, sc); err != nil {
			b.Fatal(err)
		}
		e.run(ops)
	}
	b.ReportMetric(float64(add)/float64(b.N)/1e6, "add-ms")
}
