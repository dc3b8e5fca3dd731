package render

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// TestDepartingPodStaysPeer: after its DEL a departing pod
// (Inputs.PeersDeparting) has no network, no isolation and no dispatch
// entry, but its address stays in every peer set that held it, element for
// element; a cache patches the DEL in rather than rendering the node; and
// once it departs no more, the render is that of the node without it.
func TestDepartingPodStaysPeer(t *testing.T) {
	pod := func(name, app, ip string) (*corev1.Pod, *spec.Allocation) {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": app}},
				Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}},
			&spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
				Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + name, ContainerID: "c" + name, IfName: "eth0", UID: "uid-" + name}}
	}
	a, allocA := pod("a", "a", "198.18.0.10")
	b, allocB := pod("b", "b", "198.18.0.11")
	// b's neighbour c, on another node, is a peer of a's too: were b's
	// address not pinned when it departs, the two would merge into one
	// range, an element that is not b's own.
	c, _ := pod("c", "b", "")
	c.Spec.NodeName, c.Status.PodIP = "n2", "198.18.0.12"
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a-from-b"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("a"),
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("b")}}}}}}
	egress := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "b-to-a"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel("b"), PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("a")}}}}}}
	in := Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{a, b, c},
		Policies:    []*networkingv1.NetworkPolicy{np, egress},
		Allocations: []*spec.Allocation{allocA, allocB},
	}
	elements := func(s *spec.NodeState, ip string) (peer, own []string) {
		for _, set := range s.NFTables.Sets {
			for _, e := range set.Elements {
				if !slices.Contains(e.Key, ip) {
					continue
				}
				text := set.Name + ": " + strings.Join(e.Key, " . ")
				switch set.Name {
				case "pod-sources", "hairpin", "ingress-pods", "egress-pods":
					own = append(own, text)
				default:
					peer = append(peer, text)
				}
			}
		}
		return peer, own
	}
	full := mustRender(t, nil, in)
	fullPeer, fullOwn := elements(full, "198.18.0.11")
	if len(fullPeer) == 0 || len(fullOwn) == 0 {
		t.Fatalf("b's elements before its DEL: peer %v, own %v; want both", fullPeer, fullOwn)
	}
	deleted := in
	deleted.Allocations = []*spec.Allocation{allocA}
	withdrawn := mustRender(t, nil, deleted)
	departing := deleted
	departing.PeersDeparting = map[string]DepartingPeer{"x/b": {IP: "198.18.0.11", UID: "uid-b"}}

	cache := NewCache()
	mustRender(t, cache, in)
	for _, k := range []*Cache{nil, cache} {
		got := mustRender(t, k, departing)
		peer, own := elements(got, "198.18.0.11")
		if !slices.Equal(peer, fullPeer) {
			t.Errorf("departing b's peer elements %v, want %v as before its DEL", peer, fullPeer)
		}
		if len(own) != 0 || got.PodEntry("x/b") != nil {
			t.Errorf("departing b still has its own part: elements %v, pods %v", own, podKeys(got))
		}
		// Everything but b's peer elements is the node without b.
		if w, _ := elements(withdrawn, "198.18.0.11"); len(w) != 0 {
			t.Fatalf("without b, its address is still a peer in %v", w)
		}
		var rest spec.NodeState
		if err := json.Unmarshal(mustJSON(t, got), &rest); err != nil {
			t.Fatal(err)
		}
		for i := range rest.NFTables.Sets {
			s := rest.NFTables.Sets[i]
			s.Elements = slices.DeleteFunc(s.Elements, func(e spec.NFTElement) bool { return slices.Contains(e.Key, "198.18.0.11") })
			if len(s.Elements) == 0 {
				s.Elements = nil
			}
		}
		if string(mustJSON(t, &rest)) != string(mustJSON(t, withdrawn)) {
			t.Errorf("departing b: but for its peer elements, the render differs from the node without b:\n%s\nwant:\n%s",
				mustJSON(t, &rest), mustJSON(t, withdrawn))
		}
		if k == cache {
			if st := cache.Stats(); !st.Patched {
				t.Errorf("the DEL of a departing pod rendered the node whole: %+v", st)
			}
		}
	}
	if got := mustRender(t, cache, deleted); string(mustJSON(t, got)) != string(mustJSON(t, withdrawn)) {
		t.Error("withdrawn: the cached render differs from the render of the node without b")
	}
	// Ignored: a pod with an allocation, a pod without an object, an
	// address that is not IPv4, another object of the pod's name (another
	// UID: the pod made again), the pod on another node.
	elsewhere := deleted
	elsewhere.Pods = []*corev1.Pod{a, b.DeepCopy(), c}
	elsewhere.Pods[1].Spec.NodeName = "n2"
	for name, d := range map[string]map[string]DepartingPeer{
		"allocated": {"x/a": {IP: "198.18.0.99"}},
		"no object": {"x/nobody": {IP: "198.18.0.98"}},
		"bad":       {"x/b": {IP: "not-an-ip"}},
		"new pod":   {"x/b": {IP: "198.18.0.11", UID: "uid-b-again"}},
	} {
		in := deleted
		in.PeersDeparting = d
		if got := mustRender(t, nil, in); string(mustJSON(t, got)) != string(mustJSON(t, withdrawn)) {
			t.Errorf("%s: departing %v changed the render", name, d)
		}
	}
	moved := elsewhere
	moved.PeersDeparting = departing.PeersDeparting
	if got, want := mustRender(t, nil, moved), mustRender(t, nil, elsewhere); string(mustJSON(t, got)) != string(mustJSON(t, want)) {
		t.Error("a departing pod now on another node: departing changed the render")
	}
}

// mustRender renders in with k, or from scratch when k is nil.
func mustRender(t *testing.T, k *Cache, in Inputs) *spec.NodeState {
	t.Helper()
	var s *spec.NodeState
	var err error
	if k == nil {
		s, err = Render(in)
	} else {
		s, err = k.Render(in)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s
}
