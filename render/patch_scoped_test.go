package render

import (
	"fmt"
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestCacheScopedMatchesRender walks a cache through an agent's changes
// (agentStep) and renders after each, scoped to one to three pods (the
// newest allocation's, random ones, a pod of no allocation) or, one step
// in three (one in 41 in odd walks, where more than maxLag pods, lowered
// to 3, come to lag), whole. A scoped render must be a render from scratch with the
// kernel item sections reduced to the node's own items and the scope's,
// when it patched, or that render whole; a whole render must be that
// render, also right after scoped ones that left pods lagging.
func TestCacheScopedMatchesRender(t *testing.T) {
	steps, walks := 400, 6
	if testing.Short() {
		steps = 150
	}
	total, scopedPatches, wholeAfterScoped, settledAtMax := 0, 0, 0, 0
	defer func(was int) { maxLag = was }(maxLag)
	bound := maxLag
	for walk := range walks {
		c := newChurn(uint64(300 + walk))
		if walk < 5 {
			for range 40 {
				c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+len(c.in.Policies), c.nss))
			}
		}
		if walk == 3 {
			c.eniMode()
		}
		c.repair()
		k := NewCache()
		var history []string
		lastScoped := false
		wholeEvery := 3
		maxLag = bound
		if walk%2 == 1 {
			wholeEvery = 41
			maxLag = 3 // settled often between the whole renders
		}
		for step := range steps {
			history = append(history, c.agentStep())
			at := fmt.Sprintf("walk %d step %d (%s)", walk, step, history[len(history)-1])
			total++
			if step%wholeEvery == wholeEvery-1 {
				if want, _ := matchesScratch(t, k, c.in, at, history); want != nil && lastScoped {
					wholeAfterScoped++
				}
				lastScoped = false
				continue
			}
			scope := c.scope()
			got, err := k.RenderScoped(c.in, scope)
			want, werr := Render(c.in)
			if (err == nil) != (werr == nil) {
				t.Fatalf("%s: scoped error %v, render error %v", at, err, werr)
			}
			if err != nil {
				continue
			}
			lastScoped = true
			gotJSON, wholeJSON := mustJSON(t, got), mustJSON(t, want)
			reducedJSON := mustJSON(t, reducedTo(want, scope))
			switch {
			case string(gotJSON) == string(reducedJSON):
				if k.Stats().Patched {
					scopedPatches++
				}
				if k.base != nil && len(k.base.lag) == 0 && k.Stats().PodsPatched > 0 {
					settledAtMax++
				}
			case string(gotJSON) == string(wholeJSON):
			default:
				t.Fatalf("%s, scope %v, patched %v: the scoped render is neither the render from scratch nor its scope's part\nlast changes: %v\nscoped:\n%s\nscope's part of the render from scratch:\n%s",
					at, scope, k.Stats().Patched, history[max(0, len(history)-5):], gotJSON, reducedJSON)
			}
		}
	}
	t.Logf("%d renders, %d scoped patches (%d settled more than maxLag lagging pods), %d whole renders right after a scoped one",
		total, scopedPatches, settledAtMax, wholeAfterScoped)
	if scopedPatches*3 < total || wholeAfterScoped*10 < total/3 || settledAtMax < 20 {
		t.Errorf("%d scoped patches and %d whole renders right after a scoped one of %d: too few to prove them right",
			scopedPatches, wholeAfterScoped, total)
	}
}

// scope picks the pods of a scoped render: the newest allocation's, now
// and then another's or two, and now and then a pod with none.
func (c *churn) scope() []string {
	var out []string
	if n := len(c.in.Allocations); n > 0 {
		a := c.in.Allocations[n-1].Metadata
		out = append(out, a.Namespace+"/"+a.Name)
		for range c.pick(3) {
			a := c.in.Allocations[c.pick(n)].Metadata
			if key := a.Namespace + "/" + a.Name; !slices.Contains(out, key) {
				out = append(out, key)
			}
		}
	}
	if c.pick(4) == 0 {
		out = append(out, "x/no-such-pod")
	}
	return out
}

// reducedTo is doc with kernel item sections of the node's own items and
// those of pods alone, what a scoped plan keeps of them.
func reducedTo(doc *spec.NodeState, pods []string) *spec.NodeState {
	keep := func(pod string) bool { return pod == "" || slices.Contains(pods, pod) }
	out := *doc
	out.Links = kept(doc.Links, func(x spec.Link) bool { return keep(x.Pod) })
	out.Addresses = kept(doc.Addresses, func(x spec.Address) bool { return keep(x.Pod) })
	out.Routes = kept(doc.Routes, func(x spec.Route) bool { return keep(x.Pod) })
	out.Rules = kept(doc.Rules, func(x spec.Rule) bool { return keep(x.Pod) })
	out.Neighbors = kept(doc.Neighbors, func(x spec.Neighbor) bool { return keep(x.Pod) })
	out.Sysctls = kept(doc.Sysctls, func(x spec.Sysctl) bool { return keep(x.Pod) })
	out.TC = kept(doc.TC, func(x spec.Qdisc) bool { return keep(x.Pod) })
	return &out
}

func kept[T any](items []T, keep func(T) bool) []T {
	var out []T
	for _, it := range items {
		if keep(it) {
			out = append(out, it)
		}
	}
	return out
}
