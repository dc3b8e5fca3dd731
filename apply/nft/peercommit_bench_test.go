package nft

import (
	"math"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/synth"
)

// BenchmarkPeerElementsAtScale writes 4 local pods' addresses out of every
// peer set that holds them and back in (their withdrawal after a DEL, and
// their admission after an ADD: the agent's withdrawal.go and
// admission.go), each as a scoped plan and its commit, on synth's node of
// 250 local pods, 250 remote and 1,000 policies. It reports the time of
// each per round: the kernel takes an element out of a set of
// concatenated ranges far more slowly than it puts one in, which is why
// the agent withdraws a pod or a few per step.
//
//	go test -run '^$' -bench PeerElementsAtScale -benchtime 5x ./apply/nft/
func BenchmarkPeerElementsAtScale(b *testing.B) {
	in := synth.Cluster(synth.Params{LocalPods: 250, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	const pods = 4
	sc := Scope{}
	held := map[string]bool{}
	for _, a := range in.Allocations[len(in.Allocations)-pods:] {
		key := a.Metadata.Namespace + "/" + a.Metadata.Name
		sc.Pods = append(sc.Pods, key)
		sc.Addrs = append(sc.Addrs, a.Spec.IP)
		held[key] = true
	}
	peers := mustRender(b, in)
	in.PeersHeldBack = held
	none := mustRender(b, in)
	e := newEnv(b, "bpeerelems")
	e.r = New(Options{FullEvery: math.MaxInt})
	e.apply(peers.NFTables)
	var out, back time.Duration
	elems := 0
	for b.Loop() {
		began := time.Now()
		ops, err := e.r.PlanScoped(e.reg, e.ns, none.NFTables, sc)
		if err != nil {
			b.Fatal(err)
		}
		elems = len(ops) - 1 // the commit
		e.run(ops)
		between := time.Now()
		if ops, err = e.r.PlanScoped(e.reg, e.ns, peers.NFTables, sc); err != nil {
			b.Fatal(err)
		}
		e.run(ops)
		out, back = out+between.Sub(began), back+time.Since(between)
	}
	if elems < pods {
		b.Fatalf("the pods' withdrawal planned %d elements", elems)
	}
	b.ReportMetric(float64(out)/float64(b.N)/1e6, "withdraw-ms")
	b.ReportMetric(float64(back)/float64(b.N)/1e6, "admit-ms")
	b.ReportMetric(float64(elems), "elements")
}
