package nft

import (
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
	p, err := diff(e.ns, want, have, have, DefaultReplaceCost, 0)
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
	ws := want.sets["ingress-dispatch"]
	elemOf := func(ip string) *elem {
		for _, x := range ws.elems {
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
