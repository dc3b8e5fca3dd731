package spec

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSplicedIsCanonicalOrder: splicing items in and out of a canonical
// document gives the document CanonicalizeOrder makes of the same items,
// and the original is left as it was.
func TestSplicedIsCanonicalOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	item := func(i int) *NodeState {
		ns := fmt.Sprintf("/var/run/netns/p%d", i)
		ip := fmt.Sprintf("198.18.%d.%d", i/250, 2+i%250)
		veth := fmt.Sprintf("tw%08x", i)
		return &NodeState{
			Links:     []Link{{Name: veth, Kind: LinkVeth}},
			Addresses: []Address{{Netns: ns, Dev: "eth0", CIDR: ip + "/32"}},
			Routes:    []Route{{Netns: ns, Dst: "default"}, {Dst: ip + "/32", Dev: veth}},
			Neighbors: []Neighbor{{Netns: ns, Dev: "eth0", IP: PodGateway}, {Dev: veth, IP: ip}},
			Pods:      []*Pod{{Key: fmt.Sprintf("ns/p%d", i), IP: ip}},
			Problems:  []Problem{{Kind: "Pod", Namespace: "ns", Name: fmt.Sprintf("p%d", i), Reason: "r"}},
		}
	}
	build := func(ids []int) *NodeState {
		s := New("n1", PodModeVPC)
		for _, i := range ids {
			it := item(i)
			s.Links = append(s.Links, it.Links...)
			s.Addresses = append(s.Addresses, it.Addresses...)
			s.Routes = append(s.Routes, it.Routes...)
			s.Neighbors = append(s.Neighbors, it.Neighbors...)
			s.Pods = append(s.Pods, it.Pods...)
			s.Problems = append(s.Problems, it.Problems...)
		}
		s.CanonicalizeOrder()
		return s
	}
	asJSON := func(s *NodeState) string {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ids := rng.Perm(300)
	base := build(ids[:200])
	before := asJSON(base)
	out, in := ids[:5], ids[200:207]
	got, ok := base.Spliced(build(out), build(in))
	if !ok {
		t.Fatal("splice refused")
	}
	if want := build(append(append([]int{}, ids[5:200]...), in...)); asJSON(got) != asJSON(want) {
		t.Fatalf("spliced document differs from the canonical one:\n%s\n%s", asJSON(got), asJSON(want))
	}
	if asJSON(base) != before {
		t.Fatal("Spliced modified the document it was given")
	}
	if _, ok := base.Spliced(&NodeState{}, build(ids[10:11])); ok {
		t.Error("an item whose key is present was spliced in")
	}
	if _, ok := base.Spliced(build(ids[250:251]), &NodeState{}); ok {
		t.Error("an item that is not there was spliced out")
	}
	// Two pods' default routes in one namespace share a key: which one
	// goes is not known.
	twice := *base
	ns := base.Routes[len(base.Routes)-1].Netns
	twice.Routes = append(slices.Clone(base.Routes), Route{Netns: ns, Dst: "default", Dev: "net1"})
	twice.CanonicalizeOrder()
	if _, ok := twice.Spliced(&NodeState{Routes: []Route{{Netns: ns, Dst: "default", Dev: "net1"}}}, &NodeState{}); ok {
		t.Error("one of two items of one key was spliced out")
	}
}

// TestCanSpliceAgreesWithSpliced: for random splices, with items missing,
// present, repeated, or of one key twice in the document, after a
// pending splice or none, CanSplice answers what Spliced does on the
// document the pending splice makes, and leaves the document as it was.
func TestCanSpliceAgreesWithSpliced(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	route := func(i int) Route {
		// Netns of 8 and destinations of 16: keys repeat across i.
		return Route{Netns: fmt.Sprintf("/var/run/netns/p%d", i%8), Dst: fmt.Sprintf("198.18.0.%d/32", i%16), Dev: fmt.Sprintf("d%d", i)}
	}
	pod := func(i int) *Pod { return &Pod{Key: fmt.Sprintf("ns/p%d", i%40), IP: fmt.Sprint(i)} }
	pick := func(n, of int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = rng.IntN(of)
		}
		return out
	}
	build := func(ids []int, canonical bool) *NodeState {
		s := &NodeState{}
		for _, i := range ids {
			s.Routes = append(s.Routes, route(i))
			s.Pods = append(s.Pods, pod(i))
		}
		if canonical {
			s.CanonicalizeOrder()
		}
		return s
	}
	// some are items of s, mostly; or random ones.
	some := func(s *NodeState) *NodeState {
		if rng.IntN(2) == 0 || len(s.Routes) == 0 {
			return build(pick(rng.IntN(3), 200), false)
		}
		out := &NodeState{}
		for range rng.IntN(3) {
			j := rng.IntN(len(s.Routes))
			out.Routes = append(out.Routes, s.Routes[j])
			out.Pods = append(out.Pods, s.Pods[j])
		}
		return out
	}
	agreed := map[bool]int{}
	pendings := 0
	for range 10000 {
		base := build(pick(rng.IntN(20), 200), true)
		before, err := json.Marshal(base)
		if err != nil {
			t.Fatal(err)
		}
		var pendingOut, pendingIn *NodeState // none: nil, as for a check on base
		doc := base
		if rng.IntN(2) == 0 {
			out, in := some(base), build(pick(rng.IntN(3), 200), false)
			if spliced, ok := base.Spliced(out, in); ok {
				pendingOut, pendingIn, doc = out, in, spliced
				pendings++
			}
		}
		remove, add := some(doc), build(pick(rng.IntN(3), 200), false)
		_, want := doc.Spliced(remove, add)
		if got := base.CanSplice(pendingOut, pendingIn, remove, add); got != want {
			t.Fatalf("CanSplice = %v, Spliced's ok = %v\nbase %+v\npending out %+v, in %+v\nremove %+v\nadd %+v",
				got, want, base, pendingOut, pendingIn, remove, add)
		}
		if after, _ := json.Marshal(base); string(after) != string(before) {
			t.Fatal("CanSplice or Spliced modified the document")
		}
		agreed[want]++
	}
	if agreed[true] < 1000 || agreed[false] < 1000 || pendings < 1000 {
		t.Errorf("splices that succeed %d, fail %d, after a pending one %d: too few of one to compare",
			agreed[true], agreed[false], pendings)
	}
}
