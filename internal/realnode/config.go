// Package realnode runs a real single-node Kubernetes cluster on this
// machine for the end-to-end tests: etcd, kube-apiserver,
// kube-controller-manager (allocating podCIDRs), kube-scheduler, containerd
// with runc, the kubelet and kube-proxy in nftables mode, all inside one
// network namespace and one private mount namespace of their own, so that
// nothing changes the machine's own network, mounts or host-wide sysctls.
// The project's agent comes up on it only as its DaemonSet.
//
// Every process of a node lives in the pids cgroup /<name> (the daemons in
// /<name>/daemons, pods under the kubelet's cgroupRoot /<name>/pods): Down
// ends exactly those, whatever crashed before, and removes the cgroups, the
// namespaces and the node's folder.
package realnode

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
)

// Versions of what the node runs; hack/node-assets.sh builds the same ones.
const (
	K8sVersion        = "v1.37.2"
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
	CrictlVersion     = "v1.37.0"
	// PauseImage is containerd 2.4's default sandbox image, set explicitly
	// in its configuration as well.
	PauseImage = "registry.k8s.io/pause:3.10.2"
	// AgnhostImage is the tag test/utils/image/manifest.go of v1.37.2 names.
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
)

// Config says which node to run and where its binaries are.
type Config struct {
	// Name names the node, its network namespace ("rn-<name>"), its cgroup
	// and its folder under StateDir. Letters, digits and '-', at most 20.
	Name string
	// StateDir holds each node's folder (default /var/tmp/terway-realnode).
	StateDir string
	// AssetsRoot is hack/node-assets.sh's cache root
	// (~/.cache/terway-reconciler).
	AssetsRoot string
	// NodeIP is the node's address inside its namespace; PodCIDR the
	// cluster CIDR the controller manager cuts /24s from; ServiceCIDR the
	// Services' range. All inside 198.18.0.0/15, which exists only in the
	// node's namespace.
	NodeIP      netip.Addr
	PodCIDR     netip.Prefix
	ServiceCIDR netip.Prefix
	// Images are image archives imported into containerd before the
	// kubelet starts (the pause and agnhost ones are added by Up).
	Images []string
	// Emulator, when set, is a terwayctl binary: the node then has a cloud,
	// the project's emulator run inside its network namespace (cloud.go),
	// for the agent in ENI multi-IP mode or with exclusive ENIs.
	Emulator string
	// Nodes is how many nodes the cluster has (default 1). This node runs
	// the control plane and a kubelet; with more, Workers are nodes of
	// their own that join its API server, and every node's link leads into
	// the cluster's vpc namespace (cluster.go).
	Nodes int

	// control is the node whose API server a worker joins (nil on that
	// node itself); index is the worker's number (2, 3 ...).
	control *Config
	index   int
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Defaults fills what is unset.
func (c *Config) Defaults() {
	if c.Name == "" {
		c.Name = "realnode"
	}
	if c.StateDir == "" {
		c.StateDir = "/var/tmp/terway-realnode"
	}
	if c.AssetsRoot == "" {
		c.AssetsRoot = DefaultAssetsRoot()
	}
	if !c.NodeIP.IsValid() {
		c.NodeIP = netip.MustParseAddr("198.18.0.1")
	}
	if !c.PodCIDR.IsValid() {
		c.PodCIDR = netip.MustParsePrefix("198.18.128.0/17")
	}
	if !c.ServiceCIDR.IsValid() {
		c.ServiceCIDR = netip.MustParsePrefix("198.19.0.0/16")
	}
	if c.Nodes == 0 {
		c.Nodes = 1
	}
}

// Validate checks the name, which becomes a path, a netns and a cgroup.
func (c *Config) Validate() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("realnode: name %q: want lower-case letters, digits and '-', at most 20", c.Name)
	}
	// 0 is the default, one node (Defaults sets it).
	if c.Nodes < 0 || c.Nodes > maxNodes {
		return fmt.Errorf("realnode: node %s: nodes %d: want 1 to %d", c.Name, c.Nodes, maxNodes)
	}
	if c.Nodes > 1 {
		if c.Emulator != "" {
			return fmt.Errorf("realnode: node %s: nodes %d: the cloud emulator serves one node only (-emulator wants nodes 1)", c.Name, c.Nodes)
		}
		if w := c.workerName(c.Nodes); !nameRE.MatchString(w) {
			return fmt.Errorf("realnode: node %s: nodes %d: the worker name %q is too long (at most 20): shorten the name", c.Name, c.Nodes, w)
		}
		if !c.NodeIP.Is4() {
			return fmt.Errorf("realnode: node %s: node IP %s: a cluster's nodes want IPv4", c.Name, c.NodeIP)
		}
		if h := int(c.NodeIP.As4()[3]); h == 0 || h+c.Nodes-1 >= gatewayHost {
			return fmt.Errorf("realnode: node %s: node IP %s: the %d nodes' addresses must stay below .%d of its /24", c.Name, c.NodeIP, c.Nodes, gatewayHost)
		}
	}
	return nil
}

// DefaultAssetsRoot is where hack/node-assets.sh caches by default.
func DefaultAssetsRoot() string {
	if d := os.Getenv("K8S_ASSETS_ROOT"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "terway-reconciler")
}

// Dir is the node's folder.
func (c *Config) Dir() string { return filepath.Join(c.StateDir, c.Name) }

// Netns is the name of the node's network namespace.
func (c *Config) Netns() string { return "rn-" + c.Name }

// Kubeconfig is the admin's kubeconfig (system:masters, by token). The API
// server listens on the node IP inside the namespace only: use it through
// Exec, or `ip netns exec`.
func (c *Config) Kubeconfig() string { return filepath.Join(c.Dir(), "admin.kubeconfig") }

// K8sBin is a Kubernetes binary from the cache.
func (c *Config) K8sBin(name string) string {
	return filepath.Join(c.AssetsRoot, "k8s", K8sVersion, name)
}

// binaries the node needs, by the path they are run from.
func (c *Config) binaries() map[string]string {
	ctr := filepath.Join(c.AssetsRoot, "containerd", ContainerdVersion)
	return map[string]string{
		"etcd":                    c.K8sBin("etcd"),
		"kube-apiserver":          c.K8sBin("kube-apiserver"),
		"kube-controller-manager": c.K8sBin("kube-controller-manager"),
		"kube-scheduler":          c.K8sBin("kube-scheduler"),
		"kubelet":                 c.K8sBin("kubelet"),
		"kube-proxy":              c.K8sBin("kube-proxy"),
		"kubectl":                 c.K8sBin("kubectl"),
		"agnhost":                 c.K8sBin("agnhost"),
		"containerd":              filepath.Join(ctr, "containerd"),
		"ctr":                     filepath.Join(ctr, "ctr"),
		"containerd-shim-runc-v2": filepath.Join(ctr, "containerd-shim-runc-v2"),
		"runc":                    filepath.Join(c.AssetsRoot, "runc", RuncVersion, "runc"),
		"crictl":                  filepath.Join(c.AssetsRoot, "crictl", CrictlVersion, "crictl"),
	}
}

// MissingAssets lists the binaries the cache lacks ("" when none).
func (c *Config) MissingAssets() []string {
	var missing []string
	for name, p := range c.binaries() {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}

// serviceIP is the n-th address of the Service range (1: kubernetes, 10: DNS).
func (c *Config) serviceIP(n int) netip.Addr {
	a := c.ServiceCIDR.Addr()
	for range n {
		a = a.Next()
	}
	return a
}
