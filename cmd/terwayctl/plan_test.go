package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// terwayctl runs the command in-process and returns its exit code and
// output.
func terwayctl(args ...string) (code int, stdout, stderr string) {
	var out, errOut strings.Builder
	code = run(strings.NewReader(""), &out, &errOut, args...)
	return code, out.String(), errOut.String()
}

// TestPlanApplyCommands drives `terwayctl plan` and `apply` as a user
// would, against a namespace that plays the node (--netns): plan exits 2
// and lists the changes, apply prints each operation and the counts, a
// converged plan exits 0, drift shows up as its repair, and a broken
// document exits 1 naming the file, the item and the reason.
func TestPlanApplyCommands(t *testing.T) {
	node := nstest.Netns(t, "ctl-node")
	pod := nstest.Netns(t, "ctl-pod")
	state, err := render.Render(render.Inputs{
		Config: render.Config{Mode: spec.PodModeVPC},
		Node:   &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"}},
		Pods: []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a"},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c"}}}}},
		Allocations: []*spec.Allocation{{Metadata: spec.ObjectMeta{Namespace: "x", Name: "a"},
			Spec: spec.AllocationSpec{IP: "198.18.0.10", Netns: pod, ContainerID: "ctr-a"}}},
	})
	if err != nil || len(state.Problems) > 0 {
		t.Fatal(err, state.Problems)
	}
	dir := t.TempDir()
	doc := filepath.Join(dir, "node.yaml")
	data, err := state.MarshalYAML()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(doc, data, 0o600); err != nil {
		t.Fatal(err)
	}
	veth := spec.HostVethName("x/a")

	code, out, errOut := terwayctl("plan", "--state", doc, "--netns", node)
	if code != 2 || !strings.Contains(out, "+ link veth "+veth) || !strings.Contains(out, "+ route 198.18.0.10/32 dev "+veth) ||
		!strings.Contains(errOut, "changes: ") {
		t.Fatalf("plan on an empty node: exit %d, want 2 and the pod's objects:\n%s%s", code, out, errOut)
	}
	code, out, errOut = terwayctl("apply", "--state", doc, "--netns", node)
	if code != 0 || !strings.Contains(out, "applied: ") || strings.Contains(out, "FAILED") || !strings.Contains(out, "kernel writes") {
		t.Fatalf("apply: exit %d:\n%s%s", code, out, errOut)
	}
	nstest.Run(t, node, "ip", "link", "show", "dev", veth)
	if code, out, errOut = terwayctl("plan", "--state", doc, "--netns", node); code != 0 || out != "" || !strings.Contains(errOut, "no changes") {
		t.Fatalf("plan on a converged node: exit %d, want 0 and nothing:\n%s%s", code, out, errOut)
	}

	// The document from standard input, as in `terwayctl render … | terwayctl plan --state -`.
	var out2, err2 strings.Builder
	if code := run(strings.NewReader(string(data)), &out2, &err2, "plan", "--state", "-", "--netns", node); code != 0 {
		t.Fatalf("plan --state - on a converged node: exit %d:\n%s%s", code, out2.String(), err2.String())
	}

	nstest.Run(t, node, "ip", "route", "del", "198.18.0.10/32", "dev", veth)
	if code, out, _ = terwayctl("plan", "--state", doc, "--netns", node); code != 2 || strings.TrimSpace(out) != "+ route 198.18.0.10/32 dev "+veth+" scope link table main proto terway" {
		t.Fatalf("plan after deleting the pod's route: exit %d, want 2 and the route alone:\n%s", code, out)
	}
	if code, _, errOut = terwayctl("apply", "-q", "--state", doc, "--netns", node); code != 0 {
		t.Fatalf("apply: exit %d: %s", code, errOut)
	}
	if code, _, _ = terwayctl("plan", "--state", doc, "--netns", node); code != 0 {
		t.Fatalf("plan after the repair: exit %d, want 0", code)
	}

	bad := filepath.Join(dir, "bad.yaml")
	broken := strings.Replace(string(data), "198.18.0.10/32", "198.18.0.300/32", 1)
	for _, tc := range []struct{ name, text, want string }{
		{"garbage", "{not: [yaml", bad},
		{"an invalid address", broken, `].cidr: "198.18.0.300/32" is not`},
	} {
		if err := os.WriteFile(bad, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, verb := range []string{"plan", "apply"} {
			code, out, errOut := terwayctl(verb, "--state", bad, "--netns", node)
			t.Logf("%s of %s: exit %d: %s", verb, tc.name, code, strings.TrimSpace(errOut))
			if code != 1 || out != "" || !strings.Contains(errOut, tc.want) {
				t.Errorf("%s of %s: exit %d, want 1 and an error naming %q:\n%s%s", verb, tc.name, code, tc.want, out, errOut)
			}
		}
	}
	if code, _, _ = terwayctl("plan", "--state", doc, "--netns", node); code != 0 {
		t.Fatalf("plan after the refused documents: exit %d, want 0 (nothing touched)", code)
	}
}
