package engine_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestScopedPlanMatchesFullPlan: a plan scoped to one pod reads the host
// by that pod's links only (routes and neighbours filtered by link in the
// kernel, qdiscs only where the link list shows a TBF). Drift around the
// pod must still plan exactly as in a full plan, including a wanted route
// that sits on another pod's link (an IP reused before its old route was
// removed), which no link filter finds; drift around another pod is the
// full plan's alone.
func TestScopedPlanMatchesFullPlan(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "b", "198.18.0.11", nil, map[string]string{render.AnnotationAliyunIngress: "1m"}, "")
	n.addPod("x", "c", "198.18.0.12", nil, nil, "")
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	va, vb, vc := spec.HostVethName("x/a"), spec.HostVethName("x/b"), spec.HostVethName("x/c")

	// Drift around x/b: its route re-pointed at x/c's veth, a stray route
	// and a stray permanent neighbour of ours on its veth, its TBF changed.
	nstest.Run(t, n.host, "ip", "route", "replace", "198.18.0.11/32", "dev", vc, "scope", "link", "proto", "250")
	nstest.Run(t, n.host, "ip", "route", "add", "198.18.7.7/32", "dev", vb, "proto", "250")
	nstest.Run(t, n.host, "ip", "neigh", "add", "198.18.7.7", "lladdr", "02:00:00:00:07:07", "dev", vb, "nud", "permanent")
	nstest.Run(t, n.host, "tc", "qdisc", "replace", "dev", vb, "root", "handle", "1:", "tbf", "rate", "2mbit", "burst", "32kb", "limit", "64kb")

	full := withoutNFTCommit(n.plan(state).Lines())
	for _, want := range []string{"dev " + vc + " → " + vb, "- route 198.18.7.7/32 dev " + vb, "- neighbor 198.18.7.7", "~ qdisc tbf 1: dev " + vb} {
		if !slices.ContainsFunc(full, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("full plan has no line with %q:\n%s", want, strings.Join(full, "\n"))
		}
	}
	scoped := withoutNFTCommit(n.scopedPlan(state, "x/b").Lines())
	if got, want := strings.Join(scoped, "\n"), strings.Join(full, "\n"); got != want {
		t.Errorf("plan scoped to x/b differs from the full plan:\n--- scoped\n%s\n--- full\n%s", got, want)
	}

	// Drift around x/a: the full plan's, not x/b's.
	nstest.Run(t, n.host, "ip", "route", "add", "198.18.8.8/32", "dev", va, "proto", "250")
	nstest.Run(t, n.host, "ip", "neigh", "add", "198.18.8.8", "lladdr", "02:00:00:00:08:08", "dev", va, "nud", "permanent")
	if got := withoutNFTCommit(n.scopedPlan(state, "x/b").Lines()); !slices.Equal(got, scoped) {
		t.Errorf("drift around x/a changed the plan scoped to x/b:\n%s", strings.Join(got, "\n"))
	}
	if got := len(withoutNFTCommit(n.plan(state).Lines())); got != len(full)+2 {
		t.Errorf("full plan has %d lines after drift around x/a, want %d", got, len(full)+2)
	}

	// The scoped apply repairs x/b; the full plan then has x/a's drift only.
	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/b"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	for _, l := range withoutNFTCommit(n.plan(state).Lines()) {
		if !strings.Contains(l, va) && !strings.Contains(l, "198.18.8.8") {
			t.Errorf("after the scoped apply, the full plan still has %q", l)
		}
	}
}

