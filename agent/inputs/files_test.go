package inputs

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// waitBound bounds every wait for a change. It is a limit, not a measure:
// each wait ends as soon as the condition holds.
const waitBound = 20 * time.Second

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits on Changed until cond holds for a fresh snapshot.
func waitFor(t *testing.T, src Source, what string, cond func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		select {
		case <-src.Changed():
			if s := src.Snapshot(); cond(s) {
				return s
			}
		case <-deadline:
			s := src.Snapshot()
			t.Fatalf("waiting for %s: not seen after Changed signals; synced=%v snapshot: %s", what, src.Synced(), describe(s))
			return s
		}
	}
}

// drain takes a pending Changed signal, so that the next one comes from
// what the test does next.
func drain(src Source) {
	select {
	case <-src.Changed():
	default:
	}
}

func describe(s Snapshot) string {
	var b strings.Builder
	if s.Node != nil {
		fmt.Fprintf(&b, "node=%s ", s.Node.Name)
	} else {
		b.WriteString("node=<nil> ")
	}
	fmt.Fprintf(&b, "pods=%v namespaces=%v policies=%v errors=%v", podKeys(s), nsNames(s), policyKeys(s), s.Errors)
	return b.String()
}

func podKeys(s Snapshot) []string {
	var out []string
	for _, p := range s.Pods {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func nsNames(s Snapshot) []string {
	var out []string
	for _, n := range s.Namespaces {
		out = append(out, n.Name)
	}
	return out
}

func policyKeys(s Snapshot) []string {
	var out []string
	for _, p := range s.Policies {
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

func errorsContain(s Snapshot, parts ...string) bool {
	for _, err := range s.Errors {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(err.Error(), p)
		}
		if ok {
			return true
		}
	}
	return false
}

func podYAML(ns, name, node string, labels string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  namespace: %s
  name: %s
  labels: {%s}
spec:
  nodeName: %s
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
status:
  podIP: 198.18.0.10
`, ns, name, labels, node)
}

const nodesYAML = `apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 198.18.0.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
spec: {podCIDR: 198.18.1.0/24}
`

const namespacesJSON = `{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"team": "a"}}},
 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}]}`

const policyYAML = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: prod, name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`

