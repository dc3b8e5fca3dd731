package twonode

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// serverPort is where the agnhost netexec servers listen.
const serverPort = 8080

// TestTwoNodes: pods pinned to each node reach each other across the vpc
// both ways, and not without the vpc's route to the other node's podCIDR;
// a NetworkPolicy whose allowed peers are labelled pods admits the
// labelled client on the other node and refuses the unlabelled one there,
// as it does for the clients on the server's own node.
func TestTwoNodes(t *testing.T) {
	a := rntest.Need(t)
	ws := a.Workers()
	if len(ws) != 1 {
		t.Fatalf("cluster %s has %d workers, want 1", a.Name, len(ws))
	}
	b := ws[0]
	ns := rntest.Namespace(t)

	// Servers on both nodes, an allowed (access=true) and a plain client
	// on each.
	type pod struct {
		name   string
		node   *realnode.Config
		labels map[string]string
		args   []string
	}
	serve := []string{"netexec", fmt.Sprintf("--http-port=%d", serverPort)}
	pods := []pod{
		{"server-a", a, map[string]string{"app": "server"}, serve},
		{"server-b", b, map[string]string{"app": "other"}, serve},
		{"client-a-allowed", a, map[string]string{"access": "true"}, []string{"pause"}},
		{"client-a-plain", a, nil, []string{"pause"}},
		{"client-b-allowed", b, map[string]string{"access": "true"}, []string{"pause"}},
		{"client-b-plain", b, nil, []string{"pause"}},
	}
	var manifest []string
	var names []string
	for _, p := range pods {
		manifest = append(manifest, rntest.AgnhostPod(ns, p.name, rntest.Pod{Labels: p.labels, NodeName: p.node.Name}, p.args...))
		names = append(names, p.name)
	}
	rntest.Kubectl(t, strings.Join(manifest, "---\n"), "apply", "-f", "-")
	rntest.WaitReady(t, ns, names...)

	ctx := context.Background()
	addr := map[string]string{}
	for _, p := range pods {
		node := strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "pod", p.name, "-o", "jsonpath={.spec.nodeName}"))
		if node != p.node.Name {
			t.Fatalf("pod %s runs on %q, want %s", p.name, node, p.node.Name)
		}
		ip := netip.MustParseAddr(rntest.PodIP(t, ns, p.name))
		cidr, err := a.NodePodCIDR(ctx, p.node)
		if err != nil {
			t.Fatal(err)
		}
		if !cidr.Contains(ip) {
			t.Fatalf("pod %s on %s has IP %s, outside the node's podCIDR %s", p.name, p.node.Name, ip, cidr)
		}
		addr[p.name] = netip.AddrPortFrom(ip, serverPort).String()
	}

	reach := func(from, to string) error { return rntest.Connect(t, ns, from, addr[to]) }
	expect := func(from, to string, want bool) error {
		err := reach(from, to)
		switch {
		case want && err != nil:
			return fmt.Errorf("%s -> %s refused, want it connected: %w", from, to, err)
		case !want && err == nil:
			return fmt.Errorf("%s -> %s connected, want it refused", from, to)
		}
		return nil
	}

	t.Run("across", func(t *testing.T) {
		for _, c := range [][2]string{{"client-a-plain", "server-b"}, {"client-b-plain", "server-a"}, {"client-a-plain", "server-a"}} {
			if err := expect(c[0], c[1], true); err != nil {
				t.Error(err)
			}
		}
	})
	if t.Failed() {
		return
	}

	// The VPC route table is what carries pods' traffic between nodes:
	// without the route to B's podCIDR, A's pods do not reach B's, while
	// same-node traffic on A does not care.
	t.Run("without the vpc route", func(t *testing.T) {
		if err := a.SetVPCRoute(ctx, b, false); err != nil {
			t.Fatal(err)
		}
		restored := false
		restore := func() {
			if !restored {
				restored = true
				if err := a.SetVPCRoute(ctx, b, true); err != nil {
					t.Error(err)
				}
			}
		}
		t.Cleanup(restore)
		for _, c := range []struct {
			from, to string
			want     bool
		}{{"client-a-plain", "server-b", false}, {"client-b-plain", "server-a", false}, {"client-a-plain", "server-a", true}} {
			if err := expect(c.from, c.to, c.want); err != nil {
				t.Error(err)
			}
		}
		restore()
		rntest.Eventually(t, 30*time.Second, "client-a-plain -> server-b with the route back", func() error {
			return expect("client-a-plain", "server-b", true)
		})
	})
	if t.Failed() {
		return
	}

	// Ingress to server-a only from access=true pods, on any node.
	t.Run("policy with a peer on the other node", func(t *testing.T) {
		rntest.Kubectl(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: access-server, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {access: "true"}}}]
    ports: [{protocol: TCP, port: %d}]
`, ns, serverPort), "apply", "-f", "-")
		cases := []struct {
			from, to string
			want     bool
		}{
			{"client-b-allowed", "server-a", true},
			{"client-b-plain", "server-a", false},
			{"client-a-allowed", "server-a", true},
			{"client-a-plain", "server-a", false},
			// server-b is not selected: still open to everyone.
			{"client-a-plain", "server-b", true},
		}
		rntest.Eventually(t, 60*time.Second, "the policy enforced", func() error {
			var errs []string
			for _, c := range cases {
				if err := expect(c.from, c.to, c.want); err != nil {
					errs = append(errs, err.Error())
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("%s", strings.Join(errs, "; "))
			}
			return nil
		})
	})
}
