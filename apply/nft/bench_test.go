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
