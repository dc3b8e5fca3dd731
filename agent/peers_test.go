package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
)

// TestAdjacentPeersNeedNoResync: a pod's ADD and its admission
// (admission.go) put its address in the peer sets of the policies that
// admit it, and its DEL and withdrawal (withdrawal.go) take it out, by
// themselves, also when the pod's address is next to another admitted
// pod's. Render used to merge neighbouring addresses into one range, which
// a CNI request's scoped plan does not touch (it is not the pod's own
// element): the new pod was refused until the next resync, and a deleted
// pod's address stayed admitted, ready for the next pod to get it. No
// resync runs here: after every ADD and DEL the kernel is read back with
// nft(8) and planned against in full. Both shapes of a group's peers: on
// every port (the group's one-field interval set CHAIN-all) and on one port
// (its concatenated set CHAIN-ports).
func TestAdjacentPeersNeedNoResync(t *testing.T) {
	nstest.RequireRoot(t)
	t.Run("every port", func(t *testing.T) { adjacentPeers(t, nil) })
	t.Run("port 80", func(t *testing.T) {
		tcp, port := corev1.ProtocolTCP, intstr.FromInt32(80)
		adjacentPeers(t, []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}})
	})
}

func adjacentPeers(t *testing.T, ports []networkingv1.NetworkPolicyPort) {
	a, src, node := podSourceAgent(t, "198.18.0.0/24", "198.19.255.1")
	src.policies = []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "from-peers", UID: "from-peers"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "peer"}}}}, Ports: ports}},
		},
	}}
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v", out)
	}
	netns := map[string]string{}
	req := func(cmd wire.Command, name string) *wire.Request {
		return &wire.Request{Command: cmd, ContainerID: "ctr-" + name, Netns: netns[name], IfName: "eth0",
			Args: wire.PodArgs{Namespace: "x", Name: name, UID: "uid-" + name}}
	}
	ips := map[string]string{}
	var peerSet string
	// admitted tells whether the kernel's peer set matches ip, as nft(8)
	// looks an address up in an interval set.
	admitted := func(ip string) bool {
		key := ip
		if ports != nil {
			key += " . tcp . 80"
		}
		_, err := nstest.Exec(node, "nft", "get", "element", "inet", "terway", peerSet, "{", key, "}")
		return err == nil
	}
	converged := func(after string) {
		t.Helper()
		st, _, err := a.renderSettled()
		if err != nil {
			t.Fatal(err)
		}
		p, err := a.eng.Plan(ctx, st, engine.PlanOptions{Kinds: []string{nft.Kind}, Full: true})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Empty() {
			t.Errorf("after %s, the kernel is not the document; a full plan:\n%s", after, p.String())
		}
	}
	add := func(name, app string) {
		t.Helper()
		src.mu.Lock()
		src.pods["x/"+name] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": app}}, Spec: corev1.PodSpec{NodeName: "node-1"}}
		src.mu.Unlock()
		netns[name] = nstest.Netns(t, name)
		res, err := a.Add(ctx, req(wire.CmdAdd, name))
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		ips[name] = res.IPs[0].Address.IP.String()
		a.waitAdmitted(t)
		converged("ADD " + name + " and its admission")
	}
	add("server", "server")
	st, _, err := a.renderSettled()
	if err != nil {
		t.Fatal(err)
	}
	peerSet = st.PodEntry("x/server").IngressChain + "-all"
	if ports != nil {
		peerSet = st.PodEntry("x/server").IngressChain + "-ports"
	}
	// Three peers in a row: addresses next to each other.
	for _, name := range []string{"p1", "p2", "p3"} {
		add(name, "peer")
		if !admitted(ips[name]) {
			t.Errorf("after ADD %s, its address %s is not in %s", name, ips[name], peerSet)
		}
	}
	t.Logf("peers %s, %s, %s", ips["p1"], ips["p2"], ips["p3"])

	// The one in the middle goes: its neighbours stay, it does not.
	if err := a.Del(ctx, req(wire.CmdDel, "p2")); err != nil {
		t.Fatal(err)
	}
	converged("DEL p2")
	a.waitWithdrawn(t)
	converged("DEL p2 and its withdrawal")
	if admitted(ips["p2"]) {
		t.Errorf("after DEL p2, its address %s is still in %s", ips["p2"], peerSet)
	}
	for _, name := range []string{"p1", "p3"} {
		if !admitted(ips[name]) {
			t.Errorf("after DEL p2, %s's address %s left %s", name, ips[name], peerSet)
		}
	}
	if admitted(ips["server"]) {
		t.Errorf("the server's own address %s is in its peer set %s", ips["server"], peerSet)
	}
}
