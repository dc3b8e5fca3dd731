package render

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// TestTwoAttachmentsInOneNamespace: two pods' allocations name one network
// namespace and interface (a second sandbox was given a path already in
// use, and recorded before the engine refused it). The first recorded
// keeps its network whatever the names; the other is left out of the
// document with a problem naming both; a third pod renders as ever; the
// document is valid (it used to fail validation, breaking every pod).
func TestTwoAttachmentsInOneNamespace(t *testing.T) {
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}
	}
	alloc := func(name, ip, netns string, seq uint64) *spec.Allocation {
		return &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: ip, Netns: netns, ContainerID: "ctr-" + name, IfName: "eth0", UID: "uid-" + name, Seq: seq}}
	}
	for _, tc := range []struct {
		what          string
		seqA, seqB    uint64
		winner, loser string
	}{
		{"b recorded first", 7, 3, "b", "a"},
		{"a recorded first", 3, 7, "a", "b"},
		{"records from before the order: the attachment key decides", 0, 0, "a", "b"},
	} {
		in := Inputs{
			Node:       nodeWithPodCIDR("198.18.0.0/24"),
			Namespaces: []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
			Pods:       []*corev1.Pod{pod("a"), pod("b"), pod("c")},
			Allocations: []*spec.Allocation{
				alloc("a", "198.18.0.10", "/var/run/netns/shared", tc.seqA),
				alloc("b", "198.18.0.11", "/var/run/netns/shared", tc.seqB),
				alloc("c", "198.18.0.12", "/var/run/netns/c", 1),
			},
		}
		state, err := Render(in)
		if err != nil {
			t.Fatalf("%s: render: %v", tc.what, err)
		}
		if err := state.Validate(); err != nil {
			t.Fatalf("%s: the document is invalid: %v", tc.what, err)
		}
		hasVeth := func(pod string) bool {
			for _, l := range state.Links {
				if l.Name == spec.HostVethName("x/"+pod) {
					return true
				}
			}
			return false
		}
		if !hasVeth(tc.winner) || !hasVeth("c") || hasVeth(tc.loser) {
			t.Errorf("%s: host veths of %s %v, c %v, %s %v; want the first two only", tc.what,
				tc.winner, hasVeth(tc.winner), hasVeth("c"), tc.loser, hasVeth(tc.loser))
		}
		found := false
		for _, p := range state.Problems {
			if p.Kind == "Pod" && p.Name == tc.loser && strings.Contains(p.Reason, "x/"+tc.winner) && strings.Contains(p.Reason, "/var/run/netns/shared") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no problem of pod x/%s naming x/%s and the namespace: %v", tc.what, tc.loser, tc.winner, state.Problems)
		}
	}
}
