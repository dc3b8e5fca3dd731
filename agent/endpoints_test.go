package agent

import (
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/spec"
)

// unsyncedSource has read nothing yet.
type unsyncedSource struct{ staticSource }

func (unsyncedSource) Synced() bool { return false }

// withPods is staticSource with pods.
type withPods struct {
	staticSource
	pods []*corev1.Pod
}

func (s withPods) Snapshot() inputs.Snapshot {
	return inputs.Snapshot{Node: s.node, Pods: s.pods, Errors: []error{errPodFile}}
}

var errPodFile = errors.New("pods.yaml: document 2: not YAML")

// TestInputsEndpoint: /inputs answers while the agent's lock is held (a
// CNI request or a resync's execution never holds it up, and it never
// holds them up); what it serves reads back as the source's objects, the
// store's allocations and the agent's config, with the source's problems
// as comments; it refuses writes, and answers 503 before the inputs are
// synced.
func TestInputsEndpoint(t *testing.T) {
	a := testAgent(t, Config{}, nil)
	st, err := store.Open(filepath.Join(t.TempDir(), "allocations.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	a.store = st
	if err := st.Put(spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: "a"},
		Spec: spec.AllocationSpec{IP: "198.18.0.10", Netns: "/var/run/netns/x-a", ContainerID: "c1", IfName: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	node := a.src.(staticSource).node
	a.src = withPods{staticSource: staticSource{node: node}, pods: []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", Labels: map[string]string{"app": "a"}}, Spec: corev1.PodSpec{NodeName: "node-1"}}}}
	a.cfg.Render.Mode = spec.PodModeVPC
	mux := a.healthMux()

	a.mu.Lock()
	answered := make(chan struct{})
	var code int
	var body string
	go func() {
		defer close(answered)
		code, body = get(t, mux, http.MethodGet, load.AgentInputsPath)
	}()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("/inputs waits for the agent's lock")
	}
	a.mu.Unlock()
	if code != http.StatusOK {
		t.Fatalf("/inputs: HTTP %d %s", code, body)
	}
	if !strings.HasPrefix(body, "# input problem: pods.yaml: document 2: not YAML\n") {
		t.Errorf("/inputs does not start with the source's problem:\n%s", body)
	}
	objs := &load.Objects{}
	if err := objs.Read("/inputs", strings.NewReader(body)); err != nil {
		t.Fatalf("/inputs does not read back: %v\n%s", err, body)
	}
	if len(objs.Nodes) != 1 || objs.Nodes[0].Name != "node-1" || len(objs.Pods) != 1 || objs.Pods[0].Labels["app"] != "a" ||
		len(objs.Allocations) != 1 || objs.Allocations[0].Spec.IP != "198.18.0.10" || objs.Config == nil || objs.Config.Mode != spec.PodModeVPC {
		t.Errorf("/inputs read back as %+v", objs)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		if code, _ := get(t, mux, m, load.AgentInputsPath); code != http.StatusMethodNotAllowed {
			t.Errorf("%s /inputs: HTTP %d, want 405", m, code)
		}
	}
	a.src = unsyncedSource{staticSource{node: node}}
	if code, body := get(t, a.healthMux(), http.MethodGet, load.AgentInputsPath); code != http.StatusServiceUnavailable || !strings.Contains(body, "not synced") {
		t.Errorf("/inputs before the inputs are synced: HTTP %d %q, want 503", code, body)
	}
}
