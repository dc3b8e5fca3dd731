package render

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

func nodeWithPodCIDR(podCIDR string, podCIDRs ...string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: podCIDRs}}
}

// TestBadPodCIDRIsANodeProblem renders a node with no pods at all: a bad
// pod CIDR must be a problem of the Node right away, naming the field and
// the value, not only once a pod needs an address.
func TestBadPodCIDRIsANodeProblem(t *testing.T) {
	for _, tc := range []struct {
		podCIDR  string
		podCIDRs []string
		field    string
		reason   string
	}{
		{"300.1.0.0/24", nil, "spec.podCIDR", `"300.1.0.0/24" is not a CIDR`},
		{"10.0.0.0/33", nil, "spec.podCIDR", `"10.0.0.0/33" is not a CIDR`},
		{"10.0.0.5/0", nil, "spec.podCIDR", `"10.0.0.5/0" has host bits set`},
		{"10.0.0.5/24", nil, "spec.podCIDR", `"10.0.0.5/24" has host bits set`},
		{"10.0.0.0/4", nil, "spec.podCIDR", `"10.0.0.0/4" is a /4`},
		{"fd00::/64", nil, "spec.podCIDR", "IPv6"},
		{"", nil, "spec.podCIDR", "not set"},
		{"", []string{"198.18.0.0/24", "10.0.0.0/8"}, "spec.podCIDRs[1]", "same address family"},
	} {
		state, err := Render(Inputs{Node: nodeWithPodCIDR(tc.podCIDR, tc.podCIDRs...)})
		if err != nil {
			t.Fatalf("podCIDR %q %q: Render failed (a bad Node field must be a problem, not an error): %v", tc.podCIDR, tc.podCIDRs, err)
		}
		if len(state.Problems) != 1 {
			t.Errorf("podCIDR %q %q: problems %v, want one of the Node", tc.podCIDR, tc.podCIDRs, state.Problems)
			continue
		}
		p := state.Problems[0]
		if p.Kind != "Node" || p.Name != "n1" || p.Field != tc.field || !strings.Contains(p.Reason, tc.reason) {
			t.Errorf("podCIDR %q %q: problem %q, want Node n1: %s: ...%s...", tc.podCIDR, tc.podCIDRs, p, tc.field, tc.reason)
		}
	}
}

// TestBadPodCIDRLeavesOthersRendering: VPC pods need the pod CIDR and each
// says so; an exclusive-ENI pod, a remote pod, the ENI and the policy do
// not: the document is the one a good pod CIDR gives without the VPC pod.
func TestBadPodCIDRLeavesOthersRendering(t *testing.T) {
	in := func(node *corev1.Node, withVPCPod bool) Inputs {
		pod := func(name string, eni bool) *corev1.Pod {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"pod": name}},
				Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}
			if eni {
				p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{ExclusiveENIResource: resource.MustParse("1")}
			}
			return p
		}
		remote := pod("r", false)
		remote.Spec.NodeName, remote.Status.PodIP = "n2", "198.18.9.9"
		in := Inputs{
			Node:       node,
			Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
			Pods:       []*corev1.Pod{pod("e", true), remote},
			Allocations: []*spec.Allocation{
				{Metadata: spec.ObjectMeta{Namespace: "x", Name: "e"}, Spec: spec.AllocationSpec{IP: "198.18.66.10", Netns: "/var/run/netns/e", ContainerID: "ce", ENI: "eni-3"}},
			},
			ENIs: []spec.ENI{{Metadata: spec.ObjectMeta{Name: "eni-3"}, Spec: spec.ENISpec{MAC: "00:16:3e:00:00:03", PrimaryIP: "198.18.66.10",
				VSwitchCIDR: "198.18.66.0/24", Gateway: "198.18.66.253", DeviceIndex: 3, Exclusive: true}}},
			// Ingress from the remote pod only, to every pod of x.
			Policies: []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "from-r"},
				Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "r"}}}}}}}}},
		}
		if withVPCPod {
			in.Pods = append(in.Pods, pod("v", false))
			in.Allocations = append(in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: "v"},
				Spec: spec.AllocationSpec{IP: "198.18.0.10", Netns: "/var/run/netns/v", ContainerID: "cv"}})
		}
		return in
	}
	bad, err := Render(in(nodeWithPodCIDR("10.0.0.5/0"), true))
	if err != nil {
		t.Fatal(err)
	}
	var sawNode, sawPod bool
	for _, p := range bad.Problems {
		sawNode = sawNode || p.Kind == "Node" && p.Field == "spec.podCIDR"
		sawPod = sawPod || p.Kind == "Pod" && p.Name == "v" && strings.Contains(p.Reason, "no usable pod CIDR")
	}
	if !sawNode || !sawPod {
		t.Errorf("problems %v: want the Node's and pod x/v's pointing at it", bad.Problems)
	}
	want, err := Render(in(nodeWithPodCIDR("198.18.0.0/24"), false))
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Pods) != 1 || len(want.NFTables.Sets) == 0 {
		t.Fatalf("the reference renders pods %v and sets %v; the test wants the exclusive-ENI pod and a policy set", want.Pods, want.NFTables.Sets)
	}
	bad.Problems, want.Problems = nil, nil
	badYAML, _ := bad.MarshalYAML()
	wantYAML, _ := want.MarshalYAML()
	if string(badYAML) != string(wantYAML) {
		t.Errorf("with a bad podCIDR the document is\n%s\nwant (a good podCIDR, no VPC pod)\n%s", badYAML, wantYAML)
	}
}

// TestPodCIDRUncheckedInENIMode: ENI multi-IP mode does not use the pod
// CIDR, so an absent or odd one is no problem there.
func TestPodCIDRUncheckedInENIMode(t *testing.T) {
	for _, c := range []string{"", "300.1.0.0/24"} {
		state, err := Render(Inputs{Config: Config{Mode: spec.PodModeENIMultiIP}, Node: nodeWithPodCIDR(c)})
		if err != nil || len(state.Problems) != 0 {
			t.Errorf("ENI mode, podCIDR %q: %v, problems %v; want none", c, err, state.Problems)
		}
	}
}

// TestHostBitsPodCIDRKeepsPods: a pod CIDR with host bits set (the API
// server accepts 198.18.0.5/24) is the Node's problem, but its network
// serves: the VPC pod renders as under 198.18.0.0/24, nothing is lost.
func TestHostBitsPodCIDRKeepsPods(t *testing.T) {
	in := func(cidr string) Inputs {
		return Inputs{
			Node:       nodeWithPodCIDR(cidr),
			Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
			Pods: []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "v", UID: "uid-v"},
				Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}},
			Allocations: []*spec.Allocation{{Metadata: spec.ObjectMeta{Namespace: "x", Name: "v"},
				Spec: spec.AllocationSpec{IP: "198.18.0.10", Netns: "/var/run/netns/v", ContainerID: "cv"}}},
		}
	}
	got, err := Render(in("198.18.0.5/24"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Problems) != 1 || got.Problems[0].Kind != "Node" || !strings.Contains(got.Problems[0].Reason, "host bits set") {
		t.Errorf("problems %v: want the Node's host-bits problem alone", got.Problems)
	}
	want, err := Render(in("198.18.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	got.Problems = nil
	gotYAML, _ := got.MarshalYAML()
	wantYAML, _ := want.MarshalYAML()
	if len(want.Pods) != 1 || string(gotYAML) != string(wantYAML) {
		t.Errorf("with host bits the document is\n%s\nwant the one of the network\n%s", gotYAML, wantYAML)
	}
}
