package realnode

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// hostView is what the machine's own network namespace and host-wide
// sysctls look like; the harness must change none of it.
func hostView(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"-o", "addr"}, {"route", "show", "table", "all"}, {"rule"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	for _, k := range []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/nf_conntrack_max"} {
		v, _ := os.ReadFile("/proc/sys/" + k)
		fmt.Fprintf(&b, "%s=%s", k, v)
	}
	return b.String()
}

// leftovers lists what a node of that name left on the machine.
func leftovers(c *realnode.Config) []string {
	var left []string
	for _, ns := range []string{c.Netns(), c.VPCNetns()} {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			left = append(left, "netns "+ns)
		}
	}
	cg, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", c.Name))
	for _, d := range cg {
		left = append(left, "cgroup "+d)
	}
	if _, err := os.Stat(c.Dir()); err == nil {
		left = append(left, "folder "+c.Dir())
	}
	return left
}

// TestRerunAfterCrash: the harness killed with SIGKILL halfway through
// `up` (the kubelet just started) leaves a half node; `up` again brings a
// Ready node with the agent, and `down` leaves nothing of it, with the
// machine's own network and sysctls as they were.
func TestRerunAfterCrash(t *testing.T) {
	rntest.Need(t)
	image, archive, err := rntest.AgentImage()
	if err != nil {
		t.Fatal(err)
	}
	root, err := rntest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "realnode")
	if out, err := exec.Command("go", "build", "-o", bin, filepath.Join(root, "hack/realnode")).CombinedOutput(); err != nil {
		t.Fatalf("go build hack/realnode: %v: %s", err, out)
	}
	c := &realnode.Config{Name: fmt.Sprintf("rnc%d", os.Getpid()%100000)}
	c.Defaults()
	t.Cleanup(func() { _ = realnode.Down(c) })
	before := hostView(t)
	up := func() *exec.Cmd {
		cmd := exec.Command(bin, "up", "-name", c.Name, "-image", image, "-image-archive", archive,
			"-manifest", filepath.Join(root, "manifests/terway.yml"))
		cmd.Dir = root
		return cmd
	}

	crash := up()
	stderr, err := crash.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := crash.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "daemon=kubelet") {
			_ = crash.Process.Kill()
			killed = true
			break
		}
	}
	_ = crash.Wait()
	if !killed {
		t.Fatal("the first up ended before it started the kubelet")
	}
	if left := leftovers(c); len(left) == 0 {
		t.Fatal("the killed up left nothing behind: the rerun proves nothing")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	again := up()
	if out, err := again.CombinedOutput(); err != nil {
		t.Fatalf("up after the crash: %v\n%s", err, out)
	}
	ready, err := c.Kubectl(ctx, "", "get", "node", c.Name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
	if err != nil || ready != "True" {
		t.Fatalf("node %s after the rerun: Ready=%q (%v)", c.Name, ready, err)
	}
	if err := realnode.Down(c); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left := leftovers(c); len(left) > 0 {
		t.Errorf("down left %v", left)
	}
	_ = os.RemoveAll(c.Dir() + ".logs")
	if after := hostView(t); after != before {
		t.Errorf("the machine's network or sysctls changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
