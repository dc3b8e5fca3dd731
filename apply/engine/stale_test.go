package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
)

// TestStalePlanKeepsRecordTrusted: two pods' ADDs planned from the same
// record both change the dispatch maps; the second to execute is refused
// as stale (nft.ErrStale). Nothing was written, so the record stays
// trusted: the pod's next scoped plan is a partial sync, not a full read
// of the table, and it converges.
func TestStalePlanKeepsRecordTrusted(t *testing.T) {
	n := scaleNode(t, 2) // pods selected by policies: dispatch map elements
	n.apply(n.render())
	n.addPod("x", "b", "198.18.3.11", map[string]string{"app": "svc-1"}, nil, "")
	n.addPod("x", "c", "198.18.3.12", map[string]string{"app": "svc-1"}, nil, "")
	state := n.render()
	ctx := context.Background()
	pb := n.scopedPlan(state, "x/b")
	pc := n.scopedPlan(state, "x/c")
	if rep := n.eng.Execute(ctx, pb); rep.Err() != nil {
		t.Fatal(rep.Err())
	}
	rep := n.eng.Execute(ctx, pc)
	if err := rep.Err(); !errors.Is(err, nft.ErrStale) {
		t.Fatalf("x/c's plan after x/b's commit: %v, want nft.ErrStale", err)
	}
	again := n.scopedPlan(state, "x/c")
	var commit string
	for _, l := range again.Lines() {
		if strings.Contains(l, "nft commit") {
			commit = l
		}
	}
	if !strings.Contains(commit, "partial sync") {
		t.Errorf("after a stale refusal, x/c's next plan is not a partial sync: %q", commit)
	}
	if rep, err := n.eng.Apply(ctx, state, engine.PlanOptions{Pods: []string{"x/c"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	n.requireEmptyPlan(state)
}
