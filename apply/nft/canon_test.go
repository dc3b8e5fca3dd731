package nft

import (
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestCanonicalReusesUnchangedElements: a set that changed in one element
// is canonicalised reusing the other elements of the last document's set,
// and comes out the same as canonicalised from scratch.
func TestCanonicalReusesUnchangedElements(t *testing.T) {
	ps := pods(5)
	first, cache, err := canonical(testDoc(ps, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	next := testDoc(ps, nil)
	next.Set("ingress-dispatch").Elements[2].Verdict = &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: ps[0].in()}
	got, _, err := canonical(next, cache)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := canonical(next, nil)
	if err != nil {
		t.Fatal(err)
	}
	gs, fs, old := got.sets["ingress-dispatch"], fresh.sets["ingress-dispatch"], first.sets["ingress-dispatch"]
	if len(gs.elems) != len(fs.elems) {
		t.Fatalf("%d elements, want %d", len(gs.elems), len(fs.elems))
	}
	reused := 0
	for k, e := range fs.elems {
		g := gs.elems[k]
		if g == nil || g.String() != e.String() || compareKeys(g.key, e.key) != 0 {
			t.Errorf("element %s: got %v, want %s", k, g, e)
			continue
		}
		if g == old.elems[k] {
			reused++
		}
	}
	if reused != len(fs.elems)-1 {
		t.Errorf("%d of %d elements reused, want all but the changed one", reused, len(fs.elems))
	}
}
