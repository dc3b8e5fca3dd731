package render_test

import (
	"fmt"
	"testing"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/render"
)

// BenchmarkRender renders whole synthetic nodes: 110 local pods (kubelet's
// default maximum) with 50 policies; a cluster of 1,000 pods (110 of them on
// this node) with 1,000 policies; and a stress case of 1,000 local pods (plus
// 1,000 remote peers) with 1,000 policies.
func BenchmarkRender(b *testing.B) {
	for _, p := range []synth.Params{
		{LocalPods: 110, RemotePods: 200, Policies: 50, Seed: 1},
		{LocalPods: 110, RemotePods: 890, Policies: 1000, Namespaces: 20, Seed: 1},
		{LocalPods: 1000, RemotePods: 1000, Policies: 1000, Namespaces: 20, Seed: 1},
	} {
		in := synth.Cluster(p)
		b.Run(fmt.Sprintf("pods=%d,remote=%d,policies=%d", p.LocalPods, p.RemotePods, p.Policies), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				state, err := render.Render(in)
				if err != nil {
					b.Fatal(err)
				}
				if len(state.Pods) != p.LocalPods {
					b.Fatalf("rendered %d pods, want %d", len(state.Pods), p.LocalPods)
				}
			}
		})
	}
}
