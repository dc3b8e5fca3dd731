package render

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/spec"
)

// TestHeldBackPodIsNoPeer: a pod held back (Inputs.PeersHeldBack) has its
// network, its isolation and its dispatch entries, but no policy's peer
// sets hold its address; everything else is as without the hold, and
// taking the hold away gives the full render back.
func TestHeldBackPodIsNoPeer(t *testing.T) {
	a, allocA := appPod("a", "198.18.0.10")
	b, allocB := appPod("b", "198.18.0.11")
	port := intstr.FromInt32(80)
	// a admits b on port 80 and on every port (two rules: both set kinds);
	// b sends only to a.
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a-from-b"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}},
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}},
			}}}
	egress := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "b-to-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}}}},
			}}}
	in := Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{a, b},
		Policies:    []*networkingv1.NetworkPolicy{np, egress},
		Allocations: []*spec.Allocation{allocA, allocB},
	}
	full, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	// Where an address is in the full render's sets, as "set: element".
	holding := func(s *spec.NodeState, ip string) []string {
		var out []string
		for _, set := range s.NFTables.Sets {
			for _, e := range set.Elements {
				if slices.Contains(e.Key, ip) {
					out = append(out, set.Name+": "+strings.Join(e.Key, " . "))
				}
			}
		}
		return out
	}
	peerSets := func(s *spec.NodeState, ip string) []string {
		return slices.DeleteFunc(holding(s, ip), func(e string) bool {
			return strings.HasPrefix(e, "pod-sources:") || strings.HasPrefix(e, "hairpin:") ||
				strings.HasPrefix(e, "ingress-pods:") || strings.HasPrefix(e, "egress-pods:")
		})
	}
	if len(peerSets(full, "198.18.0.11")) != 2 || len(peerSets(full, "198.18.0.10")) != 1 {
		t.Fatalf("the full render's peer sets: b in %v, a in %v; want b in a's two ingress sets, a in b's egress set",
			peerSets(full, "198.18.0.11"), peerSets(full, "198.18.0.10"))
	}

	cache := NewCache()
	for _, k := range []*Cache{nil, cache} {
		render := func(held map[string]bool) *spec.NodeState {
			in := in
			in.PeersHeldBack = held
			return mustRender(t, k, in)
		}
		heldB := render(map[string]bool{"x/b": true})
		if got := peerSets(heldB, "198.18.0.11"); len(got) != 0 {
			t.Errorf("b held back is still a peer in %v", got)
		}
		if got, want := peerSets(heldB, "198.18.0.10"), peerSets(full, "198.18.0.10"); !slices.Equal(got, want) {
			t.Errorf("holding b back changed a's peer elements: %v, want %v", got, want)
		}
		// b's own part is all there: its network, its source entry, its
		// egress isolation.
		own := func(s *spec.NodeState) []string {
			return slices.DeleteFunc(holding(s, "198.18.0.11"), func(e string) bool {
				return !strings.Contains(e, "-pods:") && !strings.HasPrefix(e, "pod-sources:") && !strings.HasPrefix(e, "hairpin:")
			})
		}
		if got, want := own(heldB), own(full); !slices.Equal(got, want) || len(want) == 0 {
			t.Errorf("b held back: its own elements %v, want %v", got, want)
		}
		if !slices.EqualFunc(heldB.Pods, full.Pods, func(x, y *spec.Pod) bool { return x.Key == y.Key && x.IP == y.IP }) {
			t.Errorf("b held back: pods %v, want %v", podKeys(heldB), podKeys(full))
		}
		if again := render(nil); string(mustJSON(t, again)) != string(mustJSON(t, full)) {
			t.Error("no longer held back, the render differs from the full render")
		}
		// A pod on another node is never held back: the hold is for local
		// pods, whose ADD writes their part.
		if got := render(map[string]bool{"x/nobody": true}); string(mustJSON(t, got)) != string(mustJSON(t, full)) {
			t.Error("holding back a pod the node does not have changed the render")
		}
	}
}

