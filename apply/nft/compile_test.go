package nft

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Tests without a kernel: canonical values, compile/decompile round trips
// through the wire encoding, interval element encoding, chunking, errors.

func TestCanonicalValues(t *testing.T) {
	cases := []struct {
		typ, in, want string
	}{
		{spec.TypeIPv4Addr, "198.18.0.0/24", "198.18.0.0/24"},
		{spec.TypeIPv4Addr, "198.18.0.7/24", "198.18.0.0/24"},
		{spec.TypeIPv4Addr, "198.18.0.0-198.18.0.255", "198.18.0.0/24"},
		{spec.TypeIPv4Addr, "198.18.0.1-198.18.0.5", "198.18.0.1-198.18.0.5"},
		{spec.TypeIPv4Addr, "198.18.0.5/32", "198.18.0.5"},
		{spec.TypeIPv4Addr, "0.0.0.0/0", "0.0.0.0/0"},
		{spec.TypeService, "0-65535", "0-65535"},
		{spec.TypeService, "80-80", "80"},
		{spec.TypeProto, "6", "tcp"},
		{spec.TypeProto, "47", "47"},
		{spec.TypeIfName, `"eth0"`, "eth0"},
	}
	for _, c := range cases {
		t.Run(c.typ+" "+c.in, func(t *testing.T) {
			ty, _ := lookupType(c.typ)
			r, err := parsePart(ty, c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := formatPart(ty, r); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestCanonicalErrors(t *testing.T) {
	base := func() *spec.NFTable {
		return &spec.NFTable{Family: "inet", Name: "terway",
			Sets:   []*spec.NFTSet{{Name: "s", Type: []string{spec.TypeIPv4Addr}}},
			Chains: []spec.NFTChain{{Name: "c"}}}
	}
	cases := []struct {
		name   string
		edit   func(t *spec.NFTable)
		substr []string
	}{
		{"bad address", func(t *spec.NFTable) { t.Sets[0].Elements = []spec.NFTElement{{Key: []string{"198.18.0.300"}}} },
			[]string{"nft set s", `"198.18.0.300"`, "not an IPv4 address"}},
		{"range without interval", func(t *spec.NFTable) { t.Sets[0].Elements = []spec.NFTElement{{Key: []string{"198.18.0.0/24"}}} },
			[]string{"nft set s", "198.18.0.0/24", "no interval flag"}},
		{"duplicate element", func(t *spec.NFTable) {
			t.Sets[0].Interval = true
			t.Sets[0].Elements = []spec.NFTElement{{Key: []string{"198.18.0.1"}}, {Key: []string{"198.18.0.1/32"}}}
		}, []string{"nft set s", "same key"}},
		{"name starting with a digit", func(t *spec.NFTable) { t.Sets[0].Name = "1s" },
			[]string{"nft set 1s", "does not start with a letter"}},
		{"map element jumping nowhere among others", func(t *spec.NFTable) {
			t.Sets[0].Verdict = true
			t.Sets[0].Elements = []spec.NFTElement{
				{Key: []string{"198.18.0.1"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictAccept}},
				{Key: []string{"198.18.0.2"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump}},
			}
		}, []string{"nft map s", `element "198.18.0.2 : jump "`, `chain "" does not exist`}},
		{"unknown set", func(t *spec.NFTable) {
			t.Chains[0].Rules = []spec.NFTRule{{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: "nope"}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}}}
		}, []string{"nft chain c", "rule 1", "@nope"}},
		{"jump to missing chain", func(t *spec.NFTable) {
			t.Chains[0].Rules = []spec.NFTRule{{Verdict: spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "gone"}}}
		}, []string{"nft chain c", `"gone"`}},
		{"bad port value", func(t *spec.NFTable) {
			t.Chains[0].Rules = []spec.NFTRule{{Match: []spec.NFTMatch{{Selectors: []string{spec.SelTHDport}, Values: []string{"70000"}}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}}}
		}, []string{"nft chain c", `"70000"`, "inet_service"}},
		{"long comment", func(t *spec.NFTable) { t.Chains[0].Comment = strings.Repeat("x", 200) },
			[]string{"nft chain c", "comment", "128"}},
		{"map element without verdict", func(t *spec.NFTable) {
			t.Sets[0].Verdict = true
			t.Sets[0].Elements = []spec.NFTElement{{Key: []string{"198.18.0.1"}}}
		}, []string{"nft set s", "verdict"}},
		{"not our table", func(t *spec.NFTable) { t.Name = "other" }, []string{"only inet terway"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			doc := base()
			c.edit(doc)
			_, _, err := canonical(doc, nil)
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range c.substr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

// TestRuleRoundTrip compiles rules, marshals every expression as the kernel
// would receive it, decodes and decompiles them, and expects the canonical
// rule back.
func TestRuleRoundTrip(t *testing.T) {
	ps := pods(1)
	doc := withExtras(testDoc(ps, nil), ps[0].in())
	for _, c := range doc.Chains {
		for i, r := range c.Rules {
			t.Run(fmt.Sprintf("%s/%d", c.Name, i+1), func(t *testing.T) {
				want, err := canonicalRule(r)
				if err != nil {
					t.Fatal(err)
				}
				id := uint32(0)
				cr, err := compileRule(want.ir, func() uint32 { id++; return id })
				if err != nil {
					t.Fatal(err)
				}
				var back []expr.Any
				for _, e := range cr.exprs {
					b, err := expr.Marshal(familyInet, e)
					if err != nil {
						t.Fatal(err)
					}
					d, name, err := decodeExpr(b)
					if err != nil || d == nil {
						t.Fatalf("decode %s: %v", name, err)
					}
					back = append(back, d)
				}
				anon := map[string]*set{}
				for _, a := range cr.anon {
					s := &set{types: a.set.types, interval: a.set.interval, elems: elemMap{}}
					for _, ty := range a.set.types {
						s.typeNames = append(s.typeNames, ty.name)
					}
					var raws []rawElem
					for _, e := range a.elems {
						for _, w := range wireElems(a.set, e, true) {
							r, err := decodeElem(w)
							if err != nil {
								t.Fatal(err)
							}
							raws = append(raws, r)
						}
					}
					if err := s.addRaw(raws); err != nil {
						t.Fatal(err)
					}
					anon[fmt.Sprintf("%s%d", anonPrefix, a.id)] = s
				}
				// The kernel names anonymous sets; stand in for it.
				for _, e := range back {
					if l, ok := e.(*expr.Lookup); ok && l.SetID != 0 {
						l.SetName = fmt.Sprintf("%s%d", anonPrefix, l.SetID)
					}
				}
				got, err := decompile(back, func(n string) (*set, bool) { s, ok := anon[n]; return s, ok })
				if err != nil {
					t.Fatalf("decompile: %v", err)
				}
				got.Comment = r.Comment
				if g := spec.FormatRule(got); g != want.text {
					t.Errorf("round trip:\n got %s\nwant %s", g, want.text)
				}
			})
		}
	}
}

func TestIntervalElementsRoundTrip(t *testing.T) {
	cases := []struct {
		types []string
		elems [][]string
	}{
		{[]string{spec.TypeIPv4Addr}, [][]string{{"0.0.0.0/0"}}},
		{[]string{spec.TypeIPv4Addr}, [][]string{{"198.18.0.0/24"}, {"198.18.1.0/24"}, {"198.18.2.7"}, {"255.255.255.255"}}},
		{[]string{spec.TypeService}, [][]string{{"0-65535"}}},
		{[]string{spec.TypeService}, [][]string{{"0"}, {"1-5"}, {"6-10"}, {"65535"}}},
		{[]string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService},
			[][]string{{"0.0.0.0/0", "tcp", "0-65535"}, {"198.18.0.0/15", "udp", "53"}}},
	}
	for _, c := range cases {
		var types []dtype
		for _, n := range c.types {
			ty, _ := lookupType(n)
			types = append(types, ty)
		}
		s := &set{name: "s", types: types, typeNames: c.types, interval: true, elems: elemMap{}}
		var raws []rawElem
		var want []string
		for _, parts := range c.elems {
			rs, texts, err := canonKey(types, true, parts)
			if err != nil {
				t.Fatal(err)
			}
			e := &elem{key: rs, text: strings.Join(texts, " . ")}
			want = append(want, e.text)
			for _, w := range wireElems(s, e, true) {
				r, err := decodeElem(w)
				if err != nil {
					t.Fatal(err)
				}
				raws = append(raws, r)
			}
		}
		// The kernel dumps in its own order.
		slices.Reverse(raws)
		got := &set{name: "s", types: types, typeNames: c.types, interval: true, elems: elemMap{}}
		if err := got.addRaw(raws); err != nil {
			t.Fatal(err)
		}
		if g := sortedElems(got); !slices.Equal(g, want) {
			t.Errorf("%v: got %q, want %q", c.types, g, want)
		}
	}
}

// TestElementChunks: no element list may reach the 64 KiB limit of a
// netlink attribute, and chunks hold every element exactly once.
func TestElementChunks(t *testing.T) {
	types := []dtype{dtypes[spec.TypeIPv4Addr], dtypes[spec.TypeProto], dtypes[spec.TypeService]}
	s := &set{name: "big", types: types, interval: true}
	var elems []*elem
	for i := range 10000 {
		rs, texts, err := canonKey(types, true, []string{ipString(198<<24 | 18<<16 + uint64(i)), "tcp", "1000-2000"})
		if err != nil {
			t.Fatal(err)
		}
		elems = append(elems, &elem{key: rs, text: strings.Join(texts, " . ")})
	}
	ms := elemMsgs(s, s.name, 0, elems, false)
	total := 0
	for _, m := range ms {
		as, err := parseAttrs(m.attrs)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if a.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			if len(a.data)+4 > 0xffff {
				t.Errorf("%s: element list of %d bytes overflows a netlink attribute", m.what, len(a.data)+4)
			}
			list, err := parseAttrs(a.data)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) > maxElemsPerMsg {
				t.Errorf("%s: %d elements in one message", m.what, len(list))
			}
			total += len(list)
		}
	}
	if total != len(elems) {
		t.Errorf("chunks hold %d elements, want %d", total, len(elems))
	}
}
