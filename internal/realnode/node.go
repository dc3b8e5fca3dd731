package realnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The node's link: a veth pair with both ends inside its namespace (this
// kernel has no dummy links), holding the node IP and a default route that
// leads nowhere, so nothing leaves the namespace.
const (
	nodeLink = "rn0"
	peerLink = "rn0p"
)

// Up starts the node and returns once the control plane answers and the
// kubelet has registered. Whatever a previous run of the same name left
// (after a crash, say) is removed first.
func Up(ctx context.Context, c *Config) error {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	if m := c.MissingAssets(); len(m) > 0 {
		return fmt.Errorf("realnode: the asset cache %s lacks %s: run hack/node-assets.sh (make node-assets)", c.AssetsRoot, strings.Join(m, ", "))
	}
	if err := Down(c); err != nil {
		return fmt.Errorf("realnode: clearing the previous run: %w", err)
	}
	if err := c.writeFiles(); err != nil {
		return err
	}
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	if err := c.makeCgroups(hs); err != nil {
		return err
	}
	if c.Nodes > 1 {
		if err := c.makeVPC(ctx); err != nil {
			return err
		}
	}
	if err := c.makeNamespaces(ctx, hs); err != nil {
		return err
	}
	if c.Emulator != "" {
		if err := c.startEmulator(ctx); err != nil {
			return err
		}
	}

	pki := filepath.Join(c.Dir(), "pki")
	bins := c.binaries()
	if err := c.start("etcd", bins["etcd"], "--name", c.Name, "--data-dir", filepath.Join(c.Dir(), "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", c.Name+"=http://127.0.0.1:2380", "--unsafe-no-fsync"); err != nil {
		return err
	}
	if err := c.start("kube-apiserver", bins["kube-apiserver"], "--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--advertise-address="+c.NodeIP.String(), "--secure-port=6443",
		"--tls-cert-file="+pki+"/apiserver.crt", "--tls-private-key-file="+pki+"/apiserver.key",
		"--client-ca-file="+pki+"/ca.crt", "--token-auth-file="+pki+"/tokens.csv",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki+"/sa.pub", "--service-account-signing-key-file="+pki+"/sa.key",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(), "--allow-privileged=true", "--profiling=false",
		// exec and logs: no DNS here to resolve the node's name.
		"--kubelet-preferred-address-types=InternalIP,Hostname"); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "kube-apiserver", 120*time.Second, "kubectl", "get", "--raw", "/readyz"); err != nil {
		return err
	}
	if err := c.start("kube-controller-manager", bins["kube-controller-manager"], "--kubeconfig="+c.Kubeconfig(),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--root-ca-file="+pki+"/ca.crt",
		"--service-account-private-key-file="+pki+"/sa.key", "--use-service-account-credentials=true",
		"--cluster-cidr="+c.PodCIDR.String(), "--allocate-node-cidrs=true", "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+c.ServiceCIDR.String(), "--profiling=false"); err != nil {
		return err
	}
	if err := c.start("kube-scheduler", bins["kube-scheduler"], "--kubeconfig="+c.Kubeconfig(),
		"--leader-elect=false", "--bind-address=127.0.0.1", "--profiling=false"); err != nil {
		return err
	}
	if err := c.startNode(ctx); err != nil {
		return err
	}
	for _, w := range c.Workers() {
		if err := w.upWorker(ctx, hs); err != nil {
			return err
		}
	}
	if c.Nodes > 1 {
		return c.routePodCIDRs(ctx)
	}
	return nil
}

// startNode starts what makes the node a node: containerd, with the images
// imported before the kubelet starts (nothing is pulled), the kubelet and
// kube-proxy; it returns once the node has registered.
func (c *Config) startNode(ctx context.Context) error {
	bins := c.binaries()
	if err := c.start("containerd", bins["containerd"], "--config", filepath.Join(c.Dir(), "containerd.toml")); err != nil {
		return err
	}
	if err := c.waitFor(ctx, "containerd", 60*time.Second, bins["ctr"], "version"); err != nil {
		return err
	}
	for _, img := range c.Images {
		t0 := time.Now()
		if out, err := c.execIn(ctx, bins["ctr"], "-n", "k8s.io", "images", "import", "--platform", "linux/amd64", img); err != nil {
			return fmt.Errorf("realnode: ctr images import %s: %w: %s", img, err, out)
		}
		slog.Info("realnode: image imported", "node", c.Name, "archive", img, "took", time.Since(t0).Round(time.Millisecond))
	}
	if err := c.startKubelet(); err != nil {
		return err
	}
	if err := c.start("kube-proxy", bins["kube-proxy"], "--config="+filepath.Join(c.Dir(), "kube-proxy.yaml")); err != nil {
		return err
	}
	return c.waitFor(ctx, "node "+c.Name+" registered", 120*time.Second, "kubectl", "get", "node", c.Name)
}

