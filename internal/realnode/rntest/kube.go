package rntest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
)

// Kubectl runs kubectl as the admin inside the node; a failure fails t.
func Kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := Need(t).Kubectl(context.Background(), stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// InNode runs a command inside the node's namespaces.
func InNode(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd, err := Need(t).Command(context.Background(), args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// InPod runs a command in a pod's network namespace (through its sandbox
// process, found with crictl); a failure fails t.
func InPod(t *testing.T, ns, pod string, args ...string) string {
	t.Helper()
	pid := fmt.Sprint(SandboxPID(t, ns, pod))
	out, err := InNode(t, append([]string{"nsenter", "-t", pid, "-n"}, args...)...)
	if err != nil {
		t.Fatalf("in pod %s/%s: %s: %v: %s", ns, pod, strings.Join(args, " "), err, out)
	}
	return out
}

// Namespace makes a Kubernetes namespace for one test and deletes it after.
func Namespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("t%d-%s", os.Getpid()%100000, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(ns) > 60 {
		ns = ns[:60]
	}
	Kubectl(t, "", "create", "namespace", ns)
	t.Cleanup(func() {
		if _, err := Need(t).Kubectl(context.Background(), "", "delete", "namespace", ns, "--wait=true", "--timeout=2m"); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	return ns
}

// Pod says what an agnhost pod carries besides its arguments.
type Pod struct {
	Labels, Annotations map[string]string
	// Limits are the container's resource limits (aliyun/eni: "1").
	Limits map[string]string
	// NodeName pins the pod to a node (spec.nodeName, no scheduling).
	NodeName string
}

// AgnhostPod is a pod running agnhost with the given arguments.
func AgnhostPod(ns, name string, p Pod, args ...string) string {
	var b strings.Builder
	// Quoted: a name such as y or on is a boolean to YAML.
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: %q\n  namespace: %q\n", name, ns)
	writeMap(&b, "  ", "labels", p.Labels)
	writeMap(&b, "  ", "annotations", p.Annotations)
	b.WriteString("spec:\n")
	if p.NodeName != "" {
		fmt.Fprintf(&b, "  nodeName: %q\n", p.NodeName)
	}
	fmt.Fprintf(&b, "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: %s\n    imagePullPolicy: Never\n    args: [%s]\n",
		realnode.AgnhostImage, quoteAll(args))
	if len(p.Limits) > 0 {
		b.WriteString("    resources:\n")
		writeMap(&b, "      ", "limits", p.Limits)
	}
	return b.String()
}

func writeMap(b *strings.Builder, indent, key string, m map[string]string) {
	if len(m) == 0 {
		return
	}
	fmt.Fprintf(b, "%s%s:\n", indent, key)
	for k, v := range m {
		fmt.Fprintf(b, "%s  %s: %q\n", indent, k, v)
	}
}

func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, ", ")
}

// WaitReady waits until the pods are Ready; on failure it fails t with
// their description.
func WaitReady(t *testing.T, ns string, pods ...string) {
	t.Helper()
	args := []string{"-n", ns, "wait", "--for=condition=Ready", "--timeout=120s"}
	for _, p := range pods {
		args = append(args, "pod/"+p)
	}
	if _, err := Need(t).Kubectl(context.Background(), "", args...); err != nil {
		describe, _ := Need(t).Kubectl(context.Background(), "", "-n", ns, "describe", "pods")
		t.Fatalf("%v\n%s", err, describe)
	}
}

// PodIP is the pod's IP as the API shows it.
func PodIP(t *testing.T, ns, pod string) string {
	t.Helper()
	ip := strings.TrimSpace(Kubectl(t, "", "-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
	if ip == "" {
		t.Fatalf("pod %s/%s has no IP", ns, pod)
	}
	return ip
}

// SandboxPID is the PID of a pod's sandbox (pause) process, whose network
// namespace is the pod's.
func SandboxPID(t *testing.T, ns, pod string) int {
	t.Helper()
	id, err := InNode(t, "crictl", "pods", "-q", "--namespace", ns, "--name", pod, "--state", "ready")
	id = strings.TrimSpace(id)
	if err != nil || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("crictl pods %s/%s: %v: %q", ns, pod, err, id)
	}
	out, err := InNode(t, "crictl", "inspectp", id)
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

// Connect runs agnhost connect (TCP) from a pod to addr; nil when it
// connected.
func Connect(t *testing.T, ns, pod, addr string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Need(t).Kubectl(ctx, "", "-n", ns, "exec", pod, "--", "/agnhost", "connect", "--timeout=2s", "--protocol=tcp", addr)
	return err
}

// Eventually retries check until it returns nil or bound passes.
func Eventually(t *testing.T, bound time.Duration, what string, check func() error) {
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
