package nft

import (
	"fmt"
	"math"
	"testing"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// BenchmarkConvergedPlan measures planning a converged table of 250 pods:
// full (read the kernel, decompile, diff) and partial (diff against the
// record only; periodic full syncs switched off). Both plan zero ops.
func BenchmarkConvergedPlan(b *testing.B) {
	e := newEnv(b, "bconv")
	e.r = New(Options{FullEvery: math.MaxInt})
	doc := testDoc(pods(250), nil)
	e.apply(doc)
	for _, full := range []bool{true, false} {
		b.Run(fmt.Sprintf("full=%t", full), func(b *testing.B) {
			e.t = b
			e.plan(doc, full) // warm the canonical cache, as a running agent has it
			for b.Loop() {
				if ops := e.plan(doc, full); len(ops) != 0 {
					b.Fatalf("converged plan has %d ops", len(ops))
				}
			}
		})
	}
}

// BenchmarkOnePodChange measures a partial sync (plan, one transaction,
// read-back) that changes one pod's chain and set elements, with 10 and
// with 250 pods in the table: the cost should barely depend on the number
// of other pods. Periodic full syncs are switched off to measure the
// partial path alone.
func BenchmarkOnePodChange(b *testing.B) {
	for _, n := range []int{10, 250} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			e := newEnv(b, fmt.Sprintf("bone%d", n))
			e.r = New(Options{FullEvery: math.MaxInt})
			ps := pods(n)
			docs := []*spec.NFTable{testDoc(ps, nil), testDoc(ps, map[int]int{n / 2: 1})}
			e.apply(docs[0])
			i := 0
			for b.Loop() {
				i++
				if ops := e.apply(docs[i%2]); len(ops) != 6 {
					b.Fatalf("plan has %d ops, want 5 and the commit", len(ops))
				}
			}
		})
	}
}

// BenchmarkLargeSetChange is defect 5: a fresh fill of a table with a
// 50,000-element concatenated interval set (a new Reconciler, so nothing
// is cached: canonicalise, one transaction, read-back) against the change
// of that set to 42,000 elements on a node that holds it (a partial sync,
// as the agent's next sync is). The change must cost at most twice the
// fresh fill. Run (in one command, so the two are comparable):
//
//	go test -run XXX -bench LargeSetChange -benchtime 5x ./apply/nft/
func BenchmarkLargeSetChange(b *testing.B) {
	before, after := bigSetDoc(50000, nil), bigSetDoc(50000, shrink)
	e := newEnv(b, "blarge")
	b.Run("fresh-50000", func(b *testing.B) {
		e.t = b
		for b.Loop() {
			b.StopTimer()
			e.nft("add", "table", "inet", "terway") // so that delete finds one
			e.nft("delete", "table", "inet", "terway")
			e.r = New(Options{})
			b.StartTimer()
			e.apply(before)
		}
	})
	// Staged (the default: filled in short transactions outside the
	// plan's, twice) and in the plan's one transaction (StageMin < 0).
	for _, c := range []struct {
		name  string
		stage int
	}{{"change-50000-42000", 0}, {"change-50000-42000-one-transaction", -1}} {
		b.Run(c.name, func(b *testing.B) {
			if ops := e.timeChange(b, Options{StageMin: c.stage}, before, after); len(ops) != 3 {
				b.Fatalf("the change plans %d ops, want the set, its chain and the commit", len(ops))
			}
		})
	}
}

// BenchmarkLargeSetChangeWays measures both ways of a large change: the
// set recreated in the transaction (the default) and its elements deleted
// one by one (ReplaceCost -1), at 10,000 -> 8,400 elements, where the
// element-by-element way still ends within a minute (at 50,000 it took
// 3 min 23 s); next to a fresh fill of the same document.
//
//	go test -run XXX -bench LargeSetChangeWays -benchtime 1x ./apply/nft/
func BenchmarkLargeSetChangeWays(b *testing.B) {
	before, after := bigSetDoc(10000, nil), bigSetDoc(10000, shrink)
	e := newEnv(b, "bways")
	b.Run("fresh-10000", func(b *testing.B) {
		e.t = b
		for b.Loop() {
			b.StopTimer()
			e.nft("add", "table", "inet", "terway") // so that delete finds one
			e.nft("delete", "table", "inet", "terway")
			e.r = New(Options{})
			b.StartTimer()
			e.apply(before)
		}
	})
	for _, c := range []struct {
		name string
		cost int
		ops  int
	}{{"recreate", DefaultReplaceCost, 3}, {"element-by-element", -1, 1601}} {
		b.Run(c.name+"-10000-8400", func(b *testing.B) {
			if ops := e.timeChange(b, Options{ReplaceCost: c.cost}, before, after); len(ops) != c.ops {
				b.Fatalf("the change plans %d ops, want %d", len(ops), c.ops)
			}
		})
	}
}

