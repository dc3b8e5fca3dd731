package nft

import (
	"fmt"
	"math"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// BenchmarkConvergedPlan measures planning a converged table of 250 pods:
// full (read the kernel, decompile, diff) and partial (diff against the
// record only; periodic full syncs switched off). Both plan zero ops.
func BenchmarkConvergedPlan(b *testing.B) {
	e := newEnv(b, "bconv")
	e.r = New(Options{FullEvery: math.MaxInt})
	doc := testDoc(pods(250), nil)
	e.apply(doc)
	for _, full := range []bool{true, false} {
		b.Run(fmt.Sprintf("full=%t", full), func(b *testing.B) {
			e.t = b
			e.plan(doc, full) // warm the canonical cache, as a running agent has it
			for b.Loop() {
				if ops := e.plan(doc, full); len(ops) != 0 {
					b.Fatalf("converged plan has %d ops", len(ops))
				}
			}
		})
	}
}

// BenchmarkOnePodChange measures a partial sync (plan, one transaction,
// read-back) that changes one pod's chain and set elements, with 10 and
// with 250 pods in the table: the cost should barely depend on the number
// of other pods. Periodic full syncs are switched off to measure the
// partial path alone.
func BenchmarkOnePodChange(b *testing.B) {
	for _, n := range []int{10, 250} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			e := newEnv(b, fmt.Sprintf("bone%d", n))
			e.r = New(Options{FullEvery: math.MaxInt})
			ps := pods(n)
			docs := []*spec.NFTable{testDoc(ps, nil), testDoc(ps, map[int]int{n / 2: 1})}
			e.apply(docs[0])
			i := 0
			for b.Loop() {
				i++
				if ops := e.apply(docs[i%2]); len(ops) != 6 {
					b.Fatalf("plan has %d ops, want 5 and the commit", len(ops))
				}
			}
		})
	}
}

// BenchmarkLargeSetChange is defect 5: a fresh fill of a table with a
// 50,000-element concatenated interval set (a new Reconciler, so nothing
// is cached: canonicalise, one transaction, read-back) against the change
// of that set to 42,000 elements on a node that holds it (a partial sync,
// as the agent's next sync is). The change must cost at most twice the
// fresh fill. Run (in one command, so the two are comparable):
//
//	go test -run XXX -bench LargeSetChange -benchtime 5x ./apply/nft/
func BenchmarkLargeSetChange(b *testing.B) {
	before, after := bigSetDoc(50000, nil), bigSetDoc(50000, shrink)
	e := newEnv(b, "blarge")
	b.Run("fresh-50000", func(b *testing.B) {
		e.t = b
		for b.Loop() {
			b.StopTimer()
			e.nft("add", "table", "inet", "terway") // so that delete finds one
			e.nft("delete", "table", "inet", "terway")
			e.r = New(Options{})
			b.StartTimer()
			e.apply(before)
		}
	})
	// Staged (the default: filled in short transactions outside the
	// plan's, twice) and in the plan's one transaction (StageMin < 0).
	for _, c := range []struct {
		name  string
		stage int
	}{{"change-50000-42000", 0}, {"change-50000-42000-one-transaction", -1}} {
		b.Run(c.name, func(b *testing.B) {
			e.t = b
			for b.Loop() {
				b.StopTimer()
				e.r = New(Options{StageMin: c.stage})
				e.apply(before)
				b.StartTimer()
				if ops := e.apply(after); len(ops) != 3 {
					b.Fatalf("the change plans %d ops, want the set, its chain and the commit", len(ops))
				}
			}
		})
	}
}

// BenchmarkLargeSetChangeWays measures both ways of a large change: the
// set recreated in the transaction (the default) and its elements deleted
// one by one (ReplaceCost -1), at 10,000 -> 8,400 elements, where the
// element-by-element way still ends within a minute (at 50,000 it took
// 3 min 23 s); next to a fresh fill of the same document.
//
//	go test -run XXX -bench LargeSetChangeWays -benchtime 1x ./apply/nft/
func BenchmarkLargeSetChangeWays(b *testing.B) {
	before, after := bigSetDoc(10000, nil), bigSetDoc(10000, shrink)
	e := newEnv(b, "bways")
	b.Run("fresh-10000", func(b *testing.B) {
		e.t = b
		for b.Loop() {
			b.StopTimer()
			e.nft("add", "table", "inet", "terway") // so that delete finds one
			e.nft("delete", "table", "inet", "terway")
			e.r = New(Options{})
			b.StartTimer()
			e.apply(before)
		}
	})
	for _, c := range []struct {
		name string
		cost int
		ops  int
	}{{"recreate", DefaultReplaceCost, 3}, {"element-by-element", -1, 1601}} {
		b.Run(c.name+"-10000-8400", func(b *testing.B) {
			e.t = b
			for b.Loop() {
				b.StopTimer()
				e.r = New(Options{ReplaceCost: c.cost})
				e.apply(before)
				b.StartTimer()
				if ops := e.apply(after); len(ops) != c.ops {
					b.Fatalf("the change plans %d ops, want %d", len(ops), c.ops)
				}
			}
		})
	}
}
