package render

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// Policy where Services and the node are involved, in the document; sim's
// TestPolicyServicesAndNode checks the same by traffic, behind kube-proxy's
// rules.

func nodePolicyInputs(policies ...*networkingv1.NetworkPolicy) Inputs {
	pod := func(ns, name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"pod": name}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c"}}}}
	}
	alloc := func(name, ip string) *spec.Allocation {
		return &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + name, ContainerID: "c" + name}}
	}
	// hostNetwork pods, here and on another node, carry their node's
	// address as podIP, as the API server sets it.
	h, remoteH := pod("x", "h", "n1"), pod("x", "rh", "n2")
	h.Spec.HostNetwork, h.Status.PodIP = true, "198.19.0.1"
	remoteH.Spec.HostNetwork, remoteH.Status.PodIP = true, "198.19.0.2"
	remoteH.Labels["pod"] = "h"
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.19.0.1"}}}}
	return Inputs{
		Node:        node,
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{pod("x", "a", "n1"), pod("x", "b", "n1"), h, remoteH},
		Allocations: []*spec.Allocation{alloc("a", "198.18.0.10"), alloc("b", "198.18.0.11")},
		Policies:    policies,
	}
}

func podPolicy(name, selected string, s networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	s.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"pod": selected}}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name}, Spec: s}
}

// TestHairpinExemptsIsolatedPods: a pod isolated in either direction gets
// an element (its host veth, its IP) in the hairpin set, which the forward
// chain accepts right after established traffic, before either dispatch;
// a pod isolated in no direction needs none.
func TestHairpinExemptsIsolatedPods(t *testing.T) {
	for _, pt := range [][]networkingv1.PolicyType{{networkingv1.PolicyTypeIngress}, {networkingv1.PolicyTypeEgress}} {
		state, err := Render(nodePolicyInputs(podPolicy("deny-a", "a", networkingv1.NetworkPolicySpec{PolicyTypes: pt})))
		if err != nil {
			t.Fatal(err)
		}
		tbl := state.NFTables
		set := tbl.Set(setHairpin)
		if set == nil {
			t.Fatalf("%v: no set %s", pt, setHairpin)
		}
		want := []spec.NFTElement{{Key: []string{spec.HostVethName("x/a"), "198.18.0.10"}}}
		if !slices.EqualFunc(set.Elements, want, func(a, b spec.NFTElement) bool { return slices.Equal(a.Key, b.Key) }) {
			t.Errorf("%v: hairpin elements %v, want %v (x/a only: x/b is not isolated)", pt, set.Elements, want)
		}
		var rules []string
		for _, r := range tbl.Chain(chainForward).Rules {
			rules = append(rules, spec.FormatRule(r))
		}
		wantRules := []string{"ct state established,related accept", "meta iifname . ip daddr @hairpin accept",
			"meta iifname vmap @egress-pods", "meta oifname vmap @ingress-pods"}
		if !slices.Equal(rules, wantRules) {
			t.Errorf("%v: forward chain rules\n%s\nwant\n%s", pt, strings.Join(rules, "\n"), strings.Join(wantRules, "\n"))
		}
	}
}

// TestHostNetworkPodIsTheNode: a hostNetwork pod has its node's address. A
// podSelector peer that matches it must not put that address in a peer
// set (which would admit or allow the whole node, or any other
// hostNetwork process, by pod labels), and a policy that selects it must
// not isolate the node's address.
func TestHostNetworkPodIsTheNode(t *testing.T) {
	fromH := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "h"}}}}
	state, err := Render(nodePolicyInputs(
		podPolicy("a-with-h", "a", networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: fromH}},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: fromH}},
		}),
		podPolicy("deny-h", "h", networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}),
	))
	if err != nil {
		t.Fatal(err)
	}
	text := spec.PrintNFT(state.NFTables)
	for _, addr := range []string{"198.19.0.1", "198.19.0.2"} {
		if strings.Contains(text, addr) {
			t.Errorf("the ruleset names the hostNetwork pods' address %s:\n%s", addr, text)
		}
	}
	// x/a is isolated, by a policy whose peers match nothing.
	if e := findElement(state.NFTables.Set(mapIngressPods), spec.HostVethName("x/a")); e == nil {
		t.Fatalf("x/a is not isolated for ingress:\n%s", text)
	}
	for _, p := range state.Pods {
		if p.Key == "x/h" || p.Key == "x/rh" {
			t.Errorf("hostNetwork pod %s has a network in the document: %+v", p.Key, p)
		}
	}
}

func findElement(s *spec.NFTSet, key string) *spec.NFTElement {
	for i := range s.Elements {
		if s.Elements[i].Key[0] == key {
			return &s.Elements[i]
		}
	}
	return nil
}
