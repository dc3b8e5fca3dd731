package kindstest_test

import (
	"testing"
	"time"

	"github.com/terway-reconciler/terway/apply/addrs"
	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/neigh"
	"github.com/terway-reconciler/terway/apply/routes"
	"github.com/terway-reconciler/terway/apply/sysctl"
	"github.com/terway-reconciler/terway/apply/tc"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/spec"
)

// TestVPCDatapath applies the VPC document kind by kind, in the engine's
// order, and sends real traffic from one pod to another through the node:
// the document is not only self-consistent but a working datapath.
func TestVPCDatapath(t *testing.T) {
	e := kindstest.NewEnv(t, 2)
	doc := kindstest.VPC(e.Pods)
	if err := doc.Validate(); err != nil {
		t.Fatalf("VPC document is invalid: %v", err)
	}
	pods := []kindstest.Pod{kindstest.PodFor(0, e.Pods[0]), kindstest.PodFor(1, e.Pods[1])}
	kindstest.ApplyLinks(t, e, doc)
	kindstest.Kind[spec.Sysctl, spec.Sysctl]{Observe: sysctl.Observe, Diff: sysctl.Diff,
		Items: func(s *spec.NodeState) []spec.Sysctl { return s.Sysctls }}.Converge(t, e, doc)
	kindstest.Kind[spec.Address, spec.Address]{Observe: addrs.Observe, Diff: addrs.Diff,
		Items: func(s *spec.NodeState) []spec.Address { return s.Addresses }}.Converge(t, e, doc)
	kindstest.Kind[spec.Neighbor, spec.Neighbor]{Observe: neigh.Observe, Diff: neigh.Diff,
		Items: func(s *spec.NodeState) []spec.Neighbor { return s.Neighbors }}.Converge(t, e, doc)
	kindstest.Kind[spec.Route, spec.Route]{Observe: routes.Observe, Diff: routes.Diff,
		Items: func(s *spec.NodeState) []spec.Route { return s.Routes }}.Converge(t, e, doc)
	kindstest.Kind[spec.Qdisc, spec.Qdisc]{Observe: tc.Observe, Diff: tc.Diff,
		Items: func(s *spec.NodeState) []spec.Qdisc { return s.TC }}.Converge(t, e, doc)

	srv, err := traffic.Serve(pods[1].Netns, pods[1].IP+":8080", "tcp")
	if err != nil {
		t.Fatalf("serve in pod 1: %v", err)
	}
	t.Cleanup(srv.Close)
	if !traffic.Probe(pods[0].Netns, "tcp", pods[1].IP+":8080", 5*time.Second) {
		t.Errorf("%s cannot reach %s:8080 through the node", pods[0].Key, pods[1].IP)
	}
}
