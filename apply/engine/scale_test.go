package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/spec"
)

// scaleNode makes a VPC node with n pods in namespace x, labelled app=svc-(i%10),
// and ten policies: svc-k admits pods labelled role=client on TCP 80. No
// pod has that label, so no pod is another pod's peer.
func scaleNode(t testing.TB, pods int) *node {
	n := newNode(t, spec.PodModeVPC)
	for i := 0; i < pods; i++ {
		n.addPod("x", fmt.Sprintf("p%d", i), podIP(i), map[string]string{"app": fmt.Sprintf("svc-%d", i%10)}, nil, "")
	}
	port := intstr.FromInt32(80)
	var nps []*networkingv1.NetworkPolicy
	for k := 0; k < 10; k++ {
		nps = append(nps, policy("x", fmt.Sprintf("svc-%d", k), networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("svc-%d", k)}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
			}},
		}))
	}
	n.setPolicies(nps...)
	return n
}

func podIP(i int) string { return fmt.Sprintf("198.18.%d.%d", i/200, 10+i%200) }

// ofPod tells whether an op's text names pod key (the i-th of scaleNode)
// by its address or by its host veth (the dispatch maps' key).
func ofPod(text, key string, i int) bool {
	return strings.Contains(text, podIP(i)) || strings.Contains(text, spec.HostVethName(key))
}

func TestRemovalAndLocalityAt250Pods(t *testing.T) {
	if testing.Short() {
		t.Skip("250 namespaces")
	}
	n := scaleNode(t, 250)
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)

	// Moving one pod to another policy group re-points its map entry and
	// nothing else.
	n.pod("x/p7").Labels["app"] = "svc-3"
	state = n.render()
	p := n.plan(state)
	for _, o := range p.Ops {
		if o.Kind != "nft" {
			t.Errorf("relabelling x/p7 plans a %s change: %s", o.Kind, o)
		}
		if o.Key != "commit" && !ofPod(o.Text, "x/p7", 7) && !strings.Contains(o.String(), "commit") {
			t.Errorf("relabelling x/p7 touches something not its own: %s", o)
		}
	}
	t.Logf("relabelling one pod of 250: %d operations:\n%s", len(p.Ops), p)
	if len(p.Ops) == 0 || len(p.Ops) > 4 {
		t.Errorf("relabelling one pod of 250 plans %d operations, want 1-4", len(p.Ops))
	}
	n.apply(state)
	n.requireEmptyPlan(state)

	// The CNI path: a new pod applied with a plan scoped to it gets all its
	// objects; a full plan afterwards finds nothing missing.
	n.addPod("x", "new", "198.18.3.10", map[string]string{"app": "svc-1"}, nil, "")
	state = n.render()
	rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/new"}})
	if err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	for _, r := range rep.Results {
		if r.Op.Pod != "x/new" && r.Op.Kind != "nft" {
			t.Errorf("scoped apply for x/new ran %s (pod %q)", r.Op, r.Op.Pod)
		}
	}
	n.requireEmptyPlan(state)

	// Removing one pod removes its objects and only them.
	n.removePod("x/p42")
	state = n.render()
	p = n.plan(state)
	for _, o := range p.Ops {
		switch {
		case o.Kind == "nft":
			if !ofPod(o.String(), "x/p42", 42) && !strings.Contains(o.String(), "commit") {
				t.Errorf("removing x/p42 plans an nft change not about it: %s", o)
			}
		case o.Action != "-" || !strings.Contains(o.Text, spec.HostVethName("x/p42")):
			// Deleted items are observed, not rendered, so they are known by
			// the pod's host veth (whose name derives from the pod).
			t.Errorf("removing x/p42 plans %s, not a deletion on its veth %s", o, spec.HostVethName("x/p42"))
		}
	}
	t.Logf("removing one pod of 250: %d operations:\n%s", len(p.Ops), p)
	scoped, err := n.eng.Plan(context.Background(), state, engine.PlanOptions{Pods: []string{"x/p42"}})
	if err != nil {
		t.Fatal(err)
	}
	// The two differ only in how nftables was read (partial or full sync).
	withoutCommit := func(lines []string) string {
		return strings.Join(slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "nft commit") }), "\n")
	}
	if got, want := withoutCommit(scoped.Lines()), withoutCommit(p.Lines()); got != want {
		t.Errorf("plan scoped to x/p42 differs from the full plan:\n--- scoped\n%s\n--- full\n%s", got, want)
	}
	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/p42"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	n.requireEmptyPlan(state)
}

// Benchmarks at scale. Each reports kernel writes per operation next to the
// time. Run: go test -run XXX -bench . -benchtime 3x ./apply/engine/
func BenchmarkApplyFromEmpty250(b *testing.B) {
	n := scaleNode(b, 250)
	state := n.render()
	empty := spec.New("node-1", spec.PodModeVPC)
	writes := 0
	for b.Loop() {
		rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Full: true})
		if err != nil || rep.Err() != nil {
			b.Fatal(err, rep.Err())
		}
		writes = rep.Writes
		b.StopTimer()
		if _, err := n.eng.Apply(context.Background(), empty, engine.PlanOptions{Full: true}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(writes), "writes/op")
}

func BenchmarkConvergedPlan250(b *testing.B) {
	n := scaleNode(b, 250)
	state := n.render()
	n.apply(state)
	for _, full := range []bool{true, false} {
		b.Run(fmt.Sprintf("full=%v", full), func(b *testing.B) {
			for b.Loop() {
				p, err := n.eng.Plan(context.Background(), state, engine.PlanOptions{Full: full})
				if err != nil || !p.Empty() {
					b.Fatalf("plan: %v, %d ops", err, len(p.Ops))
				}
			}
			b.ReportMetric(0, "writes/op")
		})
	}
}

func BenchmarkOnePodChange(b *testing.B) {
	for _, pods := range []int{10, 250} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			n := scaleNode(b, pods)
			state := n.render()
			n.apply(state)
			// Two documents that differ in one pod's policy group; the loop
			// applies them alternately (render is measured by render's own
			// benchmark).
			var states [2]*spec.NodeState
			for i, app := range []string{"svc-3", "svc-7"} {
				n.pod("x/p7").Labels["app"] = app
				states[i] = n.render()
			}
			writes, i := 0, 0
			for b.Loop() {
				state := states[i%2]
				i++
				rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/p7"}})
				if err != nil || rep.Err() != nil {
					b.Fatal(err, rep.Err())
				}
				writes = rep.Writes
			}
			b.ReportMetric(float64(writes), "writes/op")
		})
	}
}

// BenchmarkPodAdd measures the CNI path of a new pod: a plan scoped to it
// that creates its veth, addresses, routes, neighbours and map elements,
// on a node of 10 and of 250 pods. Each round deletes the pod again,
// untimed.
func BenchmarkPodAdd(b *testing.B) {
	for _, pods := range []int{10, 250} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			n := scaleNode(b, pods)
			without := n.render()
			n.apply(without)
			n.addPod("x", "new", "198.18.3.10", map[string]string{"app": "svc-1"}, nil, "")
			with := n.render()
			scope := engine.PlanOptions{Pods: []string{"x/new"}}
			writes := 0
			for b.Loop() {
				rep, err := n.eng.Apply(context.Background(), with, scope)
				if err != nil || rep.Err() != nil {
					b.Fatal(err, rep.Err())
				}
				writes = rep.Writes
				b.StopTimer()
				if rep, err := n.eng.Apply(context.Background(), without, scope); err != nil || rep.Err() != nil {
					b.Fatal(err, rep.Err())
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(writes), "writes/op")
		})
	}
}
