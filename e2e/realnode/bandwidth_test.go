package realnode

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode/rntest"
	"github.com/terway-reconciler/terway/internal/traffic"
)

// podNetns is the path of a pod's network namespace as the sandbox's
// process holds it, checked to be neither the machine's nor the node's.
func podNetns(t *testing.T, ns, pod string) string {
	t.Helper()
	p := fmt.Sprintf("/proc/%d/ns/net", rntest.SandboxPID(t, ns, pod))
	got, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Readlink("/proc/self/ns/net")
	holder, err := rntest.Need(t).HolderPID()
	if err != nil {
		t.Fatal(err)
	}
	nodeNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", holder))
	if got == host || got == nodeNS {
		t.Fatalf("pod %s/%s: sandbox is in the %s namespace, not its own", ns, pod, got)
	}
	return p
}

// TestBandwidthAnnotations: both annotation families, measured with real
// TCP traffic between pods the kubelet made. The echo server runs in the
// shaped pod; the client reads the echo, so the rate is that of the slower
// direction: into the pod for an ingress limit, out of it for egress.
func TestBandwidthAnnotations(t *testing.T) {
	rntest.Need(t)
	ns := rntest.Namespace(t)
	cases := []struct {
		pod, key, value string
		bytesPerSec     float64
	}{
		// kubernetes.io: a Kubernetes quantity in bits/s.
		{"k8s-ingress", "kubernetes.io/ingress-bandwidth", "8M", 8e6 / 8},
		{"k8s-egress", "kubernetes.io/egress-bandwidth", "8M", 8e6 / 8},
		// k8s.aliyun.com: bytes/s, binary multiples (1m = 1 MiB/s).
		{"aliyun-ingress", "k8s.aliyun.com/ingress-bandwidth", "1m", 1 << 20},
		{"aliyun-egress", "k8s.aliyun.com/egress-bandwidth", "1m", 1 << 20},
	}
	pods := []string{"client", "unshaped"}
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "client", rntest.Pod{}, "pause"), "apply", "-f", "-")
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "unshaped", rntest.Pod{}, "pause"), "apply", "-f", "-")
	for _, c := range cases {
		rntest.Kubectl(t, rntest.AgnhostPod(ns, c.pod, rntest.Pod{Annotations: map[string]string{c.key: c.value}}, "pause"), "apply", "-f", "-")
		pods = append(pods, c.pod)
	}
	rntest.WaitReady(t, ns, pods...)
	client := podNetns(t, ns, "client")

	measure := func(pod string) float64 {
		t.Helper()
		ip := strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
		srv, err := traffic.Serve(podNetns(t, ns, pod), ip+":9000", "tcp")
		if err != nil {
			t.Fatalf("echo server in %s: %v", pod, err)
		}
		defer srv.Close()
		rate, err := traffic.Throughput(client, ip+":9000", 2*time.Second, 4*time.Second)
		if err != nil {
			t.Fatalf("client -> %s: %v", pod, err)
		}
		return rate
	}
	base := measure("unshaped")
	t.Logf("unshaped: %.2f MB/s", base/1e6)
	for _, c := range cases {
		rate := measure(c.pod)
		t.Logf("%s %s=%s: %.3f MB/s, limit %.3f MB/s (%.2f of it)", c.pod, c.key, c.value, rate/1e6, c.bytesPerSec/1e6, rate/c.bytesPerSec)
		if rate < 0.6*c.bytesPerSec || rate > 1.2*c.bytesPerSec {
			t.Errorf("%s %s=%s: measured %.0f B/s, want within 0.6-1.2 of %.0f B/s", c.pod, c.key, c.value, rate, c.bytesPerSec)
		}
		if base < 4*rate {
			t.Errorf("%s: the unshaped pod's %.0f B/s is not well above the shaped %.0f B/s: the limit proves nothing", c.pod, base, rate)
		}
	}
}