// makeNamespaces makes the node's network namespace and its private mount
// namespace, held by the holder process, with the node's mounts inside.
func (c *Config) makeNamespaces(ctx context.Context, hs []cgroupMount) error {
	if err := c.makeNetns(ctx); err != nil {
		return err
	}
	// The holder keeps the private mount namespace alive; every daemon
	// enters it (and the network namespace) through nsenter.
	holder, err := c.startHolder()
	if err != nil {
		return err
	}
	if out, err := c.execIn(ctx, "sh", "-c", c.mountScript(hs)); err != nil {
		return fmt.Errorf("realnode: mounts in node %s's namespace: %w: %s", c.Name, err, out)
	}
	slog.Info("realnode: namespaces ready", "node", c.Name, "holder", holder)
	return nil
}

func (c *Config) startKubelet() error {
	return c.start("kubelet", c.binaries()["kubelet"], "--config="+filepath.Join(c.Dir(), "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(c.Dir(), "kubelet.kubeconfig"), "--hostname-override="+c.Name,
		"--node-ip="+c.NodeIP.String(), "-v=2")
}

// RestartKubelet stops the node's kubelet (SIGTERM, by its PID) and starts
// it again with the same flags, as an upgrade or a crash does: it removes
// and re-creates its device-plugin socket, and every device plugin must
// register again. Returns once the node is Ready again.
func RestartKubelet(ctx context.Context, c *Config) error {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "pids", "kubelet"))
	if err != nil {
		return fmt.Errorf("realnode: node %s has no kubelet: %w", c.Name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("realnode: kubelet pid file %q", b)
	}
	// The pid file names the kubelet itself: sh, nsenter and env exec in
	// place. Check before signalling, in case the PID was reused.
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); filepath.Base(exe) != "kubelet" {
		return fmt.Errorf("realnode: pid %d is %q, not the kubelet", pid, exe)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("realnode: stop kubelet %d: %w", pid, err)
	}
	for deadline := time.Now().Add(30 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			return fmt.Errorf("realnode: kubelet %d still runs 30s after SIGTERM", pid)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.startKubelet(); err != nil {
		return err
	}
	return c.waitFor(ctx, "node Ready after the kubelet's restart", 2*time.Minute,
		"kubectl", "wait", "--for=condition=Ready", "node/"+c.Name, "--timeout=5s")
}

// alive says whether the process runs (a zombie no longer does).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// makeNetns creates the node's network namespace with its link and route:
// alone, a veth with both ends inside; in a cluster, a veth into the vpc
// namespace (cluster.go).
func (c *Config) makeNetns(ctx context.Context) error {
	ns := c.Netns()
	steps := [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	}
	if c.inCluster() {
		return run(ctx, append(steps, c.clusterLinkSteps()...))
	}
	return run(ctx, append(steps,
		[]string{"ip", "-n", ns, "link", "add", nodeLink, "type", "veth", "peer", "name", peerLink},
		[]string{"ip", "-n", ns, "link", "set", peerLink, "up"},
		[]string{"ip", "-n", ns, "addr", "add", c.NodeIP.String() + "/24", "dev", nodeLink},
		[]string{"ip", "-n", ns, "link", "set", nodeLink, "up"},
		[]string{"ip", "-n", ns, "route", "add", "default", "dev", nodeLink}))
}

