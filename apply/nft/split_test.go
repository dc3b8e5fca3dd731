package nft

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/golden"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestApplySplitGroup applies the golden document whose policy group is in
// the split form (render/profiles.go: rules matching an address set and a
// protocol . port set each) and checks that the kernel holds it as
// written, that it plans empty against itself, and that taking peers away
// from the policy changes only the address sets, element by element.
func TestApplySplitGroup(t *testing.T) {
	in, err := golden.Inputs(filepath.Join("..", "..", "golden", "policy-split-product"))
	if err != nil {
		t.Fatal(err)
	}
	doc := renderTable(t, in)
	splitRules := 0
	for _, c := range doc.Chains {
		for _, r := range c.Rules {
			if len(r.Match) == 2 && slices.Equal(r.Match[1].Selectors, []string{spec.SelL4Proto, spec.SelTHDport}) {
				splitRules++
			}
		}
	}
	if splitRules != 3 {
		t.Fatalf("the golden document has %d split rules, want 3 (has render's split form changed?)", splitRules)
	}
	e := newEnv(t, "split")
	e.apply(doc)
	e.checkTool(doc)
	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("full re-plan not empty:\n%s", planText(ops))
	}

	// The policy's first rule loses its first ten peers.
	pol := in.Policies[0].DeepCopy()
	pol.Spec.Ingress[0].From = pol.Spec.Ingress[0].From[10:]
	in.Policies = append(in.Policies[:0:0], pol)
	edited := renderTable(t, in)
	ops := e.apply(edited)
	for _, l := range lines(ops) {
		if !strings.Contains(l, "-a1") {
			t.Errorf("the edit wrote %q, want only the first profile's address set", l)
		}
	}
	if got := len(lines(ops)); got != 10 {
		t.Errorf("the edit is %d ops, want the 10 peers' deletions:\n%s", got, planText(ops))
	}
	e.checkTool(edited)
	if ops := e.plan(edited, true); len(ops) != 0 {
		t.Errorf("full re-plan after the edit not empty:\n%s", planText(ops))
	}
}

func renderTable(t *testing.T, in render.Inputs) *spec.NFTable {
	t.Helper()
	st, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Problems) > 0 && st.NFTables == nil {
		t.Fatalf("render: %v", st.Problems)
	}
	return st.NFTables
}
