package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestPolicyReach: which new pods an edited policy may involve, and so
// render with the edit rather than the pinned policies (renderviews.go):
// its targets and its peers by selector (not by address: ipBlock ranges
// hold no pod's own element), and, when in doubt, every pod.
func TestPolicyReach(t *testing.T) {
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	np := func(spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p"}, Spec: spec}
	}
	ref := func(ns, app, ip string) podRef {
		return podRef{pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{"app": app}},
			Status: corev1.PodStatus{PodIP: ip}}}
	}
	named := intstr.FromString("http")
	webFrom := func(peers ...networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
		return np(networkingv1.NetworkPolicySpec{PodSelector: *sel("web"), Ingress: []networkingv1.NetworkPolicyIngressRule{{From: peers}}})
	}
	cases := []struct {
		name   string
		policy *networkingv1.NetworkPolicy
		pod    podRef
		want   bool
	}{
		{"a target", webFrom(), ref("x", "web", "198.18.0.1"), true},
		{"a target's namesake in another namespace", webFrom(), ref("y", "web", "198.18.0.1"), false},
		{"a pod the policy does not name", webFrom(networkingv1.NetworkPolicyPeer{PodSelector: sel("client")}), ref("x", "db", "198.18.0.1"), false},
		{"a peer by podSelector", webFrom(networkingv1.NetworkPolicyPeer{PodSelector: sel("client")}), ref("x", "client", "198.18.0.1"), true},
		{"a podSelector peer's namesake in another namespace", webFrom(networkingv1.NetworkPolicyPeer{PodSelector: sel("client")}), ref("y", "client", "198.18.0.1"), false},
		{"a peer by namespaceSelector (any namespace counts)", webFrom(networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("team"), PodSelector: sel("client")}), ref("y", "client", "198.18.0.1"), true},
		{"an address in an ipBlock (its ranges are no pod's own)", webFrom(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/24"}}), ref("x", "db", "198.18.0.9"), false},
		{"a named port to every destination", np(networkingv1.NetworkPolicySpec{PodSelector: *sel("web"),
			Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: &named}}}}}), ref("y", "db", "198.18.0.9"), true},
		{"a selector that does not parse", np(networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}}}), ref("y", "db", "198.18.0.9"), true},
		{"a pod the inputs do not have yet", webFrom(), podRef{}, true},
	}
	for _, c := range cases {
		if got := reachOf(c.policy).involves(c.pod); got != c.want {
			t.Errorf("%s: involves %v, want %v", c.name, got, c.want)
		}
	}
}
