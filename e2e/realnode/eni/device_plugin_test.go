package eni

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// TestDevicePluginAfterKubeletRestart: the real kubelet, stopped and
// started again (it removes and re-creates its device-plugin socket and
// forgets the plugins), admits a pod requesting aliyun/eni again: our
// plugin registered anew. A restarted kubelet admits such a pod only from
// a registered plugin's healthy devices (it fails it with
// UnexpectedAdmissionError otherwise), so the pod's being Ready is the
// proof; the agent's log says it registered again.
func TestDevicePluginAfterKubeletRestart(t *testing.T) {
	c := rntest.Need(t)
	want := exclusiveSlots(t)
	waitAllocatable(t, want)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	if err := realnode.RestartKubelet(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubelet restarted in %s", time.Since(t0).Round(time.Millisecond))
	waitAllocatable(t, want)

	ns := rntest.Namespace(t)
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "after", rntest.Pod{Limits: map[string]string{"aliyun/eni": "1"}}, "pause"), "apply", "-f", "-")
	rntest.WaitReady(t, ns, "after")
	eni := exclusiveENI(t, ns, "after")
	t.Logf("pod after admitted %s after the kubelet's restart, eth0 is ENI %s", time.Since(t0).Round(time.Millisecond), eni.ID)

	logs := rntest.Kubectl(t, "", "-n", "kube-system", "logs", "ds/terway", "-c", "terwayd")
	if n := strings.Count(logs, "device plugin: registered with the kubelet"); n < 2 {
		t.Errorf("the agent registered its device plugin %d time(s); want again after the kubelet's restart", n)
	}
	if !strings.Contains(logs, "kubelet socket re-created") && !strings.Contains(logs, "our socket was removed") {
		t.Errorf("the agent's log shows no sign of the kubelet's restart")
	}
}