// TestAdmissionLeavesPoliciesThatSelectNothing: admitting a held-back pod
// (an agent's admission step) resolves again the policies that name it as
// a peer and select a pod here, not those that name it and select nothing
// here: their rules are not resolved, and the pod's new role changes
// nothing of them.
func TestAdmissionLeavesPoliciesThatSelectNothing(t *testing.T) {
	a, allocA := appPod("a", "198.18.0.10")
	b, allocB := appPod("b", "198.18.0.11")
	fromB := func(name, selects string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": selects}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{
					{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}},
				}}}
	}
	in := Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{a, b},
		Policies:    []*networkingv1.NetworkPolicy{fromB("a-from-b", "a"), fromB("ghost-from-b", "ghost")},
		Allocations: []*spec.Allocation{allocA, allocB},
	}
	held := in
	held.PeersHeldBack = map[string]bool{"x/b": true}
	main := NewCache()
	mustRender(t, main, held)
	// The admission renders ahead with a copy of the main cache, which
	// has no document to patch: the whole node, through the cache.
	ahead := NewCache()
	ahead.CopyFrom(main)
	got := mustRender(t, ahead, in)
	if st := ahead.Stats(); st.Patched || st.PoliciesResolved != 1 {
		t.Errorf("admitting b: %d policies resolved (patched %v), want 1 (a-from-b; ghost-from-b selects nothing)", st.PoliciesResolved, st.Patched)
	}
	if want := mustRender(t, nil, in); string(mustJSON(t, got)) != string(mustJSON(t, want)) {
		t.Error("the admission's render differs from a render from scratch")
	}
}

// TestAdmissionPatchesWithoutPolicies: admitting a held-back pod is a
// patch of the last document when no policy is in the inputs (a peer role
// then changes nothing), and a whole render when one is; either way the
// document is a render from scratch.
func TestAdmissionPatchesWithoutPolicies(t *testing.T) {
	a, allocA := appPod("a", "198.18.0.10")
	b, allocB := appPod("b", "198.18.0.11")
	in := Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{a, b},
		Allocations: []*spec.Allocation{allocA, allocB},
	}
	aFromB := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a-from-b"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}}}}},
			}}}
	for _, c := range []struct {
		policies []*networkingv1.NetworkPolicy
		patched  bool
	}{{nil, true}, {[]*networkingv1.NetworkPolicy{aFromB}, false}} {
		in := in
		in.Policies = c.policies
		held := in
		held.PeersHeldBack = map[string]bool{"x/b": true}
		k := NewCache()
		mustRender(t, k, held)
		got := mustRender(t, k, in)
		if st := k.Stats(); st.Patched != c.patched {
			t.Errorf("%d policies: admitting b patched %v, want %v", len(c.policies), st.Patched, c.patched)
		}
		if want := mustRender(t, nil, in); string(mustJSON(t, got)) != string(mustJSON(t, want)) {
			t.Errorf("%d policies: the admission's render differs from a render from scratch", len(c.policies))
		}
		// And back: holding b again (its pod gone and back, say).
		again := mustRender(t, k, held)
		if want := mustRender(t, nil, held); string(mustJSON(t, again)) != string(mustJSON(t, want)) {
			t.Errorf("%d policies: holding b back again differs from a render from scratch", len(c.policies))
		}
	}
}

// appPod is a pod of namespace x labelled app=name, on node n1, with its
// allocation at ip.
func appPod(name, ip string) (*corev1.Pod, *spec.Allocation) {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}},
		&spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + name, ContainerID: "c" + name, IfName: "eth0"}}
}

// podKeys lists doc's pod entries as key=ip, for messages.
func podKeys(doc *spec.NodeState) []string {
	out := make([]string, len(doc.Pods))
	for i, p := range doc.Pods {
		out[i] = p.Key + "=" + p.IP
	}
	return out
}
