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
			Pods:      []Pod{{Key: fmt.Sprintf("ns/p%d", i), IP: ip}},
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
