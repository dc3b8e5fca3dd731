package realnode

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"
)

var (
	imageLine       = regexp.MustCompile(`(?m)^(\s+image:\s*).*$`)
	serviceCIDRLine = regexp.MustCompile(`(?m)^(\s+serviceCIDR:\s*).*$`)
)

// AgentManifest is the project's manifest as applied to the node: the
// image set (what `make manifests IMAGE=...` does to the file) and the
// agent's serviceCIDR set to the node's Service range; on a node with a
// cloud (Emulator), also the cloud configuration's vSwitch, security group,
// endpoints and metadata URL (cloudEdits). Nothing else changes.
func (c *Config) AgentManifest(manifestPath, image string) (string, error) {
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		return "", err
	}
	s := string(b)
	if !imageLine.MatchString(s) {
		return "", fmt.Errorf("realnode: %s: no image: line to set", manifestPath)
	}
	s = imageLine.ReplaceAllString(s, "${1}"+image)
	s = serviceCIDRLine.ReplaceAllString(s, "${1}"+c.ServiceCIDR.String())
	if c.Emulator != "" {
		return c.cloudEdits(s)
	}
	return s, nil
}

// ApplyAgent applies the manifest with kubectl, then waits until the node
// is Ready (which the runtime reports only once the DaemonSet's init
// container installed our CNI configuration and the agent answers the
// plugin's STATUS) and the DaemonSet is rolled out.
func ApplyAgent(ctx context.Context, c *Config, manifestPath, image string) error {
	m, err := c.AgentManifest(manifestPath, image)
	if err != nil {
		return err
	}
	return ApplyAgentManifest(ctx, c, m)
}

// ApplyAgentManifest is ApplyAgent for a manifest already made
// (AgentManifest, then a test's own edits).
func ApplyAgentManifest(ctx context.Context, c *Config, m string) error {
	var err error
	// The DaemonSet's pods need kube-system's default objects the
	// controller manager makes; apply retries until the API takes it.
	t0 := time.Now()
	for {
		_, err = c.Kubectl(ctx, m, "apply", "-f", "-")
		if err == nil || time.Since(t0) > time.Minute {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return err
	}
	// Every node of the cluster (a worker's too), not only this one.
	if err := c.waitFor(ctx, "nodes Ready", 3*time.Minute, "kubectl", "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s"); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "", "-n", "kube-system", "rollout", "status", "daemonset/terway", "--timeout=3m"); err != nil {
		return err
	}
	slog.Info("realnode: agent ready", "node", c.Name, "after", time.Since(t0).Round(time.Millisecond))
	return nil
}

// CNIConfigs lists the CNI configurations installed on the node (the
// runtime's conf_dir, inside the node's mount namespace).
func (c *Config) CNIConfigs(ctx context.Context) ([]string, error) {
	out, err := c.execIn(ctx, "ls", "/etc/cni/net.d")
	if err != nil {
		return nil, fmt.Errorf("realnode: ls /etc/cni/net.d: %w: %s", err, out)
	}
	return strings.Fields(string(out)), nil
}
