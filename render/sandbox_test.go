package render

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// TestTwoPodsInOneNamespace: the store holds two attachments into one
// network namespace and interface (a second sandbox's ADD recorded, the
// agent killed before rolling it back). The first pod in key order keeps
// the interface; the other is its own problem, and the document stays
// valid, so the node's resyncs go on.
func TestTwoPodsInOneNamespace(t *testing.T) {
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}
	}
	alloc := func(name, ip string) spec.Allocation {
		return spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/shared", ContainerID: "c-" + name}}
	}
	state, err := Render(Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{pod("b"), pod("a")},
		Allocations: []spec.Allocation{alloc("b", "198.18.0.11"), alloc("a", "198.18.0.10")},
	})
	if err != nil {
		t.Fatalf("Render: %v (one pod's conflict must be its problem, not the node's)", err)
	}
	if err := state.Validate(); err != nil {
		t.Fatalf("the document is invalid: %v", err)
	}
	if len(state.Pods) != 1 || state.Pods[0].Key != "x/a" || state.Pods[0].IP != "198.18.0.10" {
		t.Errorf("pods %+v: want x/a alone, with 198.18.0.10", state.Pods)
	}
	var found bool
	for _, p := range state.Problems {
		if p.Kind == "Pod" && p.Name == "b" && p.Field == "allocation.spec.netns" && strings.Contains(p.Reason, "already holds pod x/a's eth0") {
			found = true
		}
	}
	if !found {
		t.Errorf("problems %v: want x/b's naming x/a's eth0", state.Problems)
	}
}