// startHolder starts the process that owns the node's private mount
// namespace, inside its network namespace, and waits until it is there.
func (c *Config) startHolder() (int, error) {
	pid, err := c.spawn("holder", "ip", "netns", "exec", c.Netns(), "unshare", "-m", "--propagation", "private", "sleep", "infinity")
	if err != nil {
		return 0, err
	}
	own, _ := os.Readlink("/proc/self/ns/mnt")
	for range 100 {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		mnt, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if strings.HasSuffix(exe, "/sleep") && mnt != "" && mnt != own {
			return pid, os.WriteFile(filepath.Join(c.Dir(), "pids", "holder"), []byte(strconv.Itoa(pid)), 0o644)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("realnode: the namespace holder (pid %d) did not enter its namespaces", pid)
}

// HolderPID is the process holding the node's namespaces:
// /proc/PID/ns/net is the node's network namespace.
func (c *Config) HolderPID() (int, error) { return c.holderPID() }

func (c *Config) holderPID() (int, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "pids", "holder"))
	if err != nil {
		return 0, fmt.Errorf("realnode: node %s is not up: %w", c.Name, err)
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// enter is the nsenter prefix that runs a command in the node's network
// and mount namespaces, with the node's binaries first in PATH.
func (c *Config) enter() ([]string, error) {
	pid, err := c.holderPID()
	if err != nil {
		return nil, err
	}
	// nsenter -m would start in the holder's working directory: keep the
	// caller's, so that relative paths mean what they say.
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	return []string{"nsenter", "-t", strconv.Itoa(pid), "-m", "-n", "--wd=" + wd, "--", "env", "PATH=" + c.path(),
		"KUBECONFIG=" + c.Kubeconfig(), "CONTAINER_RUNTIME_ENDPOINT=unix:///run/containerd/containerd.sock",
		"CONTAINERD_ADDRESS=/run/containerd/containerd.sock"}, nil
}

// path puts the node's binaries (the shim and runc among them) first.
func (c *Config) path() string {
	seen := map[string]bool{}
	var dirs []string
	for _, p := range c.binaries() {
		if d := filepath.Dir(p); !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	return strings.Join(append(dirs, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"), ":")
}

// Command is a command to run inside the node's namespaces (kubectl,
// crictl, ctr, nft, ip ... are found in its PATH).
func (c *Config) Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	pre, err := c.enter()
	if err != nil {
		return nil, err
	}
	all := append(pre, args...)
	return exec.CommandContext(ctx, all[0], all[1:]...), nil
}

// execIn runs a command inside the node and returns its combined output.
func (c *Config) execIn(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := c.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	return cmd.CombinedOutput()
}

// Kubectl runs kubectl as the admin inside the node, stdin optional.
func (c *Config) Kubectl(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd, err := c.Command(ctx, append([]string{"kubectl"}, args...)...)
	if err != nil {
		return "", err
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// spawn starts a detached process in the node's daemons cgroup (it joins
// before it execs, so all it forks is the node's too), logging to
// logs/<name>.log, and records its PID.
func (c *Config) spawn(name string, args ...string) (int, error) {
	logf, err := os.OpenFile(filepath.Join(c.Dir(), "logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	if err := closeInheritedOnExec(); err != nil {
		return 0, err
	}
	script := `echo $$ > "$0" && exec "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, c.daemonsProcs()}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("realnode: start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it exits while we run; the node outlives this process.
	go func() { _ = cmd.Wait() }()
	return pid, os.WriteFile(filepath.Join(c.Dir(), "pids", name), []byte(strconv.Itoa(pid)), 0o644)
}

// start runs a daemon inside the node.
func (c *Config) start(name string, args ...string) error {
	pre, err := c.enter()
	if err != nil {
		return err
	}
	pid, err := c.spawn(name, append(pre, args...)...)
	if err == nil {
		slog.Info("realnode: started", "daemon", name, "pid", pid)
	}
	return err
}

// waitFor retries a command inside the node until it succeeds.
func (c *Config) waitFor(ctx context.Context, what string, bound time.Duration, args ...string) error {
	t0 := time.Now()
	var out []byte
	var err error
	for time.Since(t0) < bound {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err = c.execIn(cctx, args...)
		cancel()
		if err == nil {
			slog.Info("realnode: ready", "what", what, "after", time.Since(t0).Round(time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("realnode: %s not ready after %s: %v: %s", what, bound, err, bytes.TrimSpace(out))
}

// Down ends every process of the node (by its cgroup), and of its
// cluster's workers, removes their cgroups, their network namespaces (the
// nodes', the cloud's vpc and the cluster's vpc) and their folders (the logs are kept beside it, in
// <name>.logs). It is idempotent and works after a crash at any point.
func Down(c *Config) error {
	c.Defaults()
	if err := c.Validate(); err != nil {
		return err
	}
	var errs []error
	// A cluster's workers go first (they follow a fixed naming, so a crash
	// that lost the node count leaves none behind), the vpc namespace last.
	if c.control == nil {
		for i := 2; i <= maxNodes; i++ {
			if w := c.worker(i); w.Validate() == nil {
				if err := Down(w); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := c.killAll(30 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := c.removeCgroups(); err != nil {
		errs = append(errs, err)
	}
	// The vpc namespaces exist only when the node had a cloud or was the
	// first of a cluster; they go whatever the configuration says now (a
	// crash may have left them).
	nss := []string{c.Netns(), c.VPCNetns()}
	if c.control == nil {
		nss = append(nss, c.ClusterNetns())
	}
	for _, ns := range nss {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("realnode: ip netns del %s: %w: %s", ns, err, out))
			}
		}
	}
	dir := c.Dir()
	if _, err := os.Stat(dir); err == nil {
		logs := dir + ".logs"
		_ = os.RemoveAll(logs)
		if err := os.Rename(filepath.Join(dir, "logs"), logs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("realnode: remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
