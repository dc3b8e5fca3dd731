package sim

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// Namespaces are made and removed with ip(8), the same tool people use to
// look at them afterwards (`ip netns list`, `nsenter --net=PATH`).

const netnsDir = "/var/run/netns"

func netnsPath(name string) string { return netnsDir + "/" + name }

// podNetnsName is stable per pod so that a rerun finds its leftovers; the
// hash keeps names short and free of characters ip(8) dislikes.
func podNetnsName(sim, namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	short := namespace + "-" + name
	if len(short) > 24 {
		short = short[:24]
	}
	return netnsPrefix(sim) + "pod." + short + "." + hex.EncodeToString(sum[:4])
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs a command inside the named namespace.
func inNetns(name string, args ...string) error {
	return ip(append([]string{"netns", "exec", name}, args...)...)
}

// addNetns creates a namespace with lo up.
func addNetns(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	return inNetns(name, "ip", "link", "set", "lo", "up")
}

// delNetns removes a namespace; a missing one is fine.
func delNetns(name string) error {
	if _, err := os.Stat(netnsPath(name)); os.IsNotExist(err) {
		return nil
	}
	return ip("netns", "del", name)
}

// netnsWithPrefix lists the namespaces whose name starts with prefix.
func netnsWithPrefix(prefix string) []string {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// The node's uplink in VPC mode: a veth from the node namespace ("eth0",
// carrying the node's InternalIP) to the vpc namespace, which routes the
// node's podCIDR to it, as the VPC route table does for a Terway VPC-mode
// node. Nothing leaves the vpc namespace: it has no other link.
const (
	vpcGatewayHost = 254 // the vpc side's address is .254 of the node's /24
	nodeUplink     = "eth0"
	vpcDownlink    = "node0"
)

func wireVPC(nodeNS, vpcNS, nodeIP, podCIDR string) error {
	gw, err := hostInSlash24(nodeIP, vpcGatewayHost)
	if err != nil {
		return err
	}
	if err := ip("link", "add", nodeUplink, "netns", nodeNS, "type", "veth", "peer", "name", vpcDownlink, "netns", vpcNS); err != nil {
		return err
	}
	cmds := [][]string{
		{nodeNS, "ip", "addr", "add", nodeIP + "/24", "dev", nodeUplink},
		{nodeNS, "ip", "link", "set", nodeUplink, "up"},
		{nodeNS, "ip", "route", "add", "default", "via", gw},
		{vpcNS, "ip", "addr", "add", gw + "/24", "dev", vpcDownlink},
		{vpcNS, "ip", "link", "set", vpcDownlink, "up"},
		{vpcNS, "ip", "route", "add", podCIDR, "via", nodeIP},
		{vpcNS, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	for _, c := range cmds {
		if err := inNetns(c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// vswitchARP makes every vSwitch bridge the emulator will create in the
// vpc namespace answer ARP for any address with its own MAC and route the
// packet, as an Alibaba Cloud vSwitch does: an exclusive ENI in a pod sees
// its vSwitch's addresses on-link, and the ENI IPs of pods behind the node's
// shared ENIs answer no ARP of their own. Without it, a pod owning an ENI
// could not reach the node's other pods of its subnet.
func vswitchARP(vpcNS string) error {
	return inNetns(vpcNS, "sysctl", "-qw", "net.ipv4.ip_forward=1",
		"net.ipv4.conf.default.proxy_arp=1", "net.ipv4.conf.default.proxy_arp_pvlan=1",
		// Routing back out of the bridge it came from is the point: no
		// redirect that would send the pod to ARP the address again.
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0")
}

func hostInSlash24(ip string, host int) (string, error) {
	parts := strings.Split(ip, ".")
	if len(parts) != 4 {
		return "", fmt.Errorf("node address %q is not IPv4", ip)
	}
	return fmt.Sprintf("%s.%s.%s.%d", parts[0], parts[1], parts[2], host), nil
}
