package render

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/spec"
)

// TestExclusiveENIPodTable: an exclusive-ENI pod gets table inet terway in
// its namespace whether or not a policy selects it; when one does, the
// pod's base chain jumps to the very group chain the node's table uses for
// it, copied with its sets, the pod stays in the node's map (for veth1),
// and no problem says policy is not enforced.
func TestExclusiveENIPodTable(t *testing.T) {
	e := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "e", UID: "uid-e", Labels: map[string]string{"pod": "e"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{ExclusiveENIResource: resource.MustParse("1")}}}}}}
	remote := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "r", Labels: map[string]string{"pod": "r"}},
		Spec: corev1.PodSpec{NodeName: "n2"}, Status: corev1.PodStatus{PodIP: "198.18.9.9"}}
	in := Inputs{
		Node:       nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:       []*corev1.Pod{e, remote},
		Allocations: []*spec.Allocation{{Metadata: spec.ObjectMeta{Namespace: "x", Name: "e"},
			Spec: spec.AllocationSpec{IP: "198.18.66.10", Netns: "/var/run/netns/e", ContainerID: "ce", ENI: "eni-3"}}},
		ENIs: []spec.ENI{{Metadata: spec.ObjectMeta{Name: "eni-3"}, Spec: spec.ENISpec{MAC: "00:16:3e:00:00:03", PrimaryIP: "198.18.66.10",
			VSwitchCIDR: "198.18.66.0/24", Gateway: "198.18.66.253", DeviceIndex: 3, Exclusive: true}}},
	}
	table := func(s *spec.NodeState) *spec.NFTable {
		t.Helper()
		if len(s.PodNFTables) != 1 || s.PodNFTables[0].Pod != "x/e" || s.PodNFTables[0].Netns != "/var/run/netns/e" {
			t.Fatalf("pod tables %+v, want one, x/e's in /var/run/netns/e", s.PodNFTables)
		}
		return &s.PodNFTables[0].Table
	}
	jumps := func(c *spec.NFTChain) []string {
		var out []string
		for _, r := range c.Rules {
			if r.Verdict.Kind == spec.VerdictJump {
				out = append(out, r.Verdict.Chain)
			}
		}
		return out
	}

	plain, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	pt := table(plain)
	if j := append(jumps(pt.Chain(chainPodInput)), jumps(pt.Chain(chainPodOutput))...); len(j) != 0 || len(pt.Sets) != 0 {
		t.Errorf("with no policy, x/e's table jumps to %v and has sets %v; want neither", j, pt.Sets)
	}

	in.Policies = []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "e-from-r"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "e"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "r"}}}}}}}}}
	s, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Problems {
		if strings.Contains(p.Reason, "not enforced") {
			t.Errorf("problem %s", p)
		}
	}
	chain := s.Pods[0].IngressChain
	if chain == "" || s.Pods[0].EgressChain != "" {
		t.Fatalf("x/e's chains: ingress %q egress %q; want an ingress chain only", chain, s.Pods[0].EgressChain)
	}
	pt = table(s)
	if got := jumps(pt.Chain(chainPodInput)); !reflect.DeepEqual(got, []string{chain}) {
		t.Errorf("x/e's input chain jumps to %v, want [%s]", got, chain)
	}
	if got := jumps(pt.Chain(chainPodOutput)); len(got) != 0 {
		t.Errorf("x/e's output chain jumps to %v; it is not isolated for egress", got)
	}
	if !reflect.DeepEqual(pt.Chain(chain), s.NFTables.Chain(chain)) {
		t.Errorf("x/e's group chain differs from the node's:\n%+v\n%+v", pt.Chain(chain), s.NFTables.Chain(chain))
	}
	for _, name := range []string{chain + "-ports", chain + "-all"} {
		if pt.Set(name) == nil || !reflect.DeepEqual(pt.Set(name), s.NFTables.Set(name)) {
			t.Errorf("x/e's set %s differs from the node's:\n%+v\n%+v", name, pt.Set(name), s.NFTables.Set(name))
		}
	}
	if all := s.NFTables.Set(chain + "-all"); len(all.Elements) != 1 || all.Elements[0].Key[0] != "198.18.9.9" {
		t.Errorf("set %s-all has %v, want the remote pod's address", chain, all.Elements)
	}
	m := s.NFTables.Set(mapIngressPods)
	if len(m.Elements) != 1 || m.Elements[0].Key[0] != spec.HostVethName("x/e") || m.Elements[0].Verdict.Chain != chain {
		t.Errorf("the node's ingress map is %v; want x/e's host veth jumping to %s (traffic by veth1)", m.Elements, chain)
	}
}
