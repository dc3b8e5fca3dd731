package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Debian's docker.io (hack/install-deps.sh docker): the daemon and the
// client of the same release, by path, so that no other docker client on
// the machine is used.
const (
	dockerdBin = "/usr/sbin/dockerd"
	dockerBin  = "/usr/bin/docker"
)

// TestDockerLoad: `docker load` reads the archive `make image` writes, and
// `docker image inspect` shows the image as built: its name, its ID (the
// config's digest), terwayd as the entrypoint, the labels, the platform
// and the one layer.
//
// The daemon runs only for the test and touches nothing of the machine:
// in a network namespace of its own with no bridge, no iptables, no IP
// forwarding or masquerading; its data root, exec root, socket, pid file,
// daemon.json and the client's configuration in a temporary folder; the
// vfs storage driver (plain files, no mounts). It is stopped by its PID,
// its containerd too, and everything is removed, also on failure. Needs
// root; installs docker.io through hack/install-deps.sh when it is missing
// (TERWAY_DOCKER_INSTALL=0 skips instead).
func TestDockerLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the image and starts dockerd")
	}
	if os.Geteuid() != 0 {
		t.Skip("dockerd needs root")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dockerdBin); err != nil {
		if os.Getenv("TERWAY_DOCKER_INSTALL") == "0" {
			t.Skipf("%s missing and TERWAY_DOCKER_INSTALL=0 (hack/install-deps.sh docker installs it)", dockerdBin)
		}
		out, err := exec.Command("bash", filepath.Join(root, "hack/install-deps.sh"), "docker").CombinedOutput()
		if err != nil {
			t.Fatalf("hack/install-deps.sh docker: %v\n%s", err, out)
		}
		t.Logf("hack/install-deps.sh docker: %s", strings.TrimSpace(string(out)))
	}

	dir := t.TempDir()
	name := "registry.example.com/terway-reconciler:docker-load"
	labels := map[string]string{"org.opencontainers.image.version": "v0.0.0-test", "org.opencontainers.image.revision": "0123abc"}
	s, err := Build(context.Background(), Options{
		Name: name, Out: filepath.Join(dir, "image.tar"), Root: root, Epoch: 1700000000,
		CACerts: CACertsPath, Arch: "amd64", Labels: labels,
	})
	if err != nil {
		t.Fatal(err)
	}

	hostBefore := hostNetwork(t)
	d := startDockerd(t, filepath.Join(dir, "docker"))
	out := d.docker(t, "load", "-i", filepath.Join(dir, "image.tar"))
	if !strings.Contains(out, "Loaded image: "+name) {
		t.Errorf("docker load: want %q in its output, got:\n%s", "Loaded image: "+name, out)
	}
	var inspect []struct {
		ID           string   `json:"Id"`
		RepoTags     []string `json:"RepoTags"`
		Os           string   `json:"Os"`
		Architecture string   `json:"Architecture"`
		Config       struct {
			Entrypoint []string          `json:"Entrypoint"`
			Env        []string          `json:"Env"`
			Labels     map[string]string `json:"Labels"`
		} `json:"Config"`
		RootFS struct {
			Layers []string `json:"Layers"`
		} `json:"RootFS"`
	}
	raw := d.docker(t, "image", "inspect", name)
	if err := json.Unmarshal([]byte(raw), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect %s: %v:\n%s", name, err, raw)
	}
	img := inspect[0]
	if img.ID != s.Result.Config.Digest {
		t.Errorf("image ID %s, want the config's digest %s", img.ID, s.Result.Config.Digest)
	}
	if !slices.Contains(img.RepoTags, name) {
		t.Errorf("RepoTags %v, want %s", img.RepoTags, name)
	}
	if want := []string{"/usr/local/bin/terwayd"}; !slices.Equal(img.Config.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", img.Config.Entrypoint, want)
	}
	for k, v := range labels {
		if img.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q (labels %v)", k, img.Config.Labels[k], v, img.Config.Labels)
		}
	}
	if img.Os != "linux" || img.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", img.Os, img.Architecture)
	}
	if want := []string{s.Result.DiffID}; !slices.Equal(img.RootFS.Layers, want) {
		t.Errorf("layers %v, want %v", img.RootFS.Layers, want)
	}
	t.Logf("docker %s loaded %s: ID %s, entrypoint %v, labels %v", d.version, name, img.ID, img.Config.Entrypoint, img.Config.Labels)

	d.stop(t)
	if after := hostNetwork(t); after != hostBefore {
		t.Errorf("the machine's network changed while dockerd ran:\nbefore:\n%s\nafter:\n%s", hostBefore, after)
	}
}

// dockerd is a daemon started for one test.
type dockerd struct {
	dir, netns, sock string
	cmd              *exec.Cmd
	done             chan struct{}
	version          string
	stopped          bool
}

// startDockerd starts dockerd in a new network namespace with all its
// state under dir, waits until it answers, and registers its stop.
func startDockerd(t *testing.T, dir string) *dockerd {
	t.Helper()
	d := &dockerd{dir: dir, netns: fmt.Sprintf("tdk%d", os.Getpid()), sock: filepath.Join(dir, "docker.sock"), done: make(chan struct{})}
	for _, sub := range []string{"data", "exec", "cli"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Its own daemon.json: /etc/docker/daemon.json, if any, is not read.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "add", d.netns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", d.netns, err, out)
	}
	t.Cleanup(func() {
		d.stop(t)
		if out, err := exec.Command("ip", "netns", "del", d.netns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", d.netns, err, out)
		}
	})
	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The network namespace by nsenter and a private mount namespace by
	// unshare (whatever dockerd mounts stays there), not `ip netns exec`,
	// which remounts /sys and so hides the cgroup hierarchies dockerd
	// wants to see. Both exec in place: the PID is dockerd's.
	d.cmd = exec.Command("nsenter", "--net=/run/netns/"+d.netns, "unshare", "--mount", "--propagation", "private", dockerdBin,
		"--host", "unix://"+d.sock, "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "--config-file", filepath.Join(dir, "daemon.json"),
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--storage-driver=vfs", "--oom-score-adjust=0", "--log-level=warn")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := d.run("version", "--format", "{{.Server.Version}}")
		if err == nil {
			d.version = strings.TrimSpace(out)
			return d
		}
		select {
		case <-d.done:
			t.Fatalf("dockerd exited: %s", d.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not answer within 60s: %v: %s\n%s", err, out, d.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// run runs the client against this daemon only.
func (d *dockerd) run(args ...string) (string, error) {
	cmd := exec.Command(dockerBin, append([]string{"--host", "unix://" + d.sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(d.dir, "cli"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (d *dockerd) docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.run(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s\ndockerd log:\n%s", strings.Join(args, " "), err, out, d.log())
	}
	return out
}

func (d *dockerd) log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	return string(b)
}

// stop ends dockerd by its PID (SIGTERM, SIGKILL after 20 s), then the
// containerd it started, by the PID in its pid file, if it outlived it.
func (d *dockerd) stop(t *testing.T) {
	t.Helper()
	if d.stopped || d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.stopped = true
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Errorf("dockerd (pid %d) did not stop on SIGTERM within 20s; killing it", d.cmd.Process.Pid)
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	b, err := os.ReadFile(filepath.Join(d.dir, "exec", "containerd", "containerd.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "containerd" {
		t.Logf("dockerd's containerd (pid %d) outlived it; killing it", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// hostNetwork is the machine's own links, addresses, routes and rules.
func hostNetwork(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"-o", "addr"}, {"route", "show", "table", "all"}, {"rule"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String()
}
