package nft

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
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
	gs, fs, old := got.sets.get("ingress-dispatch"), fresh.sets.get("ingress-dispatch"), first.sets.get("ingress-dispatch")
	if gs.elems.len() != fs.elems.len() {
		t.Fatalf("%d elements, want %d", gs.elems.len(), fs.elems.len())
	}
	reused := 0
	for k, e := range fs.elems.all() {
		g := gs.elems.get(k)
		if g == nil || g.String() != e.String() || compareKeys(g.key, e.key) != 0 {
			t.Errorf("element %s: got %v, want %s", k, g, e)
			continue
		}
		if g == old.elems.get(k) {
			reused++
		}
	}
	if reused != fs.elems.len()-1 {
		t.Errorf("%d of %d elements reused, want all but the changed one", reused, fs.elems.len())
	}
}

// TestDerivedSetsMatchScratch edits a verdict map at random (insert,
// remove, re-point, reorder, duplicate) and checks, after every edit, that
// the set canonicalised from the last one equals the set canonicalised from
// scratch, and that diffing it against the last one (through its delta)
// plans exactly what the element-by-element comparison plans.
func TestDerivedSetsMatchScratch(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	ps := pods(40)
	doc := testDoc(ps, nil)
	var prev *table
	var cache *canonCache
	failures := 0
	for step := range 400 {
		next := cloneTable(doc)
		m := next.Set("ingress-dispatch")
		el := m.Elements
		i := rnd.IntN(len(el) + 1)
		jump := func() *spec.NFTVerdict {
			return &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: ps[rnd.IntN(len(ps))].in()}
		}
		switch op := rnd.IntN(6); {
		case op == 0: // a new pod's element
			ip := fmt.Sprintf("198.18.%d.%d", 200+rnd.IntN(50), rnd.IntN(250))
			el = slices.Insert(el, i, spec.NFTElement{Key: []string{ip}, Verdict: jump()})
		case op == 1 && len(el) > 1:
			el = slices.Delete(el, min(i, len(el)-1), min(i, len(el)-1)+1)
		case op == 2 && len(el) > 0:
			el[min(i, len(el)-1)].Verdict = jump()
		case op == 3 && len(el) > 2:
			j := rnd.IntN(len(el))
			i = min(i, len(el)-1)
			el[i], el[j] = el[j], el[i]
		case op == 4 && len(el) > 0: // a duplicate key: refused both ways
			dup := el[rnd.IntN(len(el))]
			el = slices.Insert(el, i, spec.NFTElement{Key: slices.Clone(dup.Key), Verdict: jump()})
		}
		m.Elements = el
		got, gotCache, gotErr := canonical(next, cache)
		want, _, wantErr := canonical(next, nil)
		if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
			t.Fatalf("step %d: error %v, from scratch %v", step, gotErr, wantErr)
		}
		if gotErr != nil {
			failures++
			continue // the document is refused; the last one stays
		}
		gs, ws := got.sets.get("ingress-dispatch"), want.sets.get("ingress-dispatch")
		if a, b := elemLines(gs), elemLines(ws); a != b {
			t.Fatalf("step %d: derived set\n%s\nfrom scratch\n%s", step, a, b)
		}
		if !maps.Equal(gs.jumps, ws.jumps) {
			t.Fatalf("step %d: jumps %v, from scratch %v", step, gs.jumps, ws.jumps)
		}
		for k, e := range gs.canon {
			if gs.elems.get(e.text) != e || spec.FormatElement(m.Elements[k]) == "" {
				t.Fatalf("step %d: canon[%d] %s is not the set's element", step, k, e)
			}
		}
		if prev != nil {
			fast, err := diff("x", got, prev, prev, DefaultReplaceCost, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			slow, err := diff("x", want, prev, prev, DefaultReplaceCost, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a, b := planText(fast.ops()), planText(slow.ops()); a != b {
				t.Fatalf("step %d: plan through the delta\n%s\nelement by element\n%s", step, a, b)
			}
		}
		doc, prev, cache = next, got, gotCache
	}
	if failures == 0 || failures > 150 {
		t.Errorf("%d of 400 edits were refused; the test wants some, not most", failures)
	}
}

func elemLines(s *set) string {
	var out []string
	for _, e := range s.elems.all() {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// cloneTable copies the sets' element lists, which the test edits.
func cloneTable(t *spec.NFTable) *spec.NFTable {
	out := *t
	out.Sets = slices.Clone(t.Sets)
	for i, s := range out.Sets {
		c := *s // the document's sets are shared: copied to be edited
		c.Elements = slices.Clone(s.Elements)
		out.Sets[i] = &c
	}
	return &out
}
