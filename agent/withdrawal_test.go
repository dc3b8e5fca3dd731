package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// waitWithdrawn waits until no pod departs (withdrawal.go): the
// withdrawal loop took every deleted pod's address out of the peer sets
// and read that back.
func (a *Agent) waitWithdrawn(tb testing.TB) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		keys, _ := a.departing.oldest()
		if len(keys) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("pods still departing after 30 s: %v", keys)
		}
	}
}

// withdraw runs the withdrawal loop's step by hand, for every pod
// departing.
func (n *admissionNode) withdraw() error {
	keys, _ := n.a.departing.oldest()
	return n.a.withdrawStep(nil, keys)
}

// pendingWithdrawal returns what a full nftables plan of the document
// with no pod departing would still write: the withdrawals' part. The
// withdrawal loop must be stopped.
func (n *admissionNode) pendingWithdrawal() []string {
	n.t.Helper()
	keys, _ := n.a.departing.oldest()
	taken := n.a.departing.take(keys)
	st, _, err := n.a.renderSettled()
	n.a.departing.restore(taken)
	return n.nftPlanOf(st, err)
}

// TestDelLeavesItsAddressToTheWithdrawal: the DEL of an admitted pod takes
// down the pod's own part (its veth, its source entry) and leaves its
// address in the server's peer set, which is all a full plan of the node
// without it would still change; the address is given to no pod
// meanwhile, and a resync keeps it. The withdrawal takes it out, after
// which the address is free, and the pod given it is held back, not
// admitted by the server's policy as the deleted pod was. The loops are
// stopped: each step is run by hand.
func TestDelLeavesItsAddressToTheWithdrawal(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	ctx := context.Background()

	n.add("p1", "peer")
	if err := n.admit(); err != nil || !n.admitted("p1") {
		t.Fatalf("admitting p1: %v, admitted %v", err, n.admitted("p1"))
	}
	ip1 := n.ips["p1"]
	if err := a.Del(ctx, n.req(wire.CmdDel, "p1")); err != nil {
		t.Fatal(err)
	}
	if keys, _ := a.departing.oldest(); !slices.Equal(keys, []string{"x/p1"}) {
		t.Fatalf("after DEL p1, departing: %v; want x/p1", keys)
	}
	if !n.admitted("p1") {
		t.Error("after DEL p1, its address left the server's peer set before the withdrawal")
	}
	if out := nstest.Run(t, n.node, "nft", "list", "set", "inet", "terway", "pod-sources"); strings.Contains(out, ip1) {
		t.Errorf("after DEL p1, its source entry is still there:\n%s", out)
	}
	if _, err := nstest.Exec(n.node, "ip", "link", "show", spec.HostVethName("x/p1")); err == nil {
		t.Error("after DEL p1, its host veth is still there")
	}
	want := []string{"- nft element " + n.server + " { " + ip1 + " . tcp . 80 }"}
	if got := n.pendingWithdrawal(); !slices.Equal(got, want) {
		t.Errorf("p1 departing: the node differs in %q; want only its withdrawal %q", got, want)
	}
	for _, full := range []bool{false, true} {
		if out := a.sync(ctx, full); out.Again || !n.admitted("p1") {
			t.Errorf("a resync (full %v) while p1 departs: %+v, its address in the server's set %v; want it kept", full, out, n.admitted("p1"))
		}
	}
	// The allocator gives the lowest free address: p1's, were it free.
	n.add("p2", "peer")
	if n.ips["p2"] == ip1 {
		t.Errorf("p2 got p1's address %s while it is still in the server's peer set", ip1)
	}

	if err := n.withdraw(); err != nil {
		t.Fatal(err)
	}
	if _, err := nstest.Exec(n.node, "nft", "get", "element", "inet", "terway", n.server, "{", ip1+" . tcp . 80", "}"); err == nil {
		t.Error("after the withdrawal, p1's address is still in the server's peer set")
	}
	if keys, _ := a.departing.oldest(); len(keys) != 0 || n.a.observed(t, "terway_peer_withdrawal_seconds", "") != 1 {
		t.Errorf("after the withdrawal: departing %v, withdrawals observed %d; want none, 1", keys, n.a.observed(t, "terway_peer_withdrawal_seconds", ""))
	}
	if got := n.pendingWithdrawal(); len(got) != 0 {
		t.Errorf("after the withdrawal, a full plan still has %q", got)
	}
	n.add("p3", "peer")
	if n.ips["p3"] != ip1 {
		t.Errorf("p3 got %s; want p1's address %s, free again", n.ips["p3"], ip1)
	}
	if n.admitted("p3") || n.reaches("p3") {
		t.Errorf("p3, given p1's address, is admitted before its own admission (set %v, connects %v)", n.admitted("p3"), n.reaches("p3"))
	}
}

