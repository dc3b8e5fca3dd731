package sim_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/sim"
)

const smallCluster = `
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: front, labels: {app: front}}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}, {containerPort: 3868, protocol: SCTP}]}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: back, labels: {app: back}}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: elsewhere}
spec:
  nodeName: another-node
  containers: [{name: c, image: i}]
`

// ctl runs the built terwayctl and returns stdout, stderr and exit code.
func ctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "terwayctl"), args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("terwayctl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := ctl(t, args...)
	if code != 0 {
		t.Fatalf("terwayctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

type podEntry struct {
	Namespace, Name, Netns, IP, Node string
}

func pods(t *testing.T, name string) map[string]podEntry {
	t.Helper()
	var list []podEntry
	if err := json.Unmarshal([]byte(mustCtl(t, "sim", "pods", "-o", "json", "--name", name)), &list); err != nil {
		t.Fatal(err)
	}
	m := map[string]podEntry{}
	for _, p := range list {
		m[p.Namespace+"/"+p.Name] = p
	}
	return m
}

func TestSimCommands(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(smallCluster), 0o600); err != nil {
		t.Fatal(err)
	}
	name := simName(t, "cli")
	before := leftovers(name)
	t.Cleanup(func() { _ = sim.Down(name) })

	out := mustCtl(t, "sim", "up", "--cluster", dir, "--name", name)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || !strings.Contains(out, "2 pods ready") {
		t.Fatalf("sim up printed %q, want one summary line with 2 pods ready", out)
	}

	// pods -o json: one entry per local pod, netns usable with nsenter.
	ps := pods(t, name)
	if len(ps) != 2 || ps["shop/front"].IP == "" || ps["shop/back"].Node != "sim-node" {
		t.Fatalf("sim pods: %+v", ps)
	}
	if _, ok := ps["shop/elsewhere"]; ok {
		t.Fatal("a pod of another node was simulated")
	}
	addr, err := exec.Command("nsenter", "--net="+ps["shop/front"].Netns, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(addr), ps["shop/front"].IP+"/") {
		t.Fatalf("nsenter --net=%s: %v: %s", ps["shop/front"].Netns, err, addr)
	}

	// exec runs inside the pod.
	if out := mustCtl(t, "sim", "exec", "shop/back", "--name", name, "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, ps["shop/back"].IP+"/") {
		t.Fatalf("sim exec: %s", out)
	}

	// probe: served ports reachable (exit 0), others not (exit 1).
	for _, c := range []struct {
		port, proto, want string
		code              int
	}{{"80", "tcp", "reachable", 0}, {"53", "udp", "reachable", 0}, {"81", "tcp", "unreachable", 1}} {
		out, _, code := ctl(t, "sim", "probe", "--name", name, "--from", "shop/back", "--to", "shop/front", "--port", c.port, "--protocol", c.proto, "--timeout", "500ms")
		if strings.TrimSpace(out) != c.want || code != c.code {
			t.Errorf("probe %s/%s: %q exit %d, want %q exit %d", c.proto, c.port, out, code, c.want, c.code)
		}
	}
	if _, errOut, code := ctl(t, "sim", "probe", "--name", name, "--from", "shop/nobody", "--to", "shop/front", "--port", "80"); code == 0 || !strings.Contains(errOut, "shop/nobody") {
		t.Errorf("probe from a missing pod: exit %d %q", code, errOut)
	}

	// matrix: both pods serve TCP 80.
	if out := mustCtl(t, "sim", "matrix", "--name", name, "--port", "80"); strings.Count(out, " . ") < 4 && strings.Count(out, ".") < 4 {
		t.Fatalf("matrix: %s", out)
	}

	// apply: a policy, a new pod; delete: the pod.
	extra := filepath.Join(t.TempDir(), "extra.yaml")
	os.WriteFile(extra, []byte(`apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: new, labels: {app: new}}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: front-from-new}
spec:
  podSelector: {matchLabels: {app: front}}
  ingress: [{from: [{podSelector: {matchLabels: {app: new}}}]}]
`), 0o600)
	mustCtl(t, "sim", "apply", "--name", name, "-f", extra)
	if ps := pods(t, name); len(ps) != 3 || ps["shop/new"].IP == "" {
		t.Fatalf("after apply: %+v", ps)
	}
	probe := func(from string) string {
		out, _, _ := ctl(t, "sim", "probe", "--name", name, "--from", from, "--to", "shop/front", "--port", "80", "--timeout", "500ms")
		return strings.TrimSpace(out)
	}
	// The agent follows its inputs within a resync interval (5s).
	eventually := func(from, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for probe(from) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s -> shop/front: not %s within 10s", from, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	eventually("shop/new", "reachable")
	eventually("shop/back", "unreachable")
	newNetns := pods(t, name)["shop/new"].Netns
	mustCtl(t, "sim", "delete", "--name", name, "-f", extra)
	if ps := pods(t, name); len(ps) != 2 {
		t.Fatalf("after delete: %+v", ps)
	}
	if _, err := os.Stat(newNetns); !os.IsNotExist(err) {
		t.Fatalf("deleted pod's namespace %s still exists", newNetns)
	}
	eventually("shop/back", "reachable") // the policy went with the delete

	// A second sim runs beside the first.
	other := simName(t, "cli2")
	t.Cleanup(func() { _ = sim.Down(other) })
	mustCtl(t, "sim", "up", "--cluster", dir, "--name", other)
	if len(pods(t, other)) != 2 || len(pods(t, name)) != 2 {
		t.Fatal("two sims side by side")
	}
	mustCtl(t, "sim", "down", "--name", other)

	// A crash: every process killed -9, then up again cleans and works.
	st, err := sim.Load(name)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(st.AgentPID, syscall.SIGKILL)
	for _, p := range st.Pods {
		syscall.Kill(p.ServerPID, syscall.SIGKILL)
	}
	mustCtl(t, "sim", "up", "--cluster", dir, "--name", name)
	if out := probe("shop/back"); out != "reachable" {
		t.Fatalf("after a crash and up again: %s", out)
	}

	// down removes everything, twice is fine.
	mustCtl(t, "sim", "down", "--name", name)
	mustCtl(t, "sim", "down", "--name", name)
	if after := leftovers(name); len(after) != len(before) {
		t.Fatalf("left behind after sim down: %v (before up: %v)", after, before)
	}
	if after := leftovers(other); len(after) != 0 {
		t.Fatalf("second sim left behind: %v", after)
	}
	if _, _, code := ctl(t, "sim", "pods", "--name", name); code == 0 {
		t.Fatal("sim pods after down succeeded")
	}
}
