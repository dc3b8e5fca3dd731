package engine

import (
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// TestScopeWritesNothingInAnotherPodsNamespace: a scoped plan for x/b,
// whose namespace is also x/a's (a second sandbox's ADD into it), keeps
// none of the operations in that namespace that are not x/b's own: x/a's
// exclusive ENI, which x/b's reduced document does not name, must not be
// sent back to the host. Operations of x/b, and node-level ones, stay.
func TestScopeWritesNothingInAnotherPodsNamespace(t *testing.T) {
	shared, own := "/var/run/netns/shared", "/var/run/netns/own"
	doc := &spec.NodeState{Pods: []*spec.Pod{
		{Key: "x/a", Netns: shared, IP: "198.18.0.10"},
		{Key: "x/b", Netns: shared, IP: "198.18.0.11"},
		{Key: "x/c", Netns: own, IP: "198.18.0.12"},
	}}
	s := newPodScope(doc, PlanOptions{Pods: []string{"x/b"}})
	ops := []op.Op{
		{Kind: "link", Action: op.Update, Netns: shared, Text: "link eni eth0 netns shared: not wanted here"},
		{Kind: "address", Action: op.Create, Netns: shared, Pod: "x/b", Text: "address of x/b"},
		{Kind: "sysctl", Action: op.Update, Netns: spec.HostNetns, Text: "node sysctl"},
		{Kind: "link", Action: op.Update, Netns: own, Text: "link in x/c's namespace"},
	}
	got := s.filter(ops)
	var texts []string
	for _, o := range got {
		texts = append(texts, o.Text)
	}
	want := []string{"address of x/b", "node sysctl"}
	if len(texts) != len(want) || texts[0] != want[0] || texts[1] != want[1] {
		t.Errorf("scoped to x/b, kept %q, want %q", texts, want)
	}
}

// TestScopedPlanRefusesANullPod: a scoped plan reads every pod entry to
// find its pods' part; a null entry (JSON's null in a document not made
// by the render) is refused with the error Validate gives, not a panic.
func TestScopedPlanRefusesANullPod(t *testing.T) {
	doc := &spec.NodeState{Pods: []*spec.Pod{{Key: "x/a", Netns: "/var/run/netns/a", IP: "198.18.0.10"}, nil}}
	_, err := prepare(doc, PlanOptions{Pods: []string{"x/a"}})
	if err == nil || !strings.Contains(err.Error(), "pods[1]: null where a pod belongs") {
		t.Fatalf("scoped plan of a document with a null pod: %v, want the null named", err)
	}
}
