package render_test

import (
	"fmt"
	"testing"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/render"
)

// BenchmarkRenderAdmission is the render of an agent's admission step
// (agent/admission.go) on synth's node of 250 local pods, 250 remote pods
// and 1,000 policies: through a Cache, n local pods held back as peers
// (Inputs.PeersHeldBack) are admitted, then held back again, alternately.
// Each render resolves the admitted pods into the policies that select
// them as peers and renders those policies' groups again.
//
//	go test -run '^$' -bench RenderAdmission -benchmem ./render/
func BenchmarkRenderAdmission(b *testing.B) {
	in := synth.Cluster(synth.Params{LocalPods: 250, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	for _, n := range []int{1, 5, 20} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			held := map[string]bool{}
			for _, a := range in.Allocations[len(in.Allocations)-n:] {
				held[a.Metadata.Namespace+"/"+a.Metadata.Name] = true
			}
			admitted, holding := in, in
			holding.PeersHeldBack = held
			k := render.NewCache()
			if _, err := k.Render(holding); err != nil {
				b.Fatal(err)
			}
			var resolved, rendered, renders int
			b.ReportAllocs()
			renderAlternately(b, k, admitted, holding, func(int) {
				st := k.Stats()
				resolved, rendered, renders = resolved+st.PoliciesResolved, rendered+st.GroupsRendered, renders+1
			})
			b.ReportMetric(float64(resolved)/float64(renders), "policies-resolved/op")
			b.ReportMetric(float64(rendered)/float64(renders), "groups-rendered/op")
		})
	}
}