// BenchmarkIntervalSetDeleteWays measures both ways of deleting some
// elements of a kept interval set: element by element (ReplaceCost -1) and
// by recreating the set (a ReplaceCost so high that any deletion
// recreates), for a
// concatenated set (the kernel's pipapo backend, a group's ports set) and
// a one-field set (rbtree, a group's any-port set), at sizes from one
// pod's group (a few hundred) to 10,000. It shows how a delete's cost
// grows with the set, which DefaultReplaceCost is taken from.
//
//	go test -run XXX -bench IntervalSetDeleteWays -benchtime 10x ./apply/nft/
func BenchmarkIntervalSetDeleteWays(b *testing.B) {
	e := newEnv(b, "bdelways")
	for _, kind := range []string{"concat", "single"} {
		for _, c := range []struct{ n, gone int }{{350, 2}, {3000, 15}, {3000, 100}, {10000, 40}, {10000, 250}, {10000, 2000}, {50000, 8000}} {
			step := c.n / c.gone
			keep := func(i int) bool { return i%step != step/2 || i/step >= c.gone }
			before, after := bigSetDoc(c.n, nil), bigSetDoc(c.n, keep)
			if kind == "single" {
				before, after = addrSetDoc(c.n, nil), addrSetDoc(c.n, keep)
			}
			for _, way := range []struct {
				name string
				cost int
			}{{"edit", -1}, {"recreate", 1 << 30}} {
				b.Run(fmt.Sprintf("%s/%d-of-%d/%s", kind, c.gone, c.n, way.name), func(b *testing.B) {
					e.timeChange(b, Options{ReplaceCost: way.cost}, before, after)
				})
			}
		}
	}
}

// addrSetDoc is bigSetDoc with a one-field interval set of n addresses
// (every other one, so that none are adjacent).
func addrSetDoc(n int, keep func(i int) bool) *spec.NFTable {
	t := testDoc(pods(3), nil)
	big := &spec.NFTSet{Name: "big", Type: []string{spec.TypeIPv4Addr}, Interval: true, Comment: "a large policy peer set"}
	for i := range n {
		if keep == nil || keep(i) {
			big.Elements = append(big.Elements, spec.NFTElement{Key: []string{ipString(198<<24 | 18<<16 + 2*uint64(i))}})
		}
	}
	t.Sets = append(t.Sets, big)
	t.Chains = append(t.Chains, spec.NFTChain{Name: "big-peers", Comment: "admits the big set", Rules: []spec.NFTRule{{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: "big"}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}}})
	t.Canonicalize()
	return t
}

// timeChange times, b.N times, the apply of after to a table that a new
// reconciler of opts filled with before (untimed), and returns the last
// change's operations.
func (e *env) timeChange(b *testing.B, opts Options, before, after *spec.NFTable) []op.Op {
	e.t = b
	var ops []op.Op
	for b.Loop() {
		b.StopTimer()
		e.r = New(opts)
		e.apply(before)
		b.StartTimer()
		ops = e.apply(after)
	}
	return ops
}

