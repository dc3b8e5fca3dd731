package nft

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/spec"
)

// TestScopedClassifyChecked: a diff told which objects changed
// (scopedChanges, a scoped plan's) plans what a diff of the whole table
// plans, and the check of CheckKeptSetsEnv, which every scoped plan of
// this package's tests runs, fails a diff whose list misses a change.
func TestScopedClassifyChecked(t *testing.T) {
	if !recheckKeptSets {
		t.Skip("the check is off while benchmarking (TestMain)")
	}
	doc := mustRender(t, synth.Cluster(synth.Params{LocalPods: 20, RemotePods: 20, Policies: 50, Namespaces: 5, Seed: 1}))
	have, _, err := canonical(doc.NFTables, nil)
	if err != nil {
		t.Fatal(err)
	}
	// want: the same objects but one set with an element less, and one
	// chain more.
	i := slices.IndexFunc(doc.NFTables.Sets, func(s *spec.NFTSet) bool { return len(s.Elements) > 1 && !s.Verdict })
	smaller := *doc.NFTables.Sets[i]
	smaller.Elements = smaller.Elements[1:]
	ws, err := canonicalSet(&smaller, nil)
	if err != nil {
		t.Fatal(err)
	}
	var base *chain
	for _, c := range have.chains.all() {
		if c.hook == "" {
			base = c
			break
		}
	}
	extra := *base
	extra.name = "test-extra"
	want := &table{sets: have.sets.derive(), chains: have.chains.derive()}
	want.sets.put(ws.name, ws)
	want.chains.put(extra.name, &extra)
	newChain := extra.name

	opsOf := func(changed *scopedChanges) ([]string, error) {
		p, err := diff("x", want, have, have, DefaultReplaceCost, 0, changed)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, o := range p.ops() {
			out = append(out, o.String())
		}
		return out, nil
	}
	whole, err := opsOf(nil)
	if err != nil {
		t.Fatal(err)
	}
	named := &scopedChanges{sets: map[string]bool{ws.name: true}, chains: map[string]bool{newChain: true}}
	limited, err := opsOf(named)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 2 || !slices.Equal(whole, limited) {
		t.Fatalf("told the changes, the diff plans\n%s\nthe whole table's diff\n%s",
			strings.Join(limited, "\n"), strings.Join(whole, "\n"))
	}
	for _, missing := range []*scopedChanges{
		{sets: map[string]bool{}, chains: map[string]bool{newChain: true}},
		{sets: map[string]bool{ws.name: true}, chains: map[string]bool{}},
	} {
		if _, err := opsOf(missing); err == nil || !strings.Contains(err.Error(), CheckKeptSetsEnv) {
			t.Errorf("changes %v: the check did not fail the diff (err %v)", missing, err)
		}
	}
}

// TestScopedSetNames: a scoped plan that changed no set names none, which
// is not nil: the commit's warmIndexes reads nil as every set of the
// record, a walk of thousands a scoped commit must not pay.
func TestScopedSetNames(t *testing.T) {
	if got := (*scopedChanges)(nil).setNames(); got != nil {
		t.Errorf("no scoped plan: %v, want nil", got)
	}
	none := &scopedChanges{sets: map[string]bool{}, chains: map[string]bool{"c": true}}
	if got := none.setNames(); got == nil || len(got) != 0 {
		t.Errorf("a scoped plan that changed only a chain: %#v, want an empty list", got)
	}
	two := &scopedChanges{sets: map[string]bool{"a": true, "b": true}}
	if got := slices.Sorted(slices.Values(two.setNames())); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("sets a and b changed: %v", got)
	}
}
