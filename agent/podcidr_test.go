package agent

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/render"
)

// TestAllocateVPCRefusesBadPodCIDR: a VPC ADD on a node whose pod CIDR is
// unusable allocates nothing and says what render says about the Node,
// word for word. Before, 10.0.0.5/0 handed out 0.0.0.1.
func TestAllocateVPCRefusesBadPodCIDR(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "store.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := &Agent{store: st, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, podCIDR := range []string{"300.1.0.0/24", "10.0.0.0/33", "10.0.0.5/0", "10.0.0.0/8", "fd00::/64", ""} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: podCIDR}}
		req := &wire.Request{ContainerID: "c1", IfName: "eth0", Netns: "/var/run/netns/p", Args: wire.PodArgs{UID: "uid-p"}}
		alloc, _, commit, cerr := a.allocateVPCDeferred(req, "x/p", node)
		if cerr == nil && commit != nil {
			if err := commit(); err != nil {
				t.Fatal(err)
			}
		}
		if cerr == nil {
			t.Errorf("podCIDR %q: ADD allocated %s, want a refusal", podCIDR, alloc.Spec.IP)
			if _, _, err := st.Release("c1", "eth0"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		state, err := render.Render(render.Inputs{Node: node})
		if err != nil || len(state.Problems) != 1 {
			t.Fatalf("podCIDR %q: render %v, problems %v; want the Node's one problem", podCIDR, err, state.Problems)
		}
		if want := state.Problems[0].String(); cerr.Details != want || !strings.Contains(cerr.Msg, "n1") {
			t.Errorf("podCIDR %q: ADD refused with %q / %q, want the Node's problem %q", podCIDR, cerr.Msg, cerr.Details, want)
		}
		if held, err := st.List(); err != nil || len(held) != 0 {
			t.Errorf("podCIDR %q: store holds %v (%v) after the refusal", podCIDR, held, err)
		}
	}
}