// BenchmarkPeerInManyGroupSets measures what one pod's ADD costs the
// kernel for the groups it is a peer in: its address and two ports added to
// each of G concatenated interval sets of 350 elements (a group set of a
// namespace's pods; in synth's cluster of 1,000 policies an ADD touches
// about 40), for G = 1, 10 and 40, in one transaction through this
// package, read back. Each round takes the address out again, untimed.
//
//	go test -run XXX -bench PeerInManyGroupSets -benchtime 20x ./apply/nft/
func BenchmarkPeerInManyGroupSets(b *testing.B) {
	e := newEnv(b, "bgroups")
	for _, groups := range []int{1, 10, 40} {
		doc := func(withPod bool) *spec.NFTable {
			t := testDoc(pods(3), nil)
			for g := range groups {
				name := fmt.Sprintf("in-g%d-ports", g)
				s := &spec.NFTSet{Name: name, Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
					Comment: "a group's peers and ports"}
				for i := range 175 {
					ip := ipString(198<<24 | 18<<16 + 2*uint64(i)) // none adjacent
					s.Elements = append(s.Elements, spec.NFTElement{Key: []string{ip, "tcp", "8000"}},
						spec.NFTElement{Key: []string{ip, "tcp", "9090"}})
				}
				if withPod {
					s.Elements = append(s.Elements, spec.NFTElement{Key: []string{"198.19.0.1", "tcp", "8000"}},
						spec.NFTElement{Key: []string{"198.19.0.1", "tcp", "9090"}})
				}
				t.Sets = append(t.Sets, s)
				t.Chains = append(t.Chains, spec.NFTChain{Name: fmt.Sprintf("in-g%d", g), Comment: "a group", Rules: []spec.NFTRule{{
					Match:   []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr, spec.SelL4Proto, spec.SelTHDport}, Set: name}},
					Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn},
				}}})
			}
			t.Canonicalize()
			return t
		}
		without, with := doc(false), doc(true)
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			e.t = b
			e.r = New(Options{})
			e.apply(without)
			for b.Loop() {
				if ops := e.apply(with); len(ops) != 2*groups+1 {
					b.Fatalf("the ADD plans %d ops, want %d elements and the commit", len(ops), 2*groups)
				}
				b.StopTimer()
				e.apply(without)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkScopedAddPlan measures a CNI ADD's scoped plan alone, without
// committing it: one new pod (its chains, sets and dispatch elements) on
// a node of 10 and of 1,000 pods, whose table the record holds. The plan
// should cost what the pod adds, not what the table holds.
//
//	go test -run XXX -bench ScopedAddPlan ./apply/nft/
func BenchmarkScopedAddPlan(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("pods=%d", n), func(b *testing.B) {
			e := newEnv(b, fmt.Sprintf("bsadd%d", n))
			e.r = New(Options{FullEvery: math.MaxInt})
			ps := pods(n + 1)
			e.apply(testDoc(ps[:n], nil))
			with := testDoc(ps, nil)
			sc := Scope{Pods: []string{ps[n].key}, Addrs: []string{ps[n].ip}}
			for b.Loop() {
				ops, err := e.r.PlanScoped(e.reg, e.ns, with, sc)
				if err != nil {
					b.Fatal(err)
				}
				if len(ops) < 2 {
					b.Fatalf("the ADD plans %d ops", len(ops))
				}
			}
		})
	}
}

// BenchmarkVerifyWays compares the two ways a transaction reads back the
// elements it added to a kept set: each element by its key (verifyElems)
// against a dump of the whole set (verify's readElems and sameElems), on
// a group set of the shape `terwayctl bench` builds (address . protocol
// . port, interval) of 200 and 800 elements, for 16 and 64 added
// elements. The diff picks per element while it costs less (see
// verifyByElems).
//
//	go test -run XXX -bench VerifyWays ./apply/nft/
func BenchmarkVerifyWays(b *testing.B) {
	e := newEnv(b, "bverify")
	for _, size := range []int{200, 800} {
		t := testDoc(pods(1), nil)
		s := &spec.NFTSet{Name: "in-g-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
			Comment: "a group's peers and ports"}
		for i := range size / 2 {
			ip := ipString(198<<24 | 18<<16 + 2*uint64(i)) // none adjacent
			s.Elements = append(s.Elements, spec.NFTElement{Key: []string{ip, "tcp", "8080"}},
				spec.NFTElement{Key: []string{ip, "tcp", "9090"}})
		}
		t.Sets = append(t.Sets, s)
		t.Canonicalize()
		e.r = New(Options{})
		e.apply(t)
		want, _, err := canonical(t, nil)
		if err != nil {
			b.Fatal(err)
		}
		ws := want.sets.get(s.Name)
		c, err := dial(e.reg, e.ns)
		if err != nil {
			b.Fatal(err)
		}
		for _, added := range []int{16, 64} {
			present := sortedElemList(&ws.elems)[:added]
			b.Run(fmt.Sprintf("set=%d,added=%d/elements", size, added), func(b *testing.B) {
				for b.Loop() {
					if err := verifyElems(c, &elemCheck{set: ws, present: present}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("set=%d,added=%d/dump", size, added), func(b *testing.B) {
				for b.Loop() {
					got := &set{name: ws.name, types: ws.types, typeNames: ws.typeNames, interval: ws.interval}
					if err := readElems(c, got); err != nil {
						b.Fatal(err)
					}
					if err := sameElems(got, ws); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		c.close()
	}
}
