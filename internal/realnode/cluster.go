package realnode

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"strings"
	"time"
)

// A cluster of more than one node (Config.Nodes > 1). The first node runs
// the control plane and a kubelet; each worker (<name>-2, <name>-3 ...) is
// a node of its own, as the first one is: its own network namespace, its
// own private mount namespace (held by its own holder), cgroups and folder,
// its own containerd (images imported before its kubelet starts), kubelet
// and kube-proxy, joined to the first node's API server as
// system:node:<worker>.
//
// The cluster's vpc namespace ("rc-<name>") stands in for the VPC: a
// bridge holding the gateway (.254 of the nodes' /24), a veth to each
// node's namespace, and a route for each node's podCIDR via that node's IP
// (the VPC route table), added once the controller manager has allocated
// it. The nodes' default routes lead into it; nothing is routed out of it.
const (
	// maxNodes bounds a cluster (and the workers Down looks for).
	maxNodes = 8
	// gatewayHost is the vpc's host number on the nodes' /24.
	gatewayHost = 254
	// vpcBridge is the vpc namespace's bridge, the nodes' subnet.
	vpcBridge = "vpc0"
)

// ClusterNetns is the name of the cluster's vpc namespace.
func (c *Config) ClusterNetns() string { return "rc-" + c.apiServer().Name }

func (c *Config) workerName(i int) string { return fmt.Sprintf("%s-%d", c.Name, i) }

// Workers are the nodes that join this node's API server (none when
// Nodes is 1, or on a worker).
func (c *Config) Workers() []*Config {
	var ws []*Config
	if c.control != nil {
		return nil
	}
	for i := 2; i <= c.Nodes; i++ {
		ws = append(ws, c.worker(i))
	}
	return ws
}

// worker is the i-th node of this node's cluster (i >= 2): the same
// caches, ranges and images, the i-th address of the nodes' subnet.
func (c *Config) worker(i int) *Config {
	ip := c.NodeIP
	for range i - 1 {
		ip = ip.Next()
	}
	return &Config{Name: c.workerName(i), StateDir: c.StateDir, AssetsRoot: c.AssetsRoot, NodeIP: ip,
		PodCIDR: c.PodCIDR, ServiceCIDR: c.ServiceCIDR, Images: c.Images, Nodes: 1, control: c, index: i}
}

// apiServer is the node that runs the control plane: the node itself, or
// the one a worker joins.
func (c *Config) apiServer() *Config {
	if c.control != nil {
		return c.control
	}
	return c
}

// inCluster says whether the node's link leads into a vpc namespace.
func (c *Config) inCluster() bool { return c.apiServer().Nodes > 1 }

// gateway is the vpc's address on the nodes' subnet.
func (c *Config) gateway() netip.Addr {
	a := c.apiServer().NodeIP.As4()
	a[3] = gatewayHost
	return netip.AddrFrom4(a)
}

// vpcLink is the name of the node's veth end in the vpc namespace.
func (c *Config) vpcLink() string { return fmt.Sprintf("node%d", max(c.index, 1)) }

// makeVPC creates the cluster's vpc namespace: the nodes' subnet on a
// bridge with the gateway's address, forwarding on, and no ICMP redirects,
// so that a node's traffic to another node's pods takes the route table's
// way rather than being told to go around it. It has no link out.
func (c *Config) makeVPC(ctx context.Context) error {
	vpc := c.ClusterNetns()
	return run(ctx, [][]string{
		{"ip", "netns", "add", vpc},
		{"ip", "-n", vpc, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", vpc, "sysctl", "-qw", "net.ipv4.ip_forward=1",
			"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0"},
		{"ip", "-n", vpc, "link", "add", vpcBridge, "type", "bridge"},
		{"ip", "-n", vpc, "addr", "add", c.gateway().String() + "/24", "dev", vpcBridge},
		{"ip", "-n", vpc, "link", "set", vpcBridge, "up"},
	})
}

