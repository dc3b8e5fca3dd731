package realnode

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PTPPlugins are the reference CNI plugins the ptp node runs, as
// hack/cni-plugins.sh builds them (containernetworking/plugins v1.10.0).
var PTPPlugins = []string{"ptp", "host-local", "bandwidth"}

// PTPConflist is the reference chain for a node's podCIDR: ptp (a veth per
// pod, a /32 route to it in the node, no masquerade: nothing leaves the
// node's namespace anyway), host-local addresses from the podCIDR, and the
// bandwidth plugin for the kubernetes.io/ingress-bandwidth and
// egress-bandwidth annotations. It enforces no NetworkPolicy: it is the
// baseline for pod start latency, not for the policy specs.
func PTPConflist(podCIDR netip.Prefix) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "ptp",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "bandwidth", "capabilities": {"bandwidth": true}}
  ]
}
`, podCIDR.String())
}

// InstallPTP gives the node the reference ptp chain instead of our
// DaemonSet: it waits for the controller manager to give the node its
// podCIDR, copies the plugins from pluginDir into the node's /opt/cni/bin
// and writes the conflist into its /etc/cni/net.d (both private to the
// node's mount namespace), then waits until the node is Ready, which the
// runtime reports once it has loaded the configuration.
func InstallPTP(ctx context.Context, c *Config, pluginDir string) error {
	for _, p := range PTPPlugins {
		if fi, err := os.Stat(filepath.Join(pluginDir, p)); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("realnode: ptp: plugin %s missing in %s (hack/cni-plugins.sh builds it)", p, pluginDir)
		}
	}
	t0 := time.Now()
	var cidr string
	for {
		out, err := c.Kubectl(ctx, "", "get", "node", c.Name, "-o", "jsonpath={.spec.podCIDR}")
		if cidr = strings.TrimSpace(out); err == nil && cidr != "" {
			break
		}
		if time.Since(t0) > time.Minute {
			return fmt.Errorf("realnode: ptp: node %s has no spec.podCIDR after %s: %v", c.Name, time.Minute, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	prefix, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("realnode: ptp: node %s spec.podCIDR %q: %w", c.Name, cidr, err)
	}
	// The binaries go first and the conflist last, renamed into place: the
	// runtime watches the folder and must never load a half-written file
	// or a chain whose plugins are not there yet.
	script := `set -eu
for p in ` + strings.Join(PTPPlugins, " ") + `; do install -m 0755 "$0/$p" /opt/cni/bin/; done
cat > /etc/cni/net.d/.10-ptp.conflist.tmp
mv /etc/cni/net.d/.10-ptp.conflist.tmp /etc/cni/net.d/10-ptp.conflist
`
	cmd, err := c.Command(ctx, "sh", "-c", script, pluginDir)
	if err != nil {
		return err
	}
	cmd.Stdin = strings.NewReader(PTPConflist(prefix))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("realnode: ptp: installing the CNI configuration: %w: %s", err, out)
	}
	if err := c.waitFor(ctx, "node Ready", 3*time.Minute, "kubectl", "wait", "--for=condition=Ready", "node/"+c.Name, "--timeout=5s"); err != nil {
		return err
	}
	slog.Info("realnode: ptp ready", "node", c.Name, "podCIDR", prefix, "after", time.Since(t0).Round(time.Millisecond))
	return nil
}
