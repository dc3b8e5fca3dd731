package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestPlanOfflineConverged: a document planned offline against itself
// changes nothing, for every golden document (every mode, policy,
// bandwidth, exclusive ENIs with their own tables).
func TestPlanOfflineConverged(t *testing.T) {
	docs, err := filepath.Glob("../../golden/*/nodestate.yaml")
	if err != nil || len(docs) == 0 {
		t.Fatalf("golden documents: %v %v", docs, err)
	}
	for _, path := range docs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := spec.Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p, err := engine.PlanOffline(d, d)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if !p.Empty() {
			t.Errorf("%s: offline plan against itself:\n%s", path, p)
		}
	}
}

// TestPlanOfflineIsTheEnginesPlan: on a node that realised one document,
// the offline plan of a changed document against it is, line for line,
// the plan the engine makes by reading the node: a policy added, a pod
// deleted, one added, a label and a bandwidth changed. And it executes
// nothing.
func TestPlanOfflineIsTheEnginesPlan(t *testing.T) {
	nstest.RequireRoot(t)
	n := newNode(t, spec.PodModeVPC)
	n.addPod("a", "web", "198.18.0.10", map[string]string{"app": "web"}, nil, "")
	n.addPod("a", "db", "198.18.0.11", map[string]string{"app": "db"}, map[string]string{"kubernetes.io/ingress-bandwidth": "10M"}, "")
	n.addPod("b", "client", "198.18.0.12", map[string]string{"app": "client"}, nil, "")
	n.setPolicies(policy("a", "web-open", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
	}))
	before := n.render()
	n.apply(before)
	n.requireEmptyPlan(before)

	n.removePod("b/client")
	n.addPod("b", "other", "198.18.0.13", map[string]string{"app": "client"}, nil, "")
	n.pod("a/web").Labels = map[string]string{"app": "web", "tier": "front"}
	n.pod("a/db").Annotations = map[string]string{"kubernetes.io/ingress-bandwidth": "20M"}
	n.setPolicies(n.in.Policies[0], policy("a", "db-from-web", networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "front"}}}}}},
	}))
	after := n.render()

	offline, err := engine.PlanOffline(before, after)
	if err != nil {
		t.Fatal(err)
	}
	live := n.plan(after)
	want := strings.ReplaceAll(live.String(), ", full sync)", ", offline sync)")
	if offline.String() != want {
		t.Errorf("offline plan:\n%s\nthe engine's plan of the node:\n%s", offline, live)
	}
	counts := offline.Counts()
	for _, kind := range []string{"link", "route", "qdisc", "nft"} {
		if counts[kind] == 0 {
			t.Errorf("offline plan has no %s operation: %v\n%s", kind, counts, offline)
		}
	}
	t.Logf("%d operations, the same as the engine's: %v", len(offline.Ops), counts)
	rep := n.eng.Execute(t.Context(), offline)
	if rep.Writes != 0 || rep.Err() == nil {
		t.Errorf("executing an offline plan: %d writes, error %v; want none and an error", rep.Writes, rep.Err())
	}
	// The node still has the document it had.
	n.requireEmptyPlan(before)
}
