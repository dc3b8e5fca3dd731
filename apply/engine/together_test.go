package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// Pods removed together (a batch of DELs) have their veths deleted side by
// side (op.Op.Concurrent): each deletion's result is its own, a veth that
// cannot be deleted fails alone, and the others are gone, by netlink and
// by ip.
func TestVethsDeletedTogether(t *testing.T) {
	n := scaleNode(t, 8)
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)

	gone := []string{"x/p1", "x/p2", "x/p3", "x/p4", "x/p5"}
	for _, key := range gone {
		n.removePod(key)
	}
	state = n.render()
	opts := engine.PlanOptions{Pods: gone, PodIPs: map[string]string{}}
	for i, key := range gone {
		opts.PodIPs[key] = podIP(i + 1)
	}
	p, err := n.eng.Plan(context.Background(), state, opts)
	if err != nil {
		t.Fatal(err)
	}
	// Between the plan and its execution x/p5's host veth becomes a
	// bridge of the same name: not a veth, not ours to delete.
	stuck := spec.HostVethName("x/p5")
	nstest.Run(t, n.host, "ip", "link", "del", stuck)
	nstest.Run(t, n.host, "ip", "link", "add", stuck, "type", "bridge")
	t.Cleanup(func() { _, _ = nstest.Exec(n.host, "ip", "link", "del", stuck) })
	rep := n.eng.Execute(context.Background(), p)
	together := 0
	for _, r := range rep.Results {
		if r.Op.Kind != links.Kind || r.Op.Action != "-" {
			continue
		}
		together++
		if !r.Op.Concurrent {
			t.Errorf("%s: not marked to run beside the other deletions", r.Op)
		}
		switch {
		case strings.Contains(r.Op.Text, stuck):
			if r.Err == nil || !strings.Contains(r.Err.Error(), "not a veth") {
				t.Errorf("%s: err %v, want a refusal to delete a bridge", r.Op, r.Err)
			}
		case r.Err != nil:
			t.Errorf("%s: %v", r.Op, r.Err)
		}
	}
	if together != len(gone) {
		t.Errorf("%d link deletions, want %d:\n%v", together, len(gone), rep.Results)
	}
	out := nstest.Run(t, n.host, "ip", "-o", "link", "show")
	for _, key := range gone {
		veth := spec.HostVethName(key)
		present := strings.Contains(out, " "+veth+":") || strings.Contains(out, " "+veth+"@")
		if want := veth == stuck; present != want {
			t.Errorf("link %s present %v, want %v (ip -o link):\n%s", veth, present, want, out)
		}
	}
	for i := 6; i < 8; i++ {
		if veth := spec.HostVethName(fmt.Sprintf("x/p%d", i)); !strings.Contains(out, " "+veth+"@") {
			t.Errorf("x/p%d's veth %s is gone: only the removed pods' go", i, veth)
		}
	}
}

// A CNI ADD's scoped plan does not read the node's whole route table for
// its new veth's route, which cannot be there yet: a route of ours of its
// key left on another link (its address reused before the old route
// went) is replaced by the create, and a full plan afterwards finds
// nothing to do.
func TestAddReplacesOurStaleRouteOfItsKey(t *testing.T) {
	n := scaleNode(t, 4)
	state := n.render()
	n.apply(state)
	const ip = "198.18.3.10"
	other := spec.HostVethName("x/p2")
	nstest.Run(t, n.host, "ip", "route", "add", ip+"/32", "dev", other, "scope", "link", "proto", fmt.Sprint(spec.RouteProtocol))
	n.addPod("x", "new", ip, map[string]string{"app": "svc-1"}, nil, "")
	state = n.render()
	rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/new"}})
	if err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	out := nstest.Run(t, n.host, "ip", "route", "show", "table", "all", ip+"/32")
	if want := "dev " + spec.HostVethName("x/new"); strings.Count(out, ip) != 1 || !strings.Contains(out, want) {
		t.Errorf("routes of %s after the ADD, want one %s:\n%s", ip, want, out)
	}
	n.requireEmptyPlan(state)
}
