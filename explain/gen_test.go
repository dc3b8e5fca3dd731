package explain_test

import (
	"fmt"
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// genPod is one pod of the generated clusters; its address and netns are
// fixed across policy sets so one topology serves every set.
type genPod struct {
	ns, name, ip string
}

var genPods = []genPod{
	{"x", "a", "198.18.0.10"}, {"x", "b", "198.18.0.11"}, {"x", "c", "198.18.0.12"},
	{"y", "a", "198.18.0.20"}, {"y", "b", "198.18.0.21"}, {"y", "c", "198.18.0.22"},
}

// genPorts are the ports probed, on TCP and UDP.
var genPorts = []uint16{80, 81}

// genCluster returns render inputs for one seeded random policy set: pod
// and namespace labels, named ports and policies (selectors with labels
// and expressions, namespace selectors, ipBlocks with except, numeric and
// named ports, endPort, every policyTypes form) all drawn from rng.
func genCluster(rng *rand.Rand) render.Inputs {
	in := render.Inputs{Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"}}}
	for _, ns := range []string{"x", "y"} {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{"team": pick(rng, "t1", "t2")}}})
	}
	for _, p := range genPods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, UID: types.UID("uid-" + p.ns + p.name),
				Labels: map[string]string{"app": pick(rng, "a", "b"), "role": pick(rng, "r1", "r2")}},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "i",
				Ports: []corev1.ContainerPort{
					{Name: "p-web", ContainerPort: int32(80 + rng.IntN(2)), Protocol: corev1.ProtocolTCP},
					{Name: "p-u", ContainerPort: int32(80 + rng.IntN(2)), Protocol: corev1.ProtocolUDP},
				}}}},
			Status: corev1.PodStatus{PodIP: p.ip},
		}
		if rng.IntN(4) == 0 {
			delete(pod.Labels, "role")
		}
		in.Pods = append(in.Pods, pod)
		in.Allocations = append(in.Allocations, &spec.Allocation{APIVersion: spec.APIVersion, Kind: spec.KindAllocation,
			Metadata: spec.ObjectMeta{Namespace: p.ns, Name: p.name},
			Spec:     spec.AllocationSpec{IP: p.ip, Netns: "/var/run/netns/gen-" + p.ns + p.name, ContainerID: "ctr-" + p.ns + p.name, IfName: "eth0"}})
	}
	for i := range 1 + rng.IntN(3) {
		in.Policies = append(in.Policies, genPolicy(rng, i))
	}
	return in
}

func pick(rng *rand.Rand, s ...string) string { return s[rng.IntN(len(s))] }

func genSelector(rng *rand.Rand) *metav1.LabelSelector {
	switch rng.IntN(5) {
	case 0:
		return &metav1.LabelSelector{}
	case 1, 2:
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": pick(rng, "a", "b")}}
	case 3:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "role", Operator: metav1.LabelSelectorOpExists}}}
	default:
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "role", Operator: metav1.LabelSelectorOperator(pick(rng, "In", "NotIn")), Values: []string{pick(rng, "r1", "r2")}}}}
	}
}

func genPeer(rng *rand.Rand) networkingv1.NetworkPolicyPeer {
	switch rng.IntN(4) {
	case 0:
		return networkingv1.NetworkPolicyPeer{PodSelector: genSelector(rng)}
	case 1:
		return networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": pick(rng, "t1", "t2")}}}
	case 2:
		return networkingv1.NetworkPolicyPeer{PodSelector: genSelector(rng), NamespaceSelector: genSelector(rng)}
	default:
		b := &networkingv1.IPBlock{CIDR: pick(rng, "198.18.0.0/24", "198.18.0.16/28", "198.18.0.8/29", "198.18.0.11/32", "0.0.0.0/0")}
		if rng.IntN(2) == 0 {
			b.Except = []string{pick(rng, "198.18.0.10/31", "198.18.0.20/32", "198.18.0.16/30")}
		}
		return networkingv1.NetworkPolicyPeer{IPBlock: b}
	}
}

func genPort(rng *rand.Rand) networkingv1.NetworkPolicyPort {
	var p networkingv1.NetworkPolicyPort
	switch rng.IntN(3) {
	case 0:
		tcp := corev1.ProtocolTCP
		p.Protocol = &tcp
	case 1:
		udp := corev1.ProtocolUDP
		p.Protocol = &udp
	}
	switch rng.IntN(5) {
	case 0:
	case 1:
		v := intstr.FromString(pick(rng, "p-web", "p-u", "nope"))
		p.Port = &v
	case 2:
		v, end := intstr.FromInt32(80), int32(81)
		p.Port, p.EndPort = &v, &end
	default:
		v := intstr.FromInt32(int32(80 + rng.IntN(2)))
		p.Port = &v
	}
	return p
}

func genPolicy(rng *rand.Rand, i int) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pick(rng, "x", "y"), Name: fmt.Sprintf("p%d", i)}}
	np.Spec.PodSelector = *genSelector(rng)
	switch rng.IntN(4) {
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	rule := func() ([]networkingv1.NetworkPolicyPeer, []networkingv1.NetworkPolicyPort) {
		var peers []networkingv1.NetworkPolicyPeer
		var ports []networkingv1.NetworkPolicyPort
		for range rng.IntN(3) {
			peers = append(peers, genPeer(rng))
		}
		for range rng.IntN(3) {
			ports = append(ports, genPort(rng))
		}
		return peers, ports
	}
	for range rng.IntN(3) {
		peers, ports := rule()
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers, Ports: ports})
	}
	for range rng.IntN(3) {
		peers, ports := rule()
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers, Ports: ports})
	}
	return np
}
