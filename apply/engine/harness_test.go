package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// node is a simulated node for engine tests: a node namespace with no
// uplink, pod namespaces behind it, and the render inputs that describe them.
type node struct {
	t    testing.TB
	host string // the node namespace's path
	reg  *netns.Registry
	eng  *engine.Engine
	in   render.Inputs
	ns   map[string]string // pod key -> netns path
}

const nodeIP = "198.19.0.1"

func newNode(t testing.TB, mode string) *node {
	t.Helper()
	host := nstest.Netns(t, "node")
	// The node's own address, for pod-to-node traffic (lo: no uplink).
	nstest.Run(t, host, "ip", "addr", "add", nodeIP+"/32", "dev", "lo")
	reg := netns.NewRegistry(host)
	t.Cleanup(reg.Close)
	n := &node{t: t, host: host, reg: reg, eng: engine.New(reg), ns: map[string]string{}}
	n.in = render.Inputs{
		Config: render.Config{Mode: mode, MinPoolSize: 0, MaxPoolSize: 100},
		Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/22"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}}},
	}
	return n
}

// addPod creates the pod's namespace and adds the pod, its allocation and
// (if missing) its Namespace object to the inputs.
func (n *node) addPod(namespace, name, ip string, labels, annotations map[string]string, eni string) string {
	n.t.Helper()
	path := nstest.Netns(n.t, fmt.Sprintf("%s-%s", namespace, name))
	key := namespace + "/" + name
	n.ns[key] = path
	n.in.Pods = append(n.in.Pods, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name), Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 80}, {Name: "alt", ContainerPort: 81}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}},
	})
	n.in.Allocations = append(n.in.Allocations, &spec.Allocation{
		Metadata: spec.ObjectMeta{Namespace: namespace, Name: name},
		Spec:     spec.AllocationSpec{IP: ip, Netns: path, ContainerID: "ctr-" + name, ENI: eni},
	})
	found := false
	for _, ns := range n.in.Namespaces {
		found = found || ns.Name == namespace
	}
	if !found {
		n.in.Namespaces = append(n.in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{"ns": namespace}}})
	}
	return path
}

// removePod drops the pod from the inputs (its namespace stays until cleanup).
func (n *node) removePod(key string) {
	ns, name, _ := strings.Cut(key, "/")
	var pods []*corev1.Pod
	for _, p := range n.in.Pods {
		if p.Namespace != ns || p.Name != name {
			pods = append(pods, p)
		}
	}
	n.in.Pods = pods
	var allocs []*spec.Allocation
	for _, a := range n.in.Allocations {
		if a.Metadata.Namespace != ns || a.Metadata.Name != name {
			allocs = append(allocs, a)
		}
	}
	n.in.Allocations = allocs
}

func (n *node) pod(key string) *corev1.Pod {
	for _, p := range n.in.Pods {
		if p.Namespace+"/"+p.Name == key {
			return p
		}
	}
	n.t.Fatalf("no pod %s", key)
	return nil
}

func (n *node) setPolicies(nps ...*networkingv1.NetworkPolicy) { n.in.Policies = nps }

// render renders the inputs and fails on problems (the tests feed only
// valid objects unless they say otherwise).
func (n *node) render() *spec.NodeState {
	n.t.Helper()
	s, err := render.Render(n.in)
	if err != nil {
		n.t.Fatal(err)
	}
	if len(s.Problems) > 0 {
		n.t.Fatalf("render problems: %v", s.Problems)
	}
	return s
}

func (n *node) plan(s *spec.NodeState) *engine.Plan {
	n.t.Helper()
	p, err := n.eng.Plan(context.Background(), s, engine.PlanOptions{Full: true})
	if err != nil {
		n.t.Fatal(err)
	}
	return p
}

// apply converges and fails the test on any failed item.
func (n *node) apply(s *spec.NodeState) *engine.Report {
	n.t.Helper()
	rep, err := n.eng.Apply(context.Background(), s, engine.PlanOptions{Full: true})
	if err != nil {
		n.t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		n.t.Fatalf("apply failed: %v", err)
	}
	return rep
}

// requireEmptyPlan fails unless the node is converged.
func (n *node) requireEmptyPlan(s *spec.NodeState) {
	n.t.Helper()
	if p := n.plan(s); !p.Empty() {
		n.t.Fatalf("plan not empty after apply:\n%s", p)
	}
}

func policy(ns, name string, spec networkingv1.NetworkPolicySpec) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}
