// Package synth generates deterministic synthetic clusters for benchmarks
// and the large golden case: namespaces, pods with labels and named ports,
// and NetworkPolicies of every common shape, all seeded so that the same
// parameters give the same objects.
package synth

import (
	"fmt"
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Params sizes a cluster.
type Params struct {
	LocalPods  int // pods on this node, with allocations
	RemotePods int // pods elsewhere, policy peers only
	Policies   int
	Namespaces int
	Seed       uint64
}

// NodeName is the synthetic node's name.
const NodeName = "node-1"

// Cluster returns render inputs for the parameters. Local pod IPs come from
// 198.18.0.0/16 (the node's podCIDR), remote ones from 198.19.0.0/16.
func Cluster(p Params) render.Inputs {
	if p.Namespaces == 0 {
		p.Namespaces = 10
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x7e57))
	in := render.Inputs{
		Node: &corev1.Node{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: NodeName},
			Spec:       corev1.NodeSpec{PodCIDR: "198.18.0.0/16"},
		},
	}
	for i := 0; i < p.Namespaces; i++ {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i),
				Labels: map[string]string{"team": fmt.Sprintf("team-%d", i%3), "env": []string{"prod", "dev"}[i%2]}},
		})
	}
	total := p.LocalPods + p.RemotePods
	for i := 0; i < total; i++ {
		local := i < p.LocalPods
		ns := fmt.Sprintf("ns-%d", i%p.Namespaces)
		name := fmt.Sprintf("pod-%d", i)
		ip := fmt.Sprintf("198.18.%d.%d", i/250, 2+i%250)
		node := NodeName
		if !local {
			ip = fmt.Sprintf("198.19.%d.%d", i/250, 2+i%250)
			node = "node-2"
		}
		pod := &corev1.Pod{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
				Labels: PodLabels(i, p.Namespaces)},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "main", Image: "app",
				Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: int32(8000 + i%4), Protocol: corev1.ProtocolTCP},
					{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
					{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
				},
			}}},
			Status: corev1.PodStatus{PodIP: ip},
		}
		if i%7 == 0 {
			pod.Annotations = map[string]string{render.AnnotationKubeIngress: fmt.Sprintf("%dM", 10+i%90)}
		}
		in.Pods = append(in.Pods, pod)
		if local {
			in.Allocations = append(in.Allocations, &spec.Allocation{
				APIVersion: spec.APIVersion, Kind: spec.KindAllocation,
				Metadata: spec.ObjectMeta{Namespace: ns, Name: name},
				Spec:     spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + ns + "-" + name, ContainerID: "ctr-" + name, IfName: "eth0"},
			})
		}
	}
	for i := 0; i < p.Policies; i++ {
		in.Policies = append(in.Policies, policy(rng, i, p.Namespaces))
	}
	return in
}

// PodLabels are the labels of the i-th synthetic pod, whose namespace is
// ns-<i mod namespaces>: the policies' selectors are written against them.
func PodLabels(i, namespaces int) map[string]string {
	return map[string]string{"app": fmt.Sprintf("app-%d", (i/namespaces)%20), "tier": []string{"web", "api", "db"}[(i/7)%3]}
}

func policy(rng *rand.Rand, i, namespaces int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	np := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", rng.IntN(namespaces)), Name: fmt.Sprintf("policy-%d", i)},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", rng.IntN(20))}},
		},
	}
	port := func(n int) *intstr.IntOrString { v := intstr.FromInt32(int32(n)); return &v }
	named := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	end := int32(8100)
	switch i % 6 {
	case 0: // same-namespace app peers on a numeric port
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "web"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8080)}},
		}}
	case 1: // namespaces by label, named port
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", rng.IntN(3))}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Port: named("http")}, {Port: named("metrics")}},
		}}
	case 2: // namespace AND pod selector with expressions, port range
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}},
				PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"api", "web"}}}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8000), EndPort: &end}},
		}}
	case 3: // ipBlock with except, any port
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: "198.19.0.0/16", Except: []string{fmt.Sprintf("198.19.%d.0/24", rng.IntN(4))}}}},
		}}
	case 4: // egress to DNS and to the app's own tier
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: port(53)}}},
			{To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "db"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: named("http")}}},
		}
	default: // default deny both ways
		np.Spec.PodSelector = metav1.LabelSelector{}
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	return np
}

// Objects returns the inputs' Kubernetes objects: the Node when node is
// set, then the namespaces, pods and policies.
func Objects(in render.Inputs, node bool) []runtime.Object {
	var objs []runtime.Object
	if node {
		objs = append(objs, in.Node)
	}
	for _, o := range in.Namespaces {
		objs = append(objs, o)
	}
	for _, o := range in.Pods {
		objs = append(objs, o)
	}
	for _, o := range in.Policies {
		objs = append(objs, o)
	}
	return objs
}

// Documents returns the inputs' objects as YAML documents: Objects, then
// the allocations.
func Documents(in render.Inputs, node bool) ([][]byte, error) {
	var objs []any
	for _, o := range Objects(in, node) {
		objs = append(objs, o)
	}
	for _, o := range in.Allocations {
		objs = append(objs, o)
	}
	docs := make([][]byte, 0, len(objs))
	for _, o := range objs {
		data, err := yaml.Marshal(o)
		if err != nil {
			return nil, err
		}
		docs = append(docs, data)
	}
	return docs, nil
}
