package nft

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestVerifyElemsReadsBackTouchedElements: a change to a few elements of a
// kept map is read back element by element (not the whole map), and that
// read-back still catches an element missing, holding another verdict, or
// still there after its deletion.
func TestVerifyElemsReadsBackTouchedElements(t *testing.T) {
	e := newEnv(t, "verifyelems")
	ps := pods(3)
	doc := testDoc(ps, nil)
	e.apply(doc)

	// Re-point one pod's ingress entry: the plan checks that element only.
	next := testDoc(ps, nil)
	next.Set("ingress-dispatch").Elements[1].Verdict = &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: ps[0].in()}
	want, _, err := canonical(next, nil)
	if err != nil {
		t.Fatal(err)
	}
	have, _, err := canonical(doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := diff(e.ns, want, have, have, DefaultReplaceCost, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ch := p.verifyElems["ingress-dispatch"]
	if ch == nil || len(ch.present) != 1 || len(ch.absent) != 0 || len(p.verifySets) != 0 {
		t.Fatalf("one re-pointed element: verifyElems %+v, verifySets %v; want that element alone", ch, p.verifySets)
	}
	e.apply(next)

	c, err := dial(e.reg, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ws := want.sets.get("ingress-dispatch")
	elemOf := func(ip string) *elem {
		for _, x := range ws.elems.all() {
			if x.text == ip {
				return x
			}
		}
		t.Fatalf("no element %s", ip)
		return nil
	}
	if err := verifyElems(c, &elemCheck{set: ws, present: []*elem{elemOf(ps[0].ip), elemOf(ps[1].ip)}}); err != nil {
		t.Errorf("verify of what the kernel holds: %v", err)
	}

	// What the kernel does not hold: an element never written, one whose
	// verdict differs, and one that was to be deleted.
	absentIP := &elem{key: []keyRange{{lo: []byte{198, 18, 66, 66}, hi: []byte{198, 18, 66, 66}}}, text: "198.18.66.66",
		verdict: elemOf(ps[0].ip).verdict}
	otherVerdict := *elemOf(ps[2].ip)
	otherVerdict.verdict = &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: ps[1].in()}
	err = verifyElems(c, &elemCheck{set: ws, present: []*elem{absentIP, &otherVerdict}, absent: []*elem{elemOf(ps[1].ip)}})
	if err == nil {
		t.Fatal("verify found no difference")
	}
	for _, s := range []string{"ingress-dispatch", "missing ", "198.18.66.66 : jump " + ps[0].in(), "198.18.100.3 : jump " + ps[1].in(),
		"unexpected 198.18.100.2 : jump " + ps[0].in()} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

// TestVerifyElemsOfIntervalSets: a few intervals changed in kept interval
// sets, one field (two kernel elements per interval) and a concatenation
// (one element with its end), are read back one by one, and the read-back
// catches an interval missing, one the kernel holds wider, and one still
// there after its deletion.
func TestVerifyElemsOfIntervalSets(t *testing.T) {
	e := newEnv(t, "verifyintervals")
	doc := func(addrs []string, concat [][]string) *spec.NFTable {
		t := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable,
			Sets: []*spec.NFTSet{
				{Name: "addrs", Type: []string{spec.TypeIPv4Addr}, Interval: true},
				{Name: "ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true},
			}}
		for _, a := range addrs {
			t.Sets[0].Elements = append(t.Sets[0].Elements, spec.NFTElement{Key: []string{a}})
		}
		for _, k := range concat {
			t.Sets[1].Elements = append(t.Sets[1].Elements, spec.NFTElement{Key: k})
		}
		t.Canonicalize()
		return t
	}
	before := doc([]string{"198.18.0.1", "198.18.0.4-198.18.0.6", "198.18.1.0/24", "198.18.200.0-255.255.255.255"},
		[][]string{{"198.18.0.1", "tcp", "80"}, {"198.18.0.4-198.18.0.6", "udp", "53-54"}})
	after := doc([]string{"198.18.0.1", "198.18.0.8", "198.18.1.0/24", "198.18.200.0-255.255.255.255"},
		[][]string{{"198.18.0.1", "tcp", "80"}, {"198.18.0.9", "tcp", "8080-8090"}})
	e.apply(before)
	want, _, err := canonical(after, nil)
	if err != nil {
		t.Fatal(err)
	}
	have, _, err := canonical(before, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := diff(e.ns, want, have, have, DefaultReplaceCost, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.verifySets) != 0 || p.verifyElems["addrs"] == nil || p.verifyElems["ports"] == nil {
		t.Fatalf("a few intervals changed: verifySets %v, verifyElems %v; want both sets element by element", sortedKeys(p.verifySets), sortedKeys(p.verifyElems))
	}
	e.apply(after) // commits, and so verifies, through the same path

	c, err := dial(e.reg, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	elemOf := func(set, text string) *elem {
		for _, x := range want.sets.get(set).elems.all() {
			if x.text == text {
				return x
			}
		}
		t.Fatalf("no element %s in %s", text, set)
		return nil
	}
	dumps := verifyDumps.Load()
	for set, texts := range map[string][]string{
		"addrs": {"198.18.0.1", "198.18.0.8", "198.18.1.0/24"},
		"ports": {"198.18.0.1 . tcp . 80", "198.18.0.9 . tcp . 8080-8090"},
	} {
		var present []*elem
		for _, text := range texts {
			present = append(present, elemOf(set, text))
		}
		if err := verifyElems(c, &elemCheck{set: want.sets.get(set), present: present}); err != nil {
			t.Errorf("verify of what the kernel holds in %s: %v", set, err)
		}
	}
	if n := verifyDumps.Load() - dumps; n != 0 {
		t.Errorf("closed intervals the kernel holds were confirmed by %d dumps of their set, want element by element", n)
	}
	// One open to the top is confirmed by the set's dump.
	if err := verifyElems(c, &elemCheck{set: want.sets.get("addrs"), present: []*elem{elemOf("addrs", "198.18.200.0-255.255.255.255")}}); err != nil {
		t.Errorf("verify of an interval open to the top: %v", err)
	}

	// Behind the plan's back: one interval deleted, one widened, and a
	// deleted one put back.
	e.nft("delete", "element", "inet", "terway", "addrs", "{ 198.18.0.8 }")
	e.nft("delete", "element", "inet", "terway", "ports", "{ 198.18.0.9 . tcp . 8080-8090 }")
	e.nft("add", "element", "inet", "terway", "ports", "{ 198.18.0.9 . tcp . 8080-8099 }")
	e.nft("add", "element", "inet", "terway", "addrs", "{ 198.18.0.4-198.18.0.6 }")
	gone := func(set, text string) *elem {
		for _, x := range have.sets.get(set).elems.all() {
			if x.text == text {
				return x
			}
		}
		t.Fatalf("no element %s in %s before", text, set)
		return nil
	}
	err = verifyElems(c, &elemCheck{set: want.sets.get("addrs"), present: []*elem{elemOf("addrs", "198.18.0.8"), elemOf("addrs", "198.18.1.0/24")},
		absent: []*elem{gone("addrs", "198.18.0.4-198.18.0.6")}})
	if err == nil || !strings.Contains(err.Error(), "missing 198.18.0.8") || !strings.Contains(err.Error(), "unexpected 198.18.0.4-198.18.0.6") {
		t.Errorf("addrs: verify said %v; want 198.18.0.8 missing and 198.18.0.4-198.18.0.6 unexpected", err)
	}
	err = verifyElems(c, &elemCheck{set: want.sets.get("ports"), present: []*elem{elemOf("ports", "198.18.0.9 . tcp . 8080-8090")}})
	if err == nil || !strings.Contains(err.Error(), "missing 198.18.0.9 . tcp . 8080-8090") {
		t.Errorf("ports: verify said %v; want the interval held wider reported missing", err)
	}
}

// TestGetElemsAcrossChunks: read-back sends its queries many at a time
// (conn.getMany, getManyChunk per system call); across hundreds of queries,
// with absent elements (the kernel's ENOENT) among them, each element gets
// its own answer.
func TestGetElemsAcrossChunks(t *testing.T) {
	e := newEnv(t, "getelems")
	tab := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{
		{Name: "addrs", Type: []string{spec.TypeIPv4Addr}, Interval: true},
		{Name: "ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true},
	}}
	addr := func(i int) string { return fmt.Sprintf("198.18.%d.%d", i/100, 2*(i%100)+1) }
	const n = 300
	for i := range n {
		if i%3 == 0 { // the rest are asked for but never written
			tab.Sets[0].Elements = append(tab.Sets[0].Elements, spec.NFTElement{Key: []string{addr(i)}})
			tab.Sets[1].Elements = append(tab.Sets[1].Elements, spec.NFTElement{Key: []string{addr(i), "tcp", "80"}})
		}
	}
	tab.Canonicalize()
	e.apply(tab)
	c, err := dial(e.reg, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	for si, name := range []string{"addrs", "ports"} {
		asked := &spec.NFTSet{Name: name, Type: tab.Sets[si].Type, Interval: true}
		for i := range n {
			if si == 0 {
				asked.Elements = append(asked.Elements, spec.NFTElement{Key: []string{addr(i)}})
			} else {
				asked.Elements = append(asked.Elements, spec.NFTElement{Key: []string{addr(i), "tcp", "80"}})
			}
		}
		ws, err := canonicalSet(asked, nil)
		if err != nil {
			t.Fatal(err)
		}
		var elems []*elem
		for _, x := range asked.Elements {
			ce, err := canonicalElem(ws, x)
			if err != nil {
				t.Fatal(err)
			}
			elems = append(elems, ce)
		}
		got, err := getElems(c, ws, elems)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for i, g := range got {
			written := false
			for _, w := range tab.Sets[si].Elements {
				written = written || spec.FormatElement(w) == spec.FormatElement(asked.Elements[i])
			}
			switch {
			case written && (g == nil || g.String() != elems[i].String()):
				t.Errorf("%s: %s was written, read back %v", name, elems[i], g)
			case !written && g != nil:
				t.Errorf("%s: %s was never written, read back %v", name, elems[i], g)
			case g != nil:
				found++
			}
		}
		if found != n/3 {
			t.Errorf("%s: %d of %d asked for read back, want %d", name, found, n, n/3)
		}
	}
}

// TestVerifyWayFollowsSetSize: the plan reads back the elements it adds to
// a kept set one by one while that costs less than a dump of the set
// (verifyByElems): 40 added to a concatenated set of 600 are read one by
// one, 40 added to one of 100 by a dump, and 60 added to a one-field
// interval set of 600 (two queries an element) by a dump.
func TestVerifyWayFollowsSetSize(t *testing.T) {
	doc := func(n int) *spec.NFTable {
		t := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable}
		for _, size := range []int{600, 100} {
			s := &spec.NFTSet{Name: fmt.Sprintf("g%d", size), Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}
			for i := range size - 40 + n {
				s.Elements = append(s.Elements, spec.NFTElement{Key: []string{fmt.Sprintf("198.18.%d.%d", i/200, 2*(i%100)), []string{"tcp", "udp"}[i/100%2], "80"}})
			}
			t.Sets = append(t.Sets, s)
		}
		one := &spec.NFTSet{Name: "one600", Type: []string{spec.TypeIPv4Addr}, Interval: true}
		for i := range 600 - 60 + n*3/2 {
			one.Elements = append(one.Elements, spec.NFTElement{Key: []string{fmt.Sprintf("198.19.%d.%d", i/100, 2*(i%100))}})
		}
		t.Sets = append(t.Sets, one)
		t.Canonicalize()
		return t
	}
	want, _, err := canonical(doc(40), nil)
	if err != nil {
		t.Fatal(err)
	}
	have, _, err := canonical(doc(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := diff("test", want, have, have, DefaultReplaceCost, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch := p.verifyElems["g600"]; ch == nil || len(ch.present) != 40 || p.verifySets["g600"] != nil {
		t.Errorf("40 added to a set of 600: verifyElems %v, verifySets %v; want those 40 one by one", ch != nil, p.verifySets["g600"] != nil)
	}
	if p.verifySets["one600"] == nil || p.verifyElems["one600"] != nil {
		t.Errorf("60 added to a one-field interval set of 600: verifySets %v, verifyElems %v; want a dump of the set", p.verifySets["one600"] != nil, p.verifyElems["one600"] != nil)
	}
	if p.verifySets["g100"] == nil || p.verifyElems["g100"] != nil {
		t.Errorf("40 added to a set of 100: verifySets %v, verifyElems %v; want a dump of the set", p.verifySets["g100"] != nil, p.verifyElems["g100"] != nil)
	}
}