// clusterLinkSteps give the node a veth into the vpc namespace, on its
// bridge, with the node IP and a default route via the gateway.
func (c *Config) clusterLinkSteps() [][]string {
	ns, vpc := c.Netns(), c.ClusterNetns()
	return [][]string{
		{"ip", "-n", ns, "link", "add", nodeLink, "type", "veth", "peer", "name", c.vpcLink(), "netns", vpc},
		{"ip", "-n", vpc, "link", "set", c.vpcLink(), "master", vpcBridge, "up"},
		{"ip", "-n", ns, "addr", "add", c.NodeIP.String() + "/24", "dev", nodeLink},
		{"ip", "-n", ns, "link", "set", nodeLink, "up"},
		{"ip", "-n", ns, "route", "add", "default", "via", c.gateway().String(), "dev", nodeLink},
	}
}

// upWorker brings up a worker once its control plane answers: the same
// namespaces, cgroups and mounts as the first node, then its containerd,
// kubelet and kube-proxy.
func (c *Config) upWorker(ctx context.Context, hs []cgroupMount) error {
	t0 := time.Now()
	if err := c.writeFiles(); err != nil {
		return err
	}
	if err := c.makeCgroups(hs); err != nil {
		return err
	}
	if err := c.makeNamespaces(ctx, hs); err != nil {
		return err
	}
	if err := c.startNode(ctx); err != nil {
		return err
	}
	slog.Info("realnode: worker registered", "node", c.Name, "after", time.Since(t0).Round(time.Millisecond))
	return nil
}

// routePodCIDRs waits until the controller manager has allocated each
// node's podCIDR and routes it, in the vpc namespace, via the node's IP.
func (c *Config) routePodCIDRs(ctx context.Context) error {
	for _, n := range append([]*Config{c}, c.Workers()...) {
		if err := c.waitFor(ctx, "podCIDR of "+n.Name, time.Minute, "sh", "-c",
			`test -n "$(kubectl get node "$0" -o jsonpath='{.spec.podCIDR}')"`, n.Name); err != nil {
			return err
		}
		if err := c.SetVPCRoute(ctx, n, true); err != nil {
			return err
		}
	}
	return nil
}

// NodePodCIDR is the podCIDR the controller manager allocated to node n.
func (c *Config) NodePodCIDR(ctx context.Context, n *Config) (netip.Prefix, error) {
	out, err := c.Kubectl(ctx, "", "get", "node", n.Name, "-o", "jsonpath={.spec.podCIDR}")
	if err != nil {
		return netip.Prefix{}, err
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(out))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("realnode: node %s: spec.podCIDR %q: %w", n.Name, out, err)
	}
	return p, nil
}

// SetVPCRoute adds (on) or removes the vpc namespace's route to node n's
// podCIDR via n's IP: the VPC route table's entry for that node. Tests
// remove it to see cross-node traffic fail without it.
func (c *Config) SetVPCRoute(ctx context.Context, n *Config, on bool) error {
	cidr, err := c.NodePodCIDR(ctx, n)
	if err != nil {
		return err
	}
	step := []string{"ip", "-n", c.ClusterNetns(), "route", "replace", cidr.String(), "via", n.NodeIP.String(), "dev", vpcBridge}
	if !on {
		step = []string{"ip", "-n", c.ClusterNetns(), "route", "del", cidr.String(), "via", n.NodeIP.String()}
	}
	if err := run(ctx, [][]string{step}); err != nil {
		return err
	}
	slog.Info("realnode: vpc route", "node", n.Name, "podCIDR", cidr, "via", n.NodeIP, "present", on)
	return nil
}

// run runs commands in order, stopping at the first that fails.
func run(ctx context.Context, steps [][]string) error {
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("realnode: %s: %w: %s", strings.Join(s, " "), err, out)
		}
	}
	return nil
}
