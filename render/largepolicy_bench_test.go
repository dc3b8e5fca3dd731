package render_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// BenchmarkRenderLargePolicyChange renders, through a Cache, a node of 20
// pods whose one policy admits 50,000 peers on one port, then 42,000, and
// so on: the render a policy edit of that size costs whoever renders
// first after it (a resync, or a CNI ADD).
func BenchmarkRenderLargePolicyChange(b *testing.B) {
	in := render.Inputs{
		Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.6.0/24"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.19.255.1"}}}},
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
	}
	for i := range 20 {
		name := fmt.Sprintf("p%d", i)
		in.Pods = append(in.Pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: "node-1"}})
		in.Allocations = append(in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: fmt.Sprintf("198.18.6.%d", 10+i), Netns: "/var/run/netns/" + name, ContainerID: "ctr-" + name}})
	}
	policy := func(peers int) *networkingv1.NetworkPolicy {
		rule := networkingv1.NetworkPolicyIngressRule{}
		for i := range peers {
			n := 198<<24 | 18<<16 | 16<<8 + 2*i + 1
			rule.From = append(rule.From, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
				CIDR: fmt.Sprintf("%d.%d.%d.%d/32", n>>24, n>>16&255, n>>8&255, n&255)}})
		}
		tcp, port := corev1.ProtocolTCP, intstr.FromInt32(80)
		rule.Ports = []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "large", UID: "large", ResourceVersion: fmt.Sprint(peers)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "p0"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{rule}}}
	}
	versions := []*networkingv1.NetworkPolicy{policy(50000), policy(42000)}
	k := render.NewCache()
	i := 0
	for b.Loop() {
		in.Policies = versions[i%2 : i%2+1]
		i++
		if _, err := k.Render(in); err != nil {
			b.Fatal(err)
		}
	}
}
