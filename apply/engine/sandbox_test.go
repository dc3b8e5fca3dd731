package engine_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestSecondSandboxLeavesPodUntouched: a document that puts a second pod
// (another sandbox) into a namespace whose eth0 is another pod's, as a
// second ADD with another container id does, fails that pod alone and
// leaves the first pod's namespace byte-identical: no address, neighbour,
// route or link of the second pod lands on the first pod's eth0, in the
// ADD's scoped plan, in a full resync while both are in the document, or
// in the rollback. Two pods under one namespace path make the document
// invalid (duplicate keys: nothing is applied), so the second pod names the
// namespace by another path (a bind mount, as
// /proc/PID/ns/net and /var/run/netns/NAME are two paths of one
// namespace): only the engine can tell.
func TestSecondSandboxLeavesPodUntouched(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	shared := n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	n.addPod("x", "c", "198.18.0.12", nil, nil, "")
	n.apply(n.render())
	before := nstest.PodDump(t, shared)

	// x/b arrives with x/a's namespace, under another path.
	alias := shared + "-alias"
	if err := os.WriteFile(alias, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(alias) })
	if err := unix.Mount(shared, alias, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(alias, unix.MNT_DETACH) })
	n.in.Pods = append(n.in.Pods, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "b", UID: "uid-b"},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c"}}},
	})
	n.in.Allocations = append(n.in.Allocations, &spec.Allocation{
		Metadata: spec.ObjectMeta{Namespace: "x", Name: "b"},
		Spec:     spec.AllocationSpec{IP: "198.18.0.11", Netns: alias, ContainerID: "ctr-b"},
	})
	state := n.render()
	p, err := n.eng.Plan(context.Background(), state, engine.PlanOptions{Pods: []string{"x/b"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range p.Ops {
		if o.Pod == "x/b" && o.Netns == alias && !strings.Contains(o.Text, "refused") {
			t.Errorf("the scoped plan writes x/b's item into x/a's namespace: %s", o)
		}
	}
	checkTakenFrom(t, n, state)
	for name, opts := range map[string]engine.PlanOptions{
		"scoped ADD":  {Pods: []string{"x/b"}},
		"full resync": {Full: true},
	} {
		rep, err := n.eng.Apply(context.Background(), state, opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		} else if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "another sandbox") || !strings.Contains(err.Error(), "x/b") {
			t.Errorf("%s: %v, want x/b refused as another sandbox's", name, err)
		}
		for _, r := range rep.Results {
			if r.Err != nil && r.Op.Pod != "x/b" {
				t.Errorf("%s: %s failed: %v", name, r.Op, r.Err)
			}
		}
		if after := nstest.PodDump(t, shared); after != before {
			t.Fatalf("%s changed x/a's namespace:\n--- before\n%s--- after\n%s", name, before, after)
		}
	}

	// The rollback: x/b leaves the document, its scope is applied.
	n.removePod("x/b")
	state = n.render()
	rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/b"}, PodIPs: map[string]string{"x/b": "198.18.0.11"}})
	if err != nil || rep.Err() != nil {
		t.Fatalf("rollback: %v %v", err, rep.Err())
	}
	if after := nstest.PodDump(t, shared); after != before {
		t.Fatalf("the rollback changed x/a's namespace:\n--- before\n%s--- after\n%s", before, after)
	}
	n.requireEmptyPlan(state)
}

// TestLinkFailureStopsThePod: a plan made while the pod's namespace was
// empty, executed after someone else's eth0 appeared there (another
// sandbox racing the ADD): the pod's veth creation fails, and none of the
// pod's later operations (its address, gateway neighbour and default
// route, which name eth0) is attempted on the link that holds the name.
func TestLinkFailureStopsThePod(t *testing.T) {
	n := newNode(t, spec.PodModeVPC)
	netns := n.addPod("x", "a", "198.18.0.10", nil, nil, "")
	state := n.render()
	p, err := n.eng.Plan(context.Background(), state, engine.PlanOptions{Pods: []string{"x/a"}})
	if err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, netns, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
	nstest.Run(t, netns, "ip", "link", "set", "eth0", "up")
	before := nstest.PodDump(t, netns)
	rep := n.eng.Execute(context.Background(), p)
	if rep.Err() == nil {
		t.Fatal("the pod's plan succeeded although its eth0 name was taken")
	}
	var linkFailed, skipped int
	for _, r := range rep.Results {
		switch {
		case r.Op.Pod != "x/a" || r.Err == nil:
		case r.Op.Kind == "link":
			linkFailed++
		case strings.Contains(r.Err.Error(), "not attempted"):
			skipped++
		default:
			t.Errorf("%s was attempted after the pod's link failed: %v", r.Op, r.Err)
		}
	}
	if linkFailed != 1 || skipped == 0 {
		t.Errorf("link failures %d, skipped operations %d; want 1 and some", linkFailed, skipped)
	}
	if after := nstest.PodDump(t, netns); after != before {
		t.Fatalf("the failed ADD changed the other eth0's namespace:\n--- before\n%s--- after\n%s", before, after)
	}
}

// checkTakenFrom: the agent's resync plans nftables with the taken pods its
// kernel plan found (PlanOptions.TakenFrom): that plan equals one that
// reads the links itself, and it does use the list it is given.
func checkTakenFrom(t *testing.T, n *node, state *spec.NodeState) {
	t.Helper()
	ctx := context.Background()
	nftOnly := func(from *engine.Plan) []string {
		p, err := n.eng.Plan(ctx, state, engine.PlanOptions{Kinds: []string{nft.Kind}, TakenFrom: from})
		if err != nil {
			t.Fatal(err)
		}
		return p.Lines()
	}
	kernel, err := n.eng.Plan(ctx, state, engine.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	own, reused := nftOnly(nil), nftOnly(kernel)
	if !slices.Equal(own, reused) {
		t.Errorf("the nftables plan with the kernel plan's taken pods:\n%s\nwant, as it reads them itself:\n%s", strings.Join(reused, "\n"), strings.Join(own, "\n"))
	}
	if !slices.ContainsFunc(own, func(l string) bool { return strings.Contains(l, "refused, the name is another sandbox") }) {
		t.Errorf("the nftables plan does not refuse x/b:\n%s", strings.Join(own, "\n"))
	}
	if none := nftOnly(&engine.Plan{}); slices.Equal(none, own) {
		t.Errorf("the nftables plan given a plan that found nothing taken is the same as its own: TakenFrom is not used")
	}
}
