package realnode

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// TestVPCPodAddressShape: a pod the kubelet created through containerd has
// its address as a /32 on eth0, from the node's podCIDR, and its default
// route via the link-local gateway on eth0 (the Terway VPC shape).
func TestVPCPodAddressShape(t *testing.T) {
	rntest.Need(t)
	ns := rntest.Namespace(t)
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "shape", rntest.Pod{}, "netexec", "--http-port=8080"), "apply", "-f", "-")
	rntest.WaitReady(t, ns, "shape")
	podIP := netip.MustParseAddr(strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "pod", "shape", "-o", "jsonpath={.status.podIP}")))
	cidr := netip.MustParsePrefix(strings.TrimSpace(rntest.Kubectl(t, "", "get", "node", rntest.Need(t).Name, "-o", "jsonpath={.spec.podCIDR}")))
	if !cidr.Contains(podIP) {
		t.Errorf("pod IP %s is outside the node's podCIDR %s", podIP, cidr)
	}
	pid := fmt.Sprint(rntest.SandboxPID(t, ns, "shape"))
	addrs, err := rntest.InNode(t, "nsenter", "-t", pid, "-n", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr in the pod: %v: %s", err, addrs)
	}
	if want := "inet " + podIP.String() + "/32 "; !strings.Contains(addrs, want) || strings.Count(addrs, "inet ") != 1 {
		t.Errorf("pod eth0 addresses: want exactly %q, got:\n%s", want, addrs)
	}
	routes, err := rntest.InNode(t, "nsenter", "-t", pid, "-n", "ip", "-4", "route", "show")
	if err != nil {
		t.Fatalf("ip route in the pod: %v: %s", err, routes)
	}
	if !strings.Contains(routes, "default via 169.254.1.1 dev eth0") || !strings.Contains(routes, "onlink") {
		t.Errorf("pod routes: want default via 169.254.1.1 dev eth0 onlink, got:\n%s", routes)
	}
	t.Logf("pod %s/shape: %s in %s; eth0: %s", ns, podIP, cidr, strings.TrimSpace(addrs))
}

// TestAccessNginx is the README's NetworkPolicy walkthrough on the real
// node: a Deployment behind a ClusterIP Service (kube-proxy's nftables
// rules in front), reachable from every pod until the access-nginx policy
// admits only pods labelled access=true.
func TestAccessNginx(t *testing.T) {
	rntest.Need(t)
	ns := rntest.Namespace(t)
	rntest.Kubectl(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx, namespace: %[1]s}
spec:
  replicas: 2
  selector: {matchLabels: {run: nginx}}
  template:
    metadata: {labels: {run: nginx}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: %[2]s
        imagePullPolicy: Never
        args: [netexec, --http-port=80]
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: %[1]s}
spec:
  selector: {run: nginx}
  ports: [{port: 80, targetPort: 80}]
`, ns, realnode.AgnhostImage), "apply", "-f", "-")
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "access", rntest.Pod{Labels: map[string]string{"access": "true"}}, "pause"), "apply", "-f", "-")
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "noaccess", rntest.Pod{}, "pause"), "apply", "-f", "-")
	rntest.Kubectl(t, "", "-n", ns, "rollout", "status", "deployment/nginx", "--timeout=120s")
	rntest.WaitReady(t, ns, "access", "noaccess")
	vip := strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "service", "nginx", "-o", "jsonpath={.spec.clusterIP}"))
	addr := vip + ":80"

	// Without a policy both reach the Service: what the policy then refuses
	// is refused by the policy.
	for _, pod := range []string{"access", "noaccess"} {
		rntest.Eventually(t, 60*time.Second, pod+" -> "+addr+" before the policy", func() error { return rntest.Connect(t, ns, pod, addr) })
	}
	rntest.Kubectl(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: access-nginx, namespace: %s}
spec:
  podSelector: {matchLabels: {run: nginx}}
  ingress:
  - from:
    - podSelector: {matchLabels: {access: "true"}}
`, ns), "apply", "-f", "-")
	rntest.Eventually(t, 60*time.Second, "noaccess -> "+addr+" refused under access-nginx", func() error {
		if rntest.Connect(t, ns, "noaccess", addr) == nil {
			return fmt.Errorf("noaccess still connects")
		}
		return nil
	})
	// Each connection goes to one of two backends: try several times.
	for i := range 6 {
		if err := rntest.Connect(t, ns, "access", addr); err != nil {
			t.Fatalf("access -> %s (try %d) under access-nginx: %v", addr, i, err)
		}
		if rntest.Connect(t, ns, "noaccess", addr) == nil {
			t.Fatalf("noaccess -> %s (try %d) connected under access-nginx", addr, i)
		}
	}
}
