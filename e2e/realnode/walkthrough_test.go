package realnode

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
)

// kubectl runs kubectl as the admin inside the node; a failure fails t.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := need(t).Kubectl(context.Background(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// inNode runs a command inside the node's namespaces.
func inNode(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd, err := need(t).Command(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// namespace makes a Kubernetes namespace for one test and deletes it after.
func namespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%s", os.Getpid()%100000, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(ns) > 60 {
		ns = ns[:60]
	}
	kubectl(t, "", "create", "namespace", ns)
	t.Cleanup(func() {
		if _, err := need(t).Kubectl(context.Background(), "", "delete", "namespace", ns, "--wait=true", "--timeout=2m"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return ns
}

// agnhostPod is a pod running agnhost with the given arguments.
func agnhostPod(ns, name string, labels map[string]string, annotations map[string]string, args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", name, ns)
	writeMap(&b, "labels", labels)
	writeMap(&b, "annotations", annotations)
	fmt.Fprintf(&b, "spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: %s\n    imagePullPolicy: Never\n    args: [%s]\n",
		realnode.AgnhostImage, quoteAll(args))
	return b.String()
}

func writeMap(b *strings.Builder, key string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "  %s:\n", key)
	for k, v := range m {
		fmt.Fprintf(b, "    %s: %q\n", k, v)
	}
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

func waitReady(t *testing.T, ns string, pods ...string) {
	t.Helper()
	args := []string{"-n", ns, "wait", "--for=condition=Ready", "--timeout=120s"}
	for _, p := range pods {
		args = append(args, "pod/"+p)
	}
	if _, err := need(t).Kubectl(context.Background(), "", args...); err != nil {
		describe, _ := need(t).Kubectl(context.Background(), "", "-n", ns, "describe", "pods")
		t.Fatalf("%v\n%s", err, describe)
	}
}

// sandboxPID is the PID of a pod's sandbox (pause) process, whose network
// namespace is the pod's.
func sandboxPID(t *testing.T, ns, pod string) int {
	t.Helper()
	id, err := inNode(t, "crictl", "pods", "-q", "--namespace", ns, "--name", pod, "--state", "ready")
	id = strings.TrimSpace(id)
	if err != nil || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("crictl pods %s/%s: %v: %q", ns, pod, err, id)
	}
	out, err := inNode(t, "crictl", "inspectp", id)
	if err != nil {
		t.Fatalf("crictl inspectp %s: %v: %s", id, err, out)
	}
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Info.Pid <= 1 {
		t.Fatalf("crictl inspectp %s: no sandbox pid (%v): %.300s", id, err, out)
	}
	return info.Info.Pid
}

// TestVPCPodAddressShape: a pod the kubelet created through containerd has
// its address as a /32 on eth0, from the node's podCIDR, and its default
// route via the link-local gateway on eth0 (the Terway VPC shape).
func TestVPCPodAddressShape(t *testing.T) {
	need(t)
	ns := namespace(t)
	kubectl(t, agnhostPod(ns, "shape", nil, nil, "netexec", "--http-port=8080"), "apply", "-f", "-")
	waitReady(t, ns, "shape")
	podIP := netip.MustParseAddr(strings.TrimSpace(kubectl(t, "", "-n", ns, "get", "pod", "shape", "-o", "jsonpath={.status.podIP}")))
	cidr := netip.MustParsePrefix(strings.TrimSpace(kubectl(t, "", "get", "node", need(t).Name, "-o", "jsonpath={.spec.podCIDR}")))
	if !cidr.Contains(podIP) {
		t.Errorf("pod IP %s is outside the node's podCIDR %s", podIP, cidr)
	}
	pid := fmt.Sprint(sandboxPID(t, ns, "shape"))
	addrs, err := inNode(t, "nsenter", "-t", pid, "-n", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatalf("ip addr in the pod: %v: %s", err, addrs)
	}
	if want := "inet " + podIP.String() + "/32 "; !strings.Contains(addrs, want) || strings.Count(addrs, "inet ") != 1 {
		t.Errorf("pod eth0 addresses: want exactly %q, got:\n%s", want, addrs)
	}
	routes, err := inNode(t, "nsenter", "-t", pid, "-n", "ip", "-4", "route", "show")
	if err != nil {
		t.Fatalf("ip route in the pod: %v: %s", err, routes)
	}
	if !strings.Contains(routes, "default via 169.254.1.1 dev eth0") || !strings.Contains(routes, "onlink") {
		t.Errorf("pod routes: want default via 169.254.1.1 dev eth0 onlink, got:\n%s", routes)
	}
	t.Logf("pod %s/shape: %s in %s; eth0: %s", ns, podIP, cidr, strings.TrimSpace(addrs))
}

// connect runs agnhost connect from a pod to addr; nil when it connected.
func connect(t *testing.T, ns, pod, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := need(t).Kubectl(ctx, "", "-n", ns, "exec", pod, "--", "/agnhost", "connect", "--timeout=2s", "--protocol=tcp", addr)
	return err
}

// eventually retries check until it returns nil or bound passes.
func eventually(t *testing.T, bound time.Duration, what string, check func() error) {
	t.Helper()
	t0 := time.Now()
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Since(t0) > bound {
			t.Fatalf("%s: not within %s: %v", what, bound, err)
		}
		time.Sleep(time.Second)
	}
}

// TestAccessNginx is the README's NetworkPolicy walkthrough on the real
// node: a Deployment behind a ClusterIP Service (kube-proxy's nftables
// rules in front), reachable from every pod until the access-nginx policy
// admits only pods labelled access=true.
func TestAccessNginx(t *testing.T) {
	need(t)
	ns := namespace(t)
	kubectl(t, fmt.Sprintf(`apiVersion: apps/v1
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
	kubectl(t, agnhostPod(ns, "access", map[string]string{"access": "true"}, nil, "pause"), "apply", "-f", "-")
	kubectl(t, agnhostPod(ns, "noaccess", nil, nil, "pause"), "apply", "-f", "-")
	kubectl(t, "", "-n", ns, "rollout", "status", "deployment/nginx", "--timeout=120s")
	waitReady(t, ns, "access", "noaccess")
	vip := strings.TrimSpace(kubectl(t, "", "-n", ns, "get", "service", "nginx", "-o", "jsonpath={.spec.clusterIP}"))
	addr := vip + ":80"

	// Without a policy both reach the Service: what the policy then refuses
	// is refused by the policy.
	for _, pod := range []string{"access", "noaccess"} {
		eventually(t, 60*time.Second, pod+" -> "+addr+" before the policy", func() error { return connect(t, ns, pod, addr) })
	}
	kubectl(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: access-nginx, namespace: %s}
spec:
  podSelector: {matchLabels: {run: nginx}}
  ingress:
  - from:
    - podSelector: {matchLabels: {access: "true"}}
`, ns), "apply", "-f", "-")
	eventually(t, 60*time.Second, "noaccess -> "+addr+" refused under access-nginx", func() error {
		if connect(t, ns, "noaccess", addr) == nil {
			return fmt.Errorf("noaccess still connects")
		}
		return nil
	})
	// Each connection goes to one of two backends: try several times.
	for i := range 6 {
		if err := connect(t, ns, "access", addr); err != nil {
			t.Fatalf("access -> %s (try %d) under access-nginx: %v", addr, i, err)
		}
		if connect(t, ns, "noaccess", addr) == nil {
			t.Fatalf("noaccess -> %s (try %d) connected under access-nginx", addr, i)
		}
	}
}
