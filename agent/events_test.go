package agent

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/terway-reconciler/terway/spec"
)

type podMap map[string]*corev1.Pod

func (m podMap) Pod(ns, name string) (*corev1.Pod, bool) {
	p, ok := m[ns+"/"+name]
	return p, ok
}

func testPod(ns, name, uid, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("u-" + uid)},
		Spec:       corev1.PodSpec{NodeName: node},
	}
}

func drain(r *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case ev := <-r.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// TestProblemEventsDedupe: a problem is published once while it lasts,
// again when it comes back or after reannounceEvery; allocation problems
// and other nodes' pods are not published; a refused ADD is published once
// across retries until the pod gets its network.
func TestProblemEventsDedupe(t *testing.T) {
	rec := record.NewFakeRecorder(100)
	now := time.Unix(1000, 0)
	e := &problemEvents{log: slog.New(slog.NewTextHandler(io.Discard, nil)), node: "n1", recorder: rec,
		now: func() time.Time { return now }, sent: map[problemKey]sentProblem{}}
	pods := podMap{
		"x/a": testPod("x", "a", "a", "n1"), "x/b": testPod("x", "b", "b", "n1"),
		"x/far": testPod("x", "far", "far", "n2"),
	}
	bad := spec.Problem{Kind: "Pod", Namespace: "x", Name: "a", Field: `metadata.annotations[kubernetes.io/egress-bandwidth]`, Reason: `"fast" is not a Kubernetes quantity`}
	state := &spec.NodeState{Problems: []spec.Problem{
		bad,
		{Kind: "Pod", Namespace: "x", Name: "b", Field: "allocation", Reason: "no allocation: the CNI has not set this pod up yet"},
		{Kind: "Pod", Namespace: "x", Name: "far", Field: "metadata.annotations[x]", Reason: "not ours"},
		{Kind: "Pod", Namespace: "x", Name: "gone", Reason: "pod object not found"},
		{Kind: "NetworkPolicy", Namespace: "x", Name: "np", Reason: "bad"},
	}}

	e.rendered(state, pods)
	got := drain(rec)
	if len(got) != 1 || !strings.Contains(got[0], "Warning InvalidAnnotation") || !strings.Contains(got[0], "kubernetes.io/egress-bandwidth") {
		t.Fatalf("first render: events %q, want one InvalidAnnotation naming the annotation", got)
	}
	e.rendered(state, pods)
	if got := drain(rec); len(got) != 0 {
		t.Errorf("same problems again: events %q, want none", got)
	}
	now = now.Add(reannounceEvery)
	e.rendered(state, pods)
	if got := drain(rec); len(got) != 1 {
		t.Errorf("after %s: events %q, want the problem again", reannounceEvery, got)
	}
	e.rendered(&spec.NodeState{}, pods) // fixed
	e.rendered(state, pods)             // broken again: news
	if got := drain(rec); len(got) != 1 {
		t.Errorf("problem gone and back: events %q, want one", got)
	}
	other := bad
	other.Reason = `"faster" is not a Kubernetes quantity`
	e.rendered(&spec.NodeState{Problems: []spec.Problem{other}}, pods)
	if got := drain(rec); len(got) != 1 {
		t.Errorf("another bad value: events %q, want one", got)
	}

	refused := &spec.NodeState{Problems: []spec.Problem{{Kind: "Pod", Namespace: "x", Name: "b",
		Field: `metadata.annotations[kubernetes.io/ingress-bandwidth]`, Reason: `"10x" is not a Kubernetes quantity`}}}
	for i := 0; i < 3; i++ { // the runtime retries ADD; resyncs run between
		e.addRefused(refused, "x/b", "u-b")
		e.rendered(&spec.NodeState{}, pods)
	}
	got = drain(rec)
	if len(got) != 1 || !strings.Contains(got[0], "Warning FailedNetworkSetup") || !strings.Contains(got[0], `"10x"`) {
		t.Errorf("refused ADD retried 3 times: events %q, want one FailedNetworkSetup naming the value", got)
	}
	// The pod got its network (annotation fixed); a later refusal is news.
	e.rendered(&spec.NodeState{Pods: []*spec.Pod{{Key: "x/b", UID: "u-b"}}}, pods)
	e.addRefused(refused, "x/b", "u-b")
	if got := drain(rec); len(got) != 1 {
		t.Errorf("refused again after a success: events %q, want one", got)
	}
}

// TestProblemEventsStandalone: without an API server, problems are logged
// and nothing else happens.
func TestProblemEventsStandalone(t *testing.T) {
	var log strings.Builder
	e := newProblemEvents(slog.New(slog.NewTextHandler(&log, nil)), "n1", nil)
	defer e.close()
	e.rendered(&spec.NodeState{Problems: []spec.Problem{{Kind: "Pod", Namespace: "x", Name: "a",
		Field: "metadata.annotations[kubernetes.io/egress-bandwidth]", Reason: "bad"}}}, podMap{"x/a": testPod("x", "a", "a", "n1")})
	if !strings.Contains(log.String(), "pod problem") || !strings.Contains(log.String(), "kubernetes.io/egress-bandwidth") {
		t.Errorf("standalone log %q lacks the problem", log.String())
	}
}
