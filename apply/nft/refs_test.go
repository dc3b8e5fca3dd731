package nft

import (
	"maps"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestCheckRefsSince: a scoped plan checks again only what it changed
// from the record, and still refuses a table that names what is not
// there: a changed chain or map naming a missing object, and an object
// the rest of the table names that is gone or defined anew (which checks
// the whole table).
func TestCheckRefsSince(t *testing.T) {
	ps := pods(2)
	base, _, err := canonical(testDoc(ps, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := base.checkRefs(); err != nil {
		t.Fatal(err)
	}
	derive := func() *table {
		return &table{sets: base.sets.derive(), chains: base.chains.derive()}
	}
	chainNaming := func(name, set string) *chain {
		c, err := canonicalChain(&spec.NFTChain{Name: name, Rules: []spec.NFTRule{{
			Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: set}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}}}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p := ps[0]
	cases := []struct {
		name   string
		change func(*table) (sets, chains []string)
		want   string // "" for no error
	}{
		{"nothing changed", func(*table) ([]string, []string) { return nil, nil }, ""},
		{"a changed chain naming an existing set", func(x *table) ([]string, []string) {
			x.chains.put(p.in(), chainNaming(p.in(), p.in()+"-all"))
			return nil, []string{p.in()}
		}, ""},
		{"a changed chain naming a missing set", func(x *table) ([]string, []string) {
			x.chains.put(p.in(), chainNaming(p.in(), "nope"))
			return nil, []string{p.in()}
		}, "@nope is not a set of this table"},
		{"a new chain naming a missing set", func(x *table) ([]string, []string) {
			x.chains.put("extra", chainNaming("extra", "nope"))
			return nil, []string{"extra"}
		}, "@nope is not a set of this table"},
		{"a set the record's chain names is gone", func(x *table) ([]string, []string) {
			x.sets.del(p.in() + "-all")
			return []string{p.in() + "-all"}, nil
		}, "@" + p.in() + "-all is not a set of this table"},
		{"a set the record's chain names is a map now", func(x *table) ([]string, []string) {
			s := *x.sets.get(p.in() + "-all")
			s.verdict = true
			x.sets.put(s.name, &s)
			return []string{s.name}, nil
		}, "@" + p.in() + "-all is not a set of this table"},
		{"a chain the record's map jumps to is gone", func(x *table) ([]string, []string) {
			x.chains.del(p.in())
			return nil, []string{p.in()}
		}, `chain "` + p.in() + `" does not exist`},
		{"a changed map jumping nowhere", func(x *table) ([]string, []string) {
			m := *x.sets.get("ingress-dispatch")
			m.jumps = maps.Clone(m.jumps)
			m.jumps["nowhere"] = 1
			x.sets.put(m.name, &m)
			return []string{m.name}, nil
		}, `chain "nowhere" does not exist`},
	}
	for _, c := range cases {
		x := derive()
		sets, chains := c.change(x)
		changedSets, changedChains := map[string]bool{}, map[string]bool{}
		for _, n := range sets {
			changedSets[n] = true
		}
		for _, n := range chains {
			changedChains[n] = true
		}
		err := x.checkRefsSince(base, changedSets, changedChains)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: error %v, want one naming %q", c.name, err, c.want)
		}
		// The whole table's check agrees.
		if full := x.checkRefs(); (full == nil) != (err == nil) {
			t.Errorf("%s: checkRefs says %v, checkRefsSince %v", c.name, full, err)
		}
	}
}
