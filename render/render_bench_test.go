package render_test

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

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

// BenchmarkRenderCache renders a node of 250 local pods, 250 remote peers
// and 1,000 policies from scratch, through a render.Cache with nothing
// changed, and through the cache alternately without and with the last
// pod's allocation (its DEL and ADD); and synth's 5,000-pod, 2,000-policy
// cluster (250 pods on this node) from scratch and after one ADD or DEL.
// cached-add-del-held is the agent's case: the pod is held back as a
// peer (Inputs.PeersHeldBack) from its ADD to its admission, so its ADD
// and DEL change no policy. cached-add-del-held-status is that in a
// cluster whose pods' status keeps being written: before each render
// another pod's object is new, with a new condition, the same to every
// policy (patched is the share of renders that were patches); -64 writes
// 64 pods' status before each render.
func BenchmarkRenderCache(b *testing.B) {
	for _, p := range []synth.Params{
		{LocalPods: 250, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1},
		{LocalPods: 250, RemotePods: 4750, Policies: 2000, Namespaces: 20, Seed: 1},
	} {
		in := synth.Cluster(p)
		without := in
		without.Allocations = in.Allocations[:len(in.Allocations)-1]
		name := fmt.Sprintf("pods=%d,local=%d,policies=%d", p.LocalPods+p.RemotePods, p.LocalPods, p.Policies)
		b.Run(name+"/scratch", func(b *testing.B) {
			for b.Loop() {
				if _, err := render.Render(in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/cached-unchanged", func(b *testing.B) {
			k := render.NewCache()
			if _, err := k.Render(in); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := k.Render(in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/cached-add-del", func(b *testing.B) {
			k := render.NewCache()
			renderAlternately(b, k, without, in, nil)
			st := k.Stats()
			b.ReportMetric(float64(st.PoliciesResolved), "policies-resolved")
			b.ReportMetric(float64(st.GroupsRendered), "groups-rendered")
		})
		b.Run(name+"/cached-add-del-held", func(b *testing.B) {
			last := in.Allocations[len(in.Allocations)-1].Metadata
			held := map[string]bool{last.Namespace + "/" + last.Name: true}
			with, none := in, without
			with.PeersHeldBack, none.PeersHeldBack = held, held
			k := render.NewCache()
			b.ReportAllocs()
			renderAlternately(b, k, none, with, func(i int) {
				if !k.Stats().Patched {
					b.Fatal("the held pod's ADD or DEL was rendered whole, not patched")
				}
			})
		})
		for _, writes := range []int{1, 64} {
			sub := "/cached-add-del-held-status"
			if writes > 1 {
				sub += fmt.Sprintf("-%d", writes)
			}
			b.Run(name+sub, func(b *testing.B) {
				last := in.Allocations[len(in.Allocations)-1].Metadata
				held := map[string]bool{last.Namespace + "/" + last.Name: true}
				k := render.NewCache()
				b.ReportAllocs()
				renders, patched, written := 0, 0, 0
				pods := slices.Clone(in.Pods)
				primed := in
				primed.PeersHeldBack = held
				if _, err := k.Render(primed); err != nil { // from scratch: not timed
					b.Fatal(err)
				}
				for b.Loop() {
					x := without
					if renders%2 == 1 {
						x = in
					}
					// Other pods' status written: new objects.
					pods = slices.Clone(pods)
					for range writes {
						i := written * 7 % len(pods)
						p := pods[i].DeepCopy()
						p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady,
							Status: corev1.ConditionStatus([]string{"True", "False"}[written/len(pods)%2])})
						pods[i] = p
						written++
					}
					x.Pods, x.PeersHeldBack = pods, held
					if _, err := k.Render(x); err != nil {
						b.Fatal(err)
					}
					renders++
					if k.Stats().Patched {
						patched++
					}
				}
				b.ReportMetric(float64(patched)/float64(renders), "patched")
			})
		}
	}
}

// renderAlternately renders even and odd with k in turn, for b's loop,
// calling after (when set) with the render's number after each. k has
// rendered odd before the loop: the cache's first render, from scratch,
// is not one of the timed ones (at 5,000 pods it took half of the mean
// of a 1 s run).
func renderAlternately(b *testing.B, k *render.Cache, even, odd render.Inputs, after func(i int)) {
	if _, err := k.Render(odd); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		x := even
		if i%2 == 1 {
			x = odd
		}
		if _, err := k.Render(x); err != nil {
			b.Fatal(err)
		}
		if after != nil {
			after(i)
		}
		i++
	}
}
