package realnode

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/terway-reconciler/terway/cloud/emulator"
)

// In ENI multi-IP mode (Config.Emulator set) the node has a cloud: the
// project's ECS/VPC emulator runs inside the node's network namespace and
// listens on the node's own loopback, where the agent (hostNetwork) reaches
// its API and its instance metadata service through the cloud
// configuration's endpoint and metadata URL. Nothing is added to the
// machine's namespace, and 100.100.100.200 is not used: the configuration
// points elsewhere, as Terway's own does for its tests. Every ENI the
// emulator attaches appears in the node's namespace as a link with the
// ENI's MAC (cloud/emulator/simlink, as in the simulated nodes), whose
// other end is on a bridge standing for the vSwitch, with the gateway's
// address, in the node's vpc namespace ("rv-<name>").
const (
	// EmulatorAPI is the emulator's ECS/VPC endpoint inside the node.
	EmulatorAPI = "127.0.0.1:18600"
	// EmulatorMetadata is its instance metadata service inside the node.
	EmulatorMetadata = "127.0.0.1:18601"
)

// VPCNetns is the name of the namespace holding the node's vSwitches.
func (c *Config) VPCNetns() string { return "rv-" + c.Name }

// terwayctl is the node's own copy of the emulator's binary (the caller's
// may be a temporary file; the node outlives the command that started it).
func (c *Config) terwayctl() string { return filepath.Join(c.Dir(), "bin", "terwayctl") }

// World is the emulated cloud the node lives in: the emulator's default
// world, whose first instance is this node.
func World() *emulator.World { return emulator.DefaultWorld() }

// startEmulator makes the vpc namespace and starts the emulator in the
// node's network namespace (not its mount namespace: it opens both
// namespaces by their /run/netns paths, which the node's private /run
// hides), then waits for its first line.
func (c *Config) startEmulator(ctx context.Context) error {
	if err := copyFile(c.Emulator, c.terwayctl(), 0o755); err != nil {
		return fmt.Errorf("realnode: emulator binary: %w", err)
	}
	vpc := c.VPCNetns()
	// The vSwitch bridges the emulator makes answer ARP for every address
	// of their subnet and route it (proxy_arp on "default", so every bridge
	// made later inherits it), as an Alibaba Cloud vSwitch does: an
	// exclusive ENI's pod reaches the node's shared-ENI pods of its subnet.
	steps := [][]string{
		{"ip", "netns", "add", vpc},
		{"ip", "-n", vpc, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", vpc, "sysctl", "-qw", "net.ipv4.ip_forward=1",
			"net.ipv4.conf.default.proxy_arp=1", "net.ipv4.conf.default.proxy_arp_pvlan=1",
			"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("realnode: %s: %w: %s", strings.Join(s, " "), err, out)
		}
	}
	pid, err := c.spawn("emulator", "ip", "netns", "exec", c.Netns(), c.terwayctl(), "emulator",
		"--listen", EmulatorAPI, "--metadata-listen", EmulatorMetadata,
		"--sim-node", filepath.Join("/run/netns", c.Netns()), "--sim-vpc", filepath.Join("/run/netns", vpc))
	if err != nil {
		return err
	}
	info, err := c.waitEmulator(15 * time.Second)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir(), "emulator.json"), data, 0o600); err != nil {
		return err
	}
	slog.Info("realnode: emulator ready", "pid", pid, "endpoint", info.Endpoint, "metadata", info.Metadata, "instance", info.InstanceID)
	return nil
}

// waitEmulator reads the emulator's first stdout line (a JSON Info) from
// its log, where its slog lines on stderr are text.
func (c *Config) waitEmulator(bound time.Duration) (*emulator.Info, error) {
	logPath := filepath.Join(c.Dir(), "logs", "emulator.log")
	deadline := time.Now().Add(bound)
	for {
		if f, err := os.Open(logPath); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if line := sc.Text(); strings.HasPrefix(line, "{") {
					f.Close()
					var info emulator.Info
					if err := json.Unmarshal([]byte(line), &info); err != nil {
						return nil, fmt.Errorf("realnode: the emulator's first line %q: %w", line, err)
					}
					return &info, nil
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("realnode: the emulator printed no info line within %s: %s", bound, lastLines(string(b), 5))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// EmulatorDump reads the emulator's state through `terwayctl emulator dump`
// run inside the node (the emulator answers on the node's loopback only).
func (c *Config) EmulatorDump(ctx context.Context) (*emulator.Dump, error) {
	cmd, err := c.Command(ctx, c.terwayctl(), "emulator", "dump", "--endpoint", EmulatorAPI)
	if err != nil {
		return nil, err
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("realnode: emulator dump: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	var d emulator.Dump
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("realnode: emulator dump: %w", err)
	}
	return &d, nil
}

var (
	vswitchLine = regexp.MustCompile(`(?m)^(\s+)vswitchIDs:.*$`)
	sgLine      = regexp.MustCompile(`(?m)^(\s+)securityGroupID:.*$`)
)

// cloudEdits points the manifest's cloud configuration (cloud.yaml in
// terway-config) at the node's emulator: its vSwitch in the instance's
// zone and its security group in place of the placeholders, and the
// metadata URL and API endpoints added after the security group. The
// credentials stay as the manifest has them: none, so the agent takes the
// instance's RAM role from the metadata service, as on a real node.
func (c *Config) cloudEdits(manifest string) (string, error) {
	w := World()
	var vsw []string
	for _, v := range w.VSwitches {
		if v.ZoneID == w.Instances[0].ZoneID { // ENIs attach only within the zone
			vsw = append(vsw, v.ID)
		}
	}
	for _, re := range []*regexp.Regexp{vswitchLine, sgLine} {
		if n := len(re.FindAllString(manifest, -1)); n != 1 {
			return "", fmt.Errorf("realnode: the manifest has %d lines matching %s, want the one of cloud.yaml", n, re)
		}
	}
	manifest = vswitchLine.ReplaceAllString(manifest, "${1}vswitchIDs: ["+strings.Join(vsw, ", ")+"]")
	return sgLine.ReplaceAllString(manifest, "${1}securityGroupID: "+w.SecurityGroupID+
		"\n${1}metadata: http://"+EmulatorMetadata+
		"\n${1}ecsEndpoint: "+EmulatorAPI+
		"\n${1}vpcEndpoint: "+EmulatorAPI), nil
}

// copyFile copies src to dst (made with mode), creating dst's folder.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// lastLines is the end of a log, for an error message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
