package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/terway-reconciler/terway/internal/kubelet"
)

// testEvents: a pod whose bandwidth annotation is invalid gets a Warning
// Event naming the annotation, from the agent running as the terway
// ServiceAccount (so the manifest's RBAC must allow it), once — not once per
// CNI retry or per resync. A running pod whose annotation turns bad gets
// one too, and keeps its network.
func testEvents(t *testing.T, e *env, ns string, pods map[string]kubelet.Sandbox) {
	ctx := context.Background()
	admin := e.cp.Admin
	_, err := admin.CoreV1().Pods(ns).Create(ctx, podSpec(ns, "bad", map[string]string{"app": "bad"},
		map[string]string{"kubernetes.io/ingress-bandwidth": "10x"}), metav1.CreateOptions{})
	must(t, err)
	events := func(pod string) []corev1.Event {
		l, err := admin.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
			FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String(),
		})
		must(t, err)
		return l.Items
	}
	var refused corev1.Event
	took := eventually(t, 15*time.Second, "Event for pod bad", func() bool {
		for _, ev := range events("bad") {
			if ev.Reason == "FailedNetworkSetup" {
				refused = ev
				return true
			}
		}
		return false
	})
	t.Logf("Event for the refused ADD listed %s after the pod was created: %s %s: %s", took.Round(time.Millisecond), refused.Type, refused.Reason, refused.Message)
	if !strings.Contains(refused.Message, "kubernetes.io/ingress-bandwidth") || !strings.Contains(refused.Message, `"10x"`) {
		t.Errorf("event message %q does not name the annotation and its value", refused.Message)
	}
	if refused.Type != corev1.EventTypeWarning || refused.Source.Component != "terwayd" || refused.Source.Host != nodeName {
		t.Errorf("event type %s source %+v; want Warning from terwayd on %s", refused.Type, refused.Source, nodeName)
	}
	// The event can be listed before the stand-in has recorded its failed
	// ADD (it runs CNI DEL first, as a runtime does).
	eventually(t, 5*time.Second, "the stand-in's CNI ADD error for pod bad names the annotation", func() bool {
		err := e.kubelet.LastError(ns, "bad")
		return err != nil && strings.Contains(err.Error(), "kubernetes.io/ingress-bandwidth")
	})
	out := e.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=bad")
	if !strings.Contains(out, "kubernetes.io/ingress-bandwidth") {
		t.Errorf("kubectl get events does not show the annotation:\n%s", out)
	}

	// The stand-in retries ADD with backoff (0.5 s, 1 s, 2 s ...) and the
	// agent resyncs: still one event, counted once.
	time.Sleep(resync + 500*time.Millisecond)
	if evs := events("bad"); len(evs) != 1 || evs[0].Count != 1 {
		t.Errorf("pod bad after CNI retries and a resync: %d events (first count %d), want 1 event counted once:\n%s",
			len(evs), firstCount(evs), e.kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=bad"))
	}

	// A running pod whose annotation turns bad: an event from the reconcile
	// loop; the pod keeps its network.
	e.kubectl("annotate", "pod", "-n", ns, "p12", "kubernetes.io/egress-bandwidth=fast")
	var invalid corev1.Event
	eventually(t, 10*time.Second, "Event for pod p12", func() bool {
		for _, ev := range events("p12") {
			if ev.Reason == "InvalidAnnotation" {
				invalid = ev
				return true
			}
		}
		return false
	})
	if !strings.Contains(invalid.Message, "kubernetes.io/egress-bandwidth") || !strings.Contains(invalid.Message, `"fast"`) {
		t.Errorf("event message %q does not name the annotation and its value", invalid.Message)
	}
	time.Sleep(resync + 500*time.Millisecond)
	if evs := events("p12"); len(evs) != 1 || evs[0].Count != 1 {
		t.Errorf("pod p12 after a resync: %d events (first count %d), want 1 counted once", len(evs), firstCount(evs))
	}
	e.reachable(pods[ns+"/p12"], pods[ns+"/p0"], "tcp", true)

	e.kubectl("annotate", "pod", "-n", ns, "p12", "kubernetes.io/egress-bandwidth-")
	e.kubectl("delete", "pod", "-n", ns, "bad", "--wait=false")
	eventually(t, 10*time.Second, "pod bad removed", func() bool {
		_, err := admin.CoreV1().Pods(ns).Get(ctx, "bad", metav1.GetOptions{})
		return err != nil
	})
}

func firstCount(evs []corev1.Event) int32 {
	if len(evs) == 0 {
		return 0
	}
	return evs[0].Count
}
