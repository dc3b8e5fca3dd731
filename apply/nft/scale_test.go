package nft

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// TestLocality: with 250 pods, a change to one pod plans ops for that pod
// only, in partial and in full syncs; adding and removing a pod likewise.
func TestLocality(t *testing.T) {
	e := newEnv(t, "local")
	ps := pods(251)
	doc := testDoc(ps[:250], nil)
	e.apply(doc)
	e.checkTool(doc)

	onlyPod := func(ops []op.Op, pod string, want int) {
		t.Helper()
		got := lines(ops)
		if len(got) != want {
			t.Errorf("plan has %d ops, want %d:\n%s", len(got), want, strings.Join(got, "\n"))
		}
		for _, o := range ops {
			if o.Key != CommitKey && o.Pod != pod {
				t.Errorf("op %q belongs to pod %q, want %q", o, o.Pod, pod)
			}
		}
		if n := len(ops); n > 0 && (ops[n-1].Key != CommitKey || ops[n-1].Writes != 1) {
			t.Errorf("last op %q is not the single commit", ops[n-1])
		}
	}
	p := ps[17]
	// Variant 1: one rule's comment (chain rewritten), one port and one
	// peer (an element out and one in, in two sets).
	changed := testDoc(ps[:250], map[int]int{17: 1})
	ops := e.plan(changed, false)
	onlyPod(ops, p.key, 5)
	t.Logf("one pod changed (partial sync):\n%s", planText(ops))
	e.run(ops)

	ops = e.plan(doc, true) // and back, reading the kernel
	onlyPod(ops, p.key, 5)
	e.run(ops)

	added := testDoc(ps, nil) // pod 250 appears: 3 sets, 2 chains, 2 map elements
	ops = e.plan(added, false)
	onlyPod(ops, ps[250].key, 7)
	e.run(ops)
	ops = e.plan(doc, false) // and goes away
	onlyPod(ops, ps[250].key, 7)
	e.run(ops)

	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("full plan after the changes not empty:\n%s", planText(ops))
	}
	e.checkTool(doc)
}

// TestLargeSetsAndChains applies sets of 10,000 elements (hash, interval,
// concatenated interval) and a chain of 1,200 rules in one transaction:
// google/nftables v0.3.0 loses elements past a 64 KiB element list and hits
// EMSGSIZE at default socket buffers at this size.
func TestLargeSetsAndChains(t *testing.T) {
	e := newEnv(t, "large")
	const n = 10000
	hash := &spec.NFTSet{Name: "big-hash", Type: []string{spec.TypeIPv4Addr}}
	cidrs := &spec.NFTSet{Name: "big-cidrs", Type: []string{spec.TypeIPv4Addr}, Interval: true}
	concat := &spec.NFTSet{Name: "big-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true}
	for i := range n {
		ip := fmt.Sprintf("198.18.%d.%d", i/256, i%256)
		hash.Elements = append(hash.Elements, spec.NFTElement{Key: []string{ip}})
		concat.Elements = append(concat.Elements, spec.NFTElement{Key: []string{ip, "tcp", fmt.Sprintf("%d-%d", 1000+i%100, 2000+i%100)}})
		// /30s 8 addresses apart, so no two are adjacent or overlap.
		cidrs.Elements = append(cidrs.Elements, spec.NFTElement{Key: []string{ipString(198<<24|18<<16+uint64(i*8)) + "/30"}})
	}
	many := spec.NFTChain{Name: "many"}
	for i := range 1200 {
		many.Rules = append(many.Rules, spec.NFTRule{
			Match: []spec.NFTMatch{
				{Selectors: []string{spec.SelIPSaddr}, Values: []string{fmt.Sprintf("198.18.%d.%d", 200+i/250, 1+i%250)}},
				{Selectors: []string{spec.SelTHDport}, Values: []string{fmt.Sprint(1000 + i), fmt.Sprint(20000 + i)}},
			},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
		})
	}
	doc := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{hash, cidrs, concat},
		Chains: []spec.NFTChain{{Name: "forward", Hook: spec.HookForward, Policy: spec.VerdictAccept,
			Rules: []spec.NFTRule{{Verdict: spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "many"}}}}, many}}
	doc.Canonicalize()

	ops := e.apply(doc) // the commit reads every set and chain back and fails on a difference
	t.Logf("%s", ops[len(ops)-1])
	e.checkTool(doc) // and nft(8) agrees, element by element
	if ops := e.plan(doc, true); len(ops) != 0 {
		t.Errorf("full plan after the large apply has %d ops, want 0; first: %s", len(ops), ops[0])
	}

	// A small change to the large objects stays small.
	doc.Sets[0].Elements = doc.Sets[0].Elements[1:]
	doc.Chains[1].Rules[600].Verdict.Kind = spec.VerdictDrop
	ops = e.apply(doc)
	if got := lines(ops); len(got) != 2 {
		t.Errorf("plan has %d ops, want 2 (one element, one chain):\n%s", len(got), strings.Join(got, "\n"))
	}
	e.checkTool(doc)
}