// TestScopedApplySharedStrayKey: two stray routes of ours with one key (a
// metric apart), the first on another pod's veth and the second on the
// scoped pod's. The scoped apply deletes the one on its pod's veth, drift
// around its pod, and not the other pod's, which the kernel would find
// first by key: the deletion names the link. The full sync then deletes the
// other.
func TestScopedApplySharedStrayKey(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "b", "198.18.0.11", nil, nil, "")
	state := n.render()
	n.apply(state)
	va, vb := spec.HostVethName("x/a"), spec.HostVethName("x/b")
	nstest.Run(t, n.host, "ip", "route", "add", "198.18.7.9/32", "dev", va, "metric", "10", "proto", "250")
	nstest.Run(t, n.host, "ip", "route", "add", "198.18.7.9/32", "dev", vb, "metric", "20", "proto", "250")
	strays := func() string {
		return strings.TrimSpace(nstest.Run(t, n.host, "ip", "-o", "route", "show", "198.18.7.9/32", "proto", "250"))
	}

	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/b"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	if got := strays(); !strings.Contains(got, "dev "+va) || strings.Contains(got, "dev "+vb) {
		t.Fatalf("after the apply scoped to x/b, the stray routes are %q, want x/a's (%s) only", got, va)
	}
	n.apply(state)
	if got := strays(); got != "" {
		t.Fatalf("after a full apply, stray routes are left: %q", got)
	}
	n.requireEmptyPlan(state)
}

func (n *node) scopedPlan(s *spec.NodeState, pods ...string) *engine.Plan {
	n.t.Helper()
	p, err := n.eng.Plan(context.Background(), s, engine.PlanOptions{Pods: pods})
	if err != nil {
		n.t.Fatal(err)
	}
	return p
}

// withoutNFTCommit drops the nftables commit line, which names the sync
// mode (a full plan reads the table back, a scoped one trusts its record).
func withoutNFTCommit(lines []string) []string {
	return slices.DeleteFunc(lines, func(l string) bool { return strings.Contains(l, "nft commit") })
}

// TestScopedApplyBadInput: a scoped apply checks the scope's items and the
// nftables table. A bad item of the scoped pod, or a bad nftables element,
// refuses the apply with an error naming it, and nothing is written; a bad
// item of another pod does not hold the scoped pod back.
func TestScopedApplyBadInput(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "b", "198.18.0.11", nil, nil, "")
	n.apply(n.render())

	n.addPod("x", "c", "198.18.0.12", nil, nil, "")
	good := n.render()
	badRoute := func(s *spec.NodeState, pod string) *spec.NodeState {
		s = s.Clone()
		for i := range s.Routes {
			if s.Routes[i].Pod == pod {
				s.Routes[i].Dst = "198.18.0.300/32"
				return s
			}
		}
		t.Fatalf("no route of %s", pod)
		return nil
	}
	scoped := engine.PlanOptions{Pods: []string{"x/c"}}
	cases := []struct {
		name, want string
		doc        *spec.NodeState
	}{
		{"a bad route of the pod", "198.18.0.300/32", badRoute(good, "x/c")},
		// The pod's own element: a scoped plan writes only the pod's
		// elements of shared maps, so another pod's is the full sync's.
		{"a map element of the pod jumping nowhere", "chain \"nowhere\" does not exist", func() *spec.NodeState {
			s := good.Clone()
			var m *spec.NFTSet
			for i := len(s.NFTables.Sets) - 1; i >= 0 && m == nil; i-- {
				if s.NFTables.Sets[i].Verdict {
					m = s.NFTables.Sets[i]
				}
			}
			if m == nil {
				t.Fatal("the document has no verdict map")
			}
			m.Elements = slices.DeleteFunc(m.Elements, func(e spec.NFTElement) bool { return e.Key[0] == "198.18.0.12" })
			m.Elements = append(m.Elements, spec.NFTElement{Key: []string{"198.18.0.12"}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "nowhere"}})
			return s
		}()},
	}
	for _, c := range cases {
		rep, err := n.eng.Apply(context.Background(), c.doc, scoped)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming %q", c.name, err, c.want)
		}
		t.Logf("%s: %v", c.name, err)
		if rep.Writes != 0 || len(rep.Results) != 0 {
			t.Errorf("%s: the refused apply ran %d items (%d writes)", c.name, len(rep.Results), rep.Writes)
		}
	}
	if p := n.scopedPlan(good, "x/c"); p.Empty() {
		t.Fatal("x/c was set up by a refused apply")
	}

	// Another pod's bad route is not the scoped apply's to refuse.
	rep, err := n.eng.Apply(context.Background(), badRoute(good, "x/a"), scoped)
	if err != nil || rep.Err() != nil {
		t.Fatalf("apply scoped to x/c with a bad route of x/a: %v %v", err, rep.Err())
	}
	n.requireEmptyPlan(good)
}
