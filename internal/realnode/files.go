package realnode

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/terway-reconciler/terway/internal/kubepki"
)

// Static tokens of the node's two clients. They only exist inside the
// node's namespace, for the node's lifetime.
const (
	adminToken      = "realnode-admin-token"
	nodeTokenPrefix = "realnode-node-token"
)

// nodeToken is the token of this node's kubelet.
func (c *Config) nodeToken() string { return nodeTokenPrefix + "-" + c.Name }

// kubeletSysctls are the host-wide sysctls the kubelet sets at start
// (container_manager_linux.go, setupKernelTunables) with the values it
// wants. Each gets a private file holding that value, bind-mounted over it
// in the node's mount namespace: the kubelet reads what it wants and writes
// nothing to the machine.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// writeFiles writes the PKI, the kubeconfigs and the components'
// configurations into the node's folder.
func (c *Config) writeFiles() error {
	dir := c.Dir()
	for _, d := range []string{"pki", "logs", "pids", "sysctl", "etc-upper", "etc-work", "etcd", "containerd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	pki := filepath.Join(dir, "pki")
	files := map[string]string{
		"admin.kubeconfig":   c.kubeconfig(adminToken),
		"kubelet.kubeconfig": c.kubeconfig(c.nodeToken()),
		"containerd.toml":    c.containerdConfig(),
		"kubelet.yaml":       c.kubeletConfig(),
		"kube-proxy.yaml":    c.kubeProxyConfig(),
	}
	if c.control != nil {
		// A worker trusts its control plane's CA and has no PKI of its own.
		if err := copyFile(filepath.Join(c.control.Dir(), "pki", "ca.crt"), filepath.Join(pki, "ca.crt"), 0o644); err != nil {
			return fmt.Errorf("realnode: node %s: the control plane's CA: %w", c.Name, err)
		}
	} else {
		sans := []net.IP{net.IP(c.serviceIP(1).AsSlice()), net.IP(c.NodeIP.AsSlice())}
		if _, err := kubepki.New(pki, sans); err != nil {
			return err
		}
		// Each node's kubelet has its own identity, system:node:<name>,
		// which the NodeRestriction admission limits to its own objects.
		tokens := fmt.Sprintf("%s,admin,admin,system:masters\n", adminToken)
		for _, n := range append([]*Config{c}, c.Workers()...) {
			tokens += fmt.Sprintf("%s,system:node:%s,node-%s,system:nodes\n", n.nodeToken(), n.Name, n.Name)
		}
		files["pki/tokens.csv"] = tokens
	}
	for k, v := range kubeletSysctls {
		files["sysctl/"+strings.ReplaceAll(k, "/", "_")] = v + "\n"
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// kubeconfig is a client's, for the control plane's API server.
func (c *Config) kubeconfig(token string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: realnode, cluster: {server: "https://%s:6443", certificate-authority: %s}}]
users: [{name: u, user: {token: %s}}]
contexts: [{name: realnode, context: {cluster: realnode, user: u}}]
current-context: realnode
`, c.apiServer().NodeIP, filepath.Join(c.Dir(), "pki", "ca.crt"), token)
}

// containerdConfig: the CNI folders are the standard ones the DaemonSet's
// init container installs into (private to the node's mount namespace).
func (c *Config) containerdConfig() string {
	return fmt.Sprintf(`version = 3
root = %q
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # CAP_SYS_RESOURCE is not in this machine's bounding set: nothing may
  # lower oom_score_adj below containerd's own, or runc init fails.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = %q
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
    max_conf_num = 1
    # lo is brought up by containerd itself: the node has no loopback CNI
    # binary, only what the DaemonSet installs.
    use_internal_loopback = true
`, filepath.Join(c.Dir(), "containerd"), PauseImage, c.binaries()["runc"])
}

// kubeletConfig: cgroup v1 (every controller is bound to v1 here), no
// negative oom_score_adj (see containerdConfig), the cgroup root of this
// node, and the API server's view of the node by its IP (no DNS here).
func (c *Config) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
oomScoreAdj: 0
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s/pods
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: /etc/resolv.conf
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
`, c.Name, c.NodeIP, c.serviceIP(10))
}

// kubeProxyConfig: nftables mode; conntrack sizes and timeouts left alone,
// so that kube-proxy writes no host-wide conntrack sysctls.
func (c *Config) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: %s
clusterCIDR: %s
clientConnection: {kubeconfig: %s}
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
`, c.Name, c.PodCIDR, c.Kubeconfig())
}

// mountScript makes the node's private mount namespace (run in it, as
// root): its own /run, /var/lib, /var/log, /opt; /etc as an overlay so
// /etc/cni exists without touching the machine's /etc; the cgroup
// hierarchies `ip netns exec` hid when it remounted /sys; the three sysctl
// files.
func (c *Config) mountScript(hierarchies []cgroupMount) string {
	dir := c.Dir()
	var b strings.Builder
	b.WriteString("set -eu\n")
	// The machine's mounts below these folders (its /run/netns, say) are
	// detached first, in this namespace only (its propagation is private):
	// a hidden copy would still be found by path, and the runtime would
	// judge /run/netns's propagation by it.
	// A lazy unmount takes the mounts below it along, and a path mounted
	// twice is listed twice: an entry may be gone by its turn, which is no
	// failure. What must hold is that none is left.
	b.WriteString(`mounts() { awk '$5 ~ "^/(run|var/lib|var/log|opt)/" {print $5}' /proc/self/mountinfo | sort -r; }` + "\n")
	b.WriteString(`mounts | while read -r m; do umount -l "$m" 2>/dev/null || true; done` + "\n")
	b.WriteString(`left=$(mounts); if [ -n "$left" ]; then echo "machine mounts still in the node's view: $left" >&2; exit 1; fi` + "\n")
	for _, d := range []string{"/run", "/var/lib", "/var/log", "/opt"} {
		fmt.Fprintf(&b, "mount -t tmpfs -o mode=755 realnode %s\n", d)
	}
	b.WriteString("mkdir -p /run/netns /run/containerd /var/lib/kubelet /var/lib/cni /opt/cni/bin\n")
	// The DaemonSet mounts /var/run/netns with HostToContainer propagation
	// (pod namespaces made after the agent started), which the runtime
	// allows only from a shared mount.
	b.WriteString("mount --bind /run/netns /run/netns && mount --make-shared /run/netns\n")
	fmt.Fprintf(&b, "mount -t overlay realnode-etc -o lowerdir=/etc,upperdir=%s/etc-upper,workdir=%s/etc-work /etc\n", dir, dir)
	b.WriteString("mkdir -p /etc/cni/net.d\n")
	b.WriteString("printf 'runtime-endpoint: unix:///run/containerd/containerd.sock\\nimage-endpoint: unix:///run/containerd/containerd.sock\\n' >/etc/crictl.yaml\n")
	b.WriteString("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup\n")
	for _, h := range hierarchies {
		fmt.Fprintf(&b, "mkdir -p /sys/fs/cgroup/%s && mount -t %s -o %s cgroup /sys/fs/cgroup/%s\n", h.dir, h.fstype, h.options, h.dir)
	}
	for k := range kubeletSysctls {
		fmt.Fprintf(&b, "mount --bind %s/sysctl/%s /proc/sys/%s\n", dir, strings.ReplaceAll(k, "/", "_"), k)
	}
	return b.String()
}
