package engine_test

import (
	"context"
	"slices"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestPlanKinds: PlanOptions.Kinds plans only the kinds named; the two
// halves the agent's resync plans (the kernel kinds without its lock,
// nftables under it) together are the whole plan, and executing them one
// after the other converges the node.
func TestPlanKinds(t *testing.T) {
	nstest.RequireRoot(t)
	n := newNode(t, spec.PodModeVPC)
	n.addPod("x", "a", "198.18.0.5", map[string]string{"app": "a"}, nil, "")
	s := n.render()
	ctx := context.Background()
	whole, err := n.eng.Plan(ctx, s, engine.PlanOptions{Full: true})
	if err != nil {
		t.Fatal(err)
	}
	kernelKinds := slices.DeleteFunc(engine.Kinds(), func(k string) bool { return k == nft.Kind })
	kernel, err := n.eng.Plan(ctx, s, engine.PlanOptions{Full: true, Kinds: kernelKinds})
	if err != nil {
		t.Fatal(err)
	}
	tables, err := n.eng.Plan(ctx, s, engine.PlanOptions{Full: true, Kinds: []string{nft.Kind}})
	if err != nil {
		t.Fatal(err)
	}
	counts, kc, tc := whole.Counts(), kernel.Counts(), tables.Counts()
	if kc[nft.Kind] != 0 || len(tc) != 1 || tc[nft.Kind] == 0 {
		t.Fatalf("kernel kinds planned %v, nft planned %v", kc, tc)
	}
	for k, c := range counts {
		if kc[k]+tc[k] != c {
			t.Errorf("kind %s: %d + %d operations in the halves, %d in the whole plan", k, kc[k], tc[k], c)
		}
	}
	for _, p := range []*engine.Plan{kernel, tables} {
		if rep := n.eng.Execute(ctx, p); rep.Err() != nil {
			t.Fatal(rep.Err())
		}
	}
	n.requireEmptyPlan(s)
}