// TestWithdrawalLoopWithdraws: with the loops running, a deleted pod's
// address leaves the server's peer set soon after its DEL, without a
// resync.
func TestWithdrawalLoopWithdraws(t *testing.T) {
	n := newAdmissionNode(t, nil)
	n.add("p1", "peer")
	n.a.waitAdmitted(t)
	if !n.admitted("p1") {
		t.Fatal("p1 not admitted")
	}
	if err := n.a.Del(context.Background(), n.req(wire.CmdDel, "p1")); err != nil {
		t.Fatal(err)
	}
	// The loop waits for 100 ms without a CNI request: p1 departs still.
	if !n.a.departing.has("x/p1") {
		t.Fatal("p1 does not depart after its DEL")
	}
	n.a.waitWithdrawn(t)
	if n.admitted("p1") {
		t.Error("after the withdrawal loop, p1's address is still in the server's peer set")
	}
}

// TestWithdrawalWaitsForAResyncCommit: a resync that planned while p1
// departed writes p1's address into a group new to the record (a second
// policy selects the server), which the withdrawal's scoped plan leaves
// to it. Its commit runs outside the agent's lock, held here just before
// it; a withdrawal step meanwhile must not free the address: it waits for
// the commit and writes once more, taking the address out of the new
// group too.
func TestWithdrawalWaitsForAResyncCommit(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	ctx := context.Background()
	n.add("p1", "peer")
	if err := n.admit(); err != nil {
		t.Fatal(err)
	}
	ip1 := n.ips["p1"]
	if err := a.Del(ctx, n.req(wire.CmdDel, "p1")); err != nil {
		t.Fatal(err)
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(81)
	n.src.mu.Lock()
	n.src.policies = append(slices.Clone(n.src.policies), &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "from-peers-81", UID: "from-peers-81"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "peer"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
		},
	})
	n.src.mu.Unlock()

	reached, resume := make(chan struct{}), make(chan struct{})
	a.committing = func() { close(reached); <-resume }
	synced := make(chan runOutcome)
	go func() { synced <- a.sync(ctx, false) }()
	<-reached
	a.committing = nil
	stepped := make(chan error)
	go func() { stepped <- n.withdraw() }()
	select {
	case err := <-stepped:
		t.Fatalf("the withdrawal step ended while the resync's commit was under way: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(resume)
	<-synced
	if err := <-stepped; err != nil {
		t.Fatalf("the withdrawal step across the resync's commit: %v", err)
	}
	if a.departing.has("x/p1") {
		t.Error("p1 still departs after the withdrawal step")
	}
	if got := a.observed(t, "terway_peer_withdrawal_step_seconds", "apply"); got != 2 {
		t.Errorf("the step wrote %d times; want 2: once, and once more after the resync's commit", got)
	}
	if table := nstest.Run(t, n.node, "nft", "list", "table", "inet", "terway"); strings.Contains(table, ip1+" ") {
		t.Errorf("after the withdrawal, p1's address %s is still in the table (the resync's commit put it in the new group):\n%s", ip1, table)
	}
}

// TestWithdrawalScopeTakesPodTables: the tables in exclusive-ENI pods'
// namespaces hold copies of their groups' peer sets, so a withdrawal
// plans them as well as the departed pods.
func TestWithdrawalScopeTakesPodTables(t *testing.T) {
	state := &spec.NodeState{PodNFTables: []spec.PodNFTable{{Pod: "x/e1"}, {Pod: "x/gone"}, {Pod: "x/e2"}}}
	taken := map[string]departed{"x/gone": {alloc: spec.Allocation{Spec: spec.AllocationSpec{IP: "198.18.0.9"}}}}
	opts := withdrawalScope(state, taken)
	if want := []string{"x/gone", "x/e1", "x/e2"}; !slices.Equal(opts.Pods, want) {
		t.Errorf("scope's pods %v, want %v", opts.Pods, want)
	}
	if len(opts.PodIPs) != 1 || opts.PodIPs["x/gone"] != "198.18.0.9" || !slices.Equal(opts.Kinds, []string{nft.Kind}) {
		t.Errorf("scope %+v: want x/gone's address, nftables only", opts)
	}
}