// startFiles writes files into a new folder and starts a source for node-a.
func startFiles(t *testing.T, files map[string]string) (*Files, string) {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, filepath.Join(dir, name), content)
	}
	f, err := NewFiles(dir, "node-a", FilesOptions{Logger: quietLogger(), Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if f.Synced() {
		t.Fatal("Synced before Start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f, "first read", func(Snapshot) bool { return f.Synced() })
	return f, dir
}

func TestFilesReadsFolder(t *testing.T) {
	f, _ := startFiles(t, map[string]string{
		"nodes.yaml":     nodesYAML,
		"pods.yaml":      podYAML("prod", "web", "node-a", "app: web") + "---\n" + podYAML("prod", "db", "node-b", "app: db"),
		"sub/ns.json":    namespacesJSON,
		"policy.yml":     policyYAML,
		"alloc.yaml":     "apiVersion: terway/v1\nkind: Allocation\nmetadata: {namespace: prod, name: web}\nspec: {ip: 198.18.0.10}\n",
		"service.yaml":   "apiVersion: v1\nkind: Service\nmetadata: {namespace: prod, name: web}\n",
		"notes.txt":      "not: [yaml",
		".hidden.yaml":   podYAML("prod", "hidden", "node-a", ""),
		".cache/x.yaml":  podYAML("prod", "cached", "node-a", ""),
		"UPPER/POD.YAML": podYAML("dev", "shout", "node-a", ""),
	})
	s := f.Snapshot()
	if len(s.Errors) != 0 {
		t.Fatalf("errors: %v", s.Errors)
	}
	if s.Node == nil || s.Node.Name != "node-a" || s.Node.Spec.PodCIDR != "198.18.0.0/24" {
		t.Fatalf("node: got %s, want node-a with its podCIDR", describe(s))
	}
	if got, want := podKeys(s), []string{"dev/shout", "prod/db", "prod/web"}; !slices.Equal(got, want) {
		t.Errorf("pods: got %v, want %v (other nodes' pods included, dot-names skipped, sorted)", got, want)
	}
	if got, want := nsNames(s), []string{"dev", "prod"}; !slices.Equal(got, want) {
		t.Errorf("namespaces: got %v, want %v", got, want)
	}
	if got, want := policyKeys(s), []string{"prod/deny-all"}; !slices.Equal(got, want) {
		t.Errorf("policies: got %v, want %v", got, want)
	}
	if p, ok := f.Pod("prod", "web"); !ok || p.Labels["app"] != "web" || p.Spec.Containers[0].Ports[0].Name != "http" {
		t.Errorf("Pod(prod, web) = %v, %v; want the pod with its label and named port", p, ok)
	}
	if _, ok := f.Pod("prod", "nope"); ok {
		t.Error("Pod(prod, nope) found a pod")
	}

	// The caller owns the slices.
	s.Pods[0] = nil
	if f.Snapshot().Pods[0] == nil {
		t.Error("changing a snapshot's slice changed the source")
	}
}

func TestFilesFollowsChanges(t *testing.T) {
	f, dir := startFiles(t, map[string]string{
		"nodes.yaml": nodesYAML,
		"web.yaml":   podYAML("prod", "web", "node-a", "app: web"),
		"db.yaml":    podYAML("prod", "db", "node-b", "app: db"),
	})

	// A changed file.
	drain(f)
	writeFile(t, filepath.Join(dir, "web.yaml"), podYAML("prod", "web", "node-a", "app: web, tier: front"))
	waitFor(t, f, "the new label", func(s Snapshot) bool {
		p, ok := f.Pod("prod", "web")
		return ok && p.Labels["tier"] == "front"
	})

	// A new file, in a new subfolder.
	drain(f)
	writeFile(t, filepath.Join(dir, "more", "cache.yaml"), podYAML("prod", "cache", "node-a", ""))
	waitFor(t, f, "the new file's pod", func(s Snapshot) bool {
		return slices.Equal(podKeys(s), []string{"prod/cache", "prod/db", "prod/web"})
	})

	// A new file in the new subfolder: the subfolder is watched now.
	drain(f)
	writeFile(t, filepath.Join(dir, "more", "ns.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
	waitFor(t, f, "the namespace", func(s Snapshot) bool { return slices.Equal(nsNames(s), []string{"prod"}) })

	// A deleted file.
	drain(f)
	if err := os.Remove(filepath.Join(dir, "db.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f, "the deleted file's pod to go", func(s Snapshot) bool {
		return slices.Equal(podKeys(s), []string{"prod/cache", "prod/web"})
	})

	// A deleted subfolder.
	drain(f)
	if err := os.RemoveAll(filepath.Join(dir, "more")); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, f, "the deleted folder's objects to go", func(s Snapshot) bool {
		return slices.Equal(podKeys(s), []string{"prod/web"}) && len(s.Namespaces) == 0
	})
	if len(s.Errors) != 0 || s.Node == nil {
		t.Errorf("after the changes: %s", describe(s))
	}
}

func TestFilesBadFileKeepsTheRest(t *testing.T) {
	f, dir := startFiles(t, map[string]string{
		"nodes.yaml":  nodesYAML,
		"web.yaml":    podYAML("prod", "web", "node-a", "app: web"),
		"db.yaml":     podYAML("prod", "db", "node-a", "app: db"),
		"broken.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n",
	})
	broken := filepath.Join(dir, "broken.yaml")
	s := f.Snapshot()
	if !errorsContain(s, broken, "gives no objects") {
		t.Errorf("a file broken from the start: want an error naming %s, got %v", broken, s.Errors)
	}
	if !slices.Equal(podKeys(s), []string{"prod/db", "prod/web"}) || s.Node == nil {
		t.Errorf("a broken file cost the others their objects: %s", describe(s))
	}

	// Break a good file: its last good objects stay, the error names the
	// file and the reason.
	db := filepath.Join(dir, "db.yaml")
	drain(f)
	writeFile(t, db, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  labels: [not, a, map]\n")
	s = waitFor(t, f, "the error for db.yaml", func(s Snapshot) bool { return errorsContain(s, db) })
	if !errorsContain(s, db, "Pod db", "labels", "objects last read from it are kept") {
		t.Errorf("error for db.yaml: want file, object, field and what is kept; got %v", s.Errors)
	}
	if !slices.Equal(podKeys(s), []string{"prod/db", "prod/web"}) {
		t.Errorf("pods while db.yaml is broken: got %v, want both kept", podKeys(s))
	}
	if p, _ := f.Pod("prod", "db"); p == nil || p.Labels["app"] != "db" {
		t.Errorf("db's last good object not kept: %v", p)
	}

	// Fix both files: the errors go.
	drain(f)
	writeFile(t, db, podYAML("prod", "db", "node-a", "app: db2"))
	if err := os.Remove(broken); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, f, "no errors", func(s Snapshot) bool { return len(s.Errors) == 0 })
	if p, _ := f.Pod("prod", "db"); p == nil || p.Labels["app"] != "db2" {
		t.Errorf("db's fixed object not read: %v", p)
	}
}

func TestFilesNodeSelection(t *testing.T) {
	f, dir := startFiles(t, map[string]string{
		"other.yaml": "apiVersion: v1\nkind: Node\nmetadata: {name: node-b}\n",
		"pod.yaml":   podYAML("prod", "web", "node-a", ""),
	})
	s := f.Snapshot()
	if s.Node != nil || !errorsContain(s, "Node node-a", "not found") {
		t.Fatalf("without this node: want Node nil and an error naming node-a; got %s", describe(s))
	}
	if len(s.Pods) != 1 {
		t.Errorf("pods without a node: got %v", podKeys(s))
	}

	drain(f)
	writeFile(t, filepath.Join(dir, "a.yaml"), "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 198.18.0.0/24}\n")
	s = waitFor(t, f, "node-a", func(s Snapshot) bool { return s.Node != nil })
	if s.Node.Name != "node-a" || len(s.Errors) != 0 {
		t.Errorf("after adding node-a: %s", describe(s))
	}

	// Two copies of this Node: the first file's wins, and the second is
	// reported.
	drain(f)
	writeFile(t, filepath.Join(dir, "z.yaml"), "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\nspec: {podCIDR: 198.18.9.0/24}\n")
	s = waitFor(t, f, "the duplicate Node", func(s Snapshot) bool { return len(s.Errors) > 0 })
	if s.Node.Spec.PodCIDR != "198.18.0.0/24" || !errorsContain(s, filepath.Join(dir, "z.yaml"), "Node node-a", "also defined in", "a.yaml") {
		t.Errorf("duplicate Node: %s", describe(s))
	}
}

// TestFilesPolling runs the loop without change notifications, as when the
// system has none to give.
func TestFilesPolling(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "nodes.yaml"), nodesYAML)
	f, err := NewFiles(dir, "node-a", FilesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.run(ctx, nil)
	waitFor(t, f, "first read", func(s Snapshot) bool { return f.Synced() && s.Node != nil })
	drain(f)
	writeFile(t, filepath.Join(dir, "pod.yaml"), podYAML("prod", "web", "node-a", ""))
	waitFor(t, f, "the polled pod", func(s Snapshot) bool { return len(s.Pods) == 1 })
}

func TestFilesBadSetup(t *testing.T) {
	if _, err := NewFiles("", "node-a", FilesOptions{}); err == nil {
		t.Error("NewFiles with no folder: no error")
	}
	if _, err := NewFiles(t.TempDir(), "", FilesOptions{}); err == nil || !strings.Contains(err.Error(), "node name") {
		t.Errorf("NewFiles with no node name: got %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	f, err := NewFiles(missing, "node-a", FilesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Start on a missing folder: got %v, want an error naming it", err)
	}
	if f.Synced() {
		t.Error("Synced after a failed Start")
	}

	f2, _ := startFiles(t, map[string]string{"n.yaml": nodesYAML})
	if err := f2.Start(context.Background()); err == nil {
		t.Error("second Start: no error")
	}
}
