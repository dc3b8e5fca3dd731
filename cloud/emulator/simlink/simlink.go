// Package simlink plugs emulated ENIs into a simulated node as real links.
//
// It is the emulator's Hook for kernel tests: when an attach completes, a
// veth pair appears with one end in the node's network namespace, carrying
// the ENI's MAC and left down like a freshly hot-plugged NIC (the agent
// finds it by MAC and configures it), and the other end in a "vpc"
// namespace, enslaved to a bridge that stands for the ENI's vSwitch and
// holds the vSwitch gateway's address. When a detach completes the pair is
// removed, wherever the agent has moved or renamed the node end.
//
// Everything happens inside the two namespaces named at New; the
// namespace the process runs in is never touched.
package simlink

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/terway-reconciler/terway/cloud/emulator"
)

// Linker is an emulator.Hook. It is safe for concurrent use.
type Linker struct {
	defaultNode string
	vpcPath     string

	mu      sync.Mutex
	nodes   map[string]string // instance id -> node netns path
	handles map[string]*netlink.Handle
	nsFds   map[string]netns.NsHandle
	bridges map[string]bool // bridges this linker made, by name
	veths   map[string]bool // vpc-side veth ends this linker made, by name
}

var (
	_ emulator.Hook   = (*Linker)(nil)
	_ emulator.IPHook = (*Linker)(nil)
)

// New returns a linker that plugs every instance's ENIs into nodeNetns
// (use AddNode for more nodes) and builds the vSwitches in vpcNetns. Both
// are namespace paths such as /var/run/netns/NAME. Namespaces are opened
// on first use, so New cannot fail.
func New(nodeNetns, vpcNetns string) *Linker {
	return &Linker{
		defaultNode: nodeNetns, vpcPath: vpcNetns,
		nodes: map[string]string{}, handles: map[string]*netlink.Handle{}, nsFds: map[string]netns.NsHandle{},
		bridges: map[string]bool{}, veths: map[string]bool{},
	}
}

// AddNode makes the ENIs of one instance go to its own node namespace.
func (l *Linker) AddNode(instanceID, nodeNetns string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes[instanceID] = nodeNetns
}

// NodeLinkName is the name of an ENI's link in the node namespace: "ens-"
// and the MAC's last three bytes (unique, as MACs are). It does not start
// with the agent's own "tw" prefix; the agent finds ENIs by MAC anyway.
func NodeLinkName(mac string) string { return "ens-" + macSuffix(mac) }

// vpcLinkName is the vSwitch-side end of the ENI's pair.
// VPCLinkName is the vpc-side end of an ENI's pair: its counters show the
// traffic that left the node through that ENI.
func VPCLinkName(mac string) string { return "eni-" + macSuffix(mac) }

func macSuffix(mac string) string {
	s := strings.ReplaceAll(strings.ToLower(mac), ":", "")
	if len(s) > 6 {
		s = s[len(s)-6:]
	}
	return s
}

// BridgeName is the bridge standing for a vSwitch in the vpc namespace: a
// short hash keeps it within 15 characters for any vSwitch id.
func BridgeName(vswitchID string) string {
	h := sha1.Sum([]byte(vswitchID))
	return "br-" + hex.EncodeToString(h[:4])
}

// handle returns a netlink handle in the namespace (opened once).
func (l *Linker) handle(path string) (*netlink.Handle, netns.NsHandle, error) {
	if h, ok := l.handles[path]; ok {
		return h, l.nsFds[path], nil
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, 0, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, 0, fmt.Errorf("netlink in namespace %s: %w", path, err)
	}
	l.handles[path], l.nsFds[path] = h, ns
	return h, ns, nil
}

func (l *Linker) nodeOf(instanceID string) (string, error) {
	if p, ok := l.nodes[instanceID]; ok {
		return p, nil
	}
	if l.defaultNode == "" {
		return "", fmt.Errorf("simlink: instance %s has no node namespace (AddNode)", instanceID)
	}
	return l.defaultNode, nil
}

// ENIAttached creates the ENI's link pair and, on first use, the vSwitch's
// bridge. A stale pair from an earlier attach of the same ENI is replaced.
func (l *Linker) ENIAttached(instanceID string, eni emulator.ENIInfo) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	nodePath, err := l.nodeOf(instanceID)
	if err != nil {
		return err
	}
	mac, err := net.ParseMAC(eni.MAC)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: MAC %q: %w", eni.ID, eni.MAC, err)
	}
	_, nodeNs, err := l.handle(nodePath)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: node: %w", eni.ID, err)
	}
	vpc, _, err := l.handle(l.vpcPath)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: vpc: %w", eni.ID, err)
	}
	br, err := l.ensureBridge(vpc, eni)
	if err != nil {
		return err
	}

	name := VPCLinkName(eni.MAC)
	if old, err := vpc.LinkByName(name); err == nil {
		if err := vpc.LinkDel(old); err != nil {
			return fmt.Errorf("simlink: ENI %s: remove stale link %s: %w", eni.ID, name, err)
		}
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: name, MasterIndex: br.Attrs().Index},
		PeerName:         NodeLinkName(eni.MAC),
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(nodeNs)),
	}
	if err := vpc.LinkAdd(veth); err != nil {
		return fmt.Errorf("simlink: ENI %s: create link %s with peer %s in %s: %w", eni.ID, name, veth.PeerName, nodePath, err)
	}
	l.veths[name] = true
	// Look the link up again: the kernel filled in its index.
	link, err := vpc.LinkByName(name)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: find link %s: %w", eni.ID, name, err)
	}
	if err := vpc.LinkSetUp(link); err != nil {
		return fmt.Errorf("simlink: ENI %s: set %s up: %w", eni.ID, name, err)
	}
	return l.syncNeighbors(vpc, br, eni)
}

// ENIIPsChanged follows assign and unassign: the vpc side resolves each of
// the ENI's addresses to its MAC, as the VPC fabric delivers a secondary IP
// to the ENI holding it without asking the guest (no ARP reaches a node
// for its pods' addresses).
func (l *Linker) ENIIPsChanged(instanceID string, eni emulator.ENIInfo) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	vpc, _, err := l.handle(l.vpcPath)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: vpc: %w", eni.ID, err)
	}
	br, err := vpc.LinkByName(BridgeName(eni.VSwitchID))
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: bridge of vSwitch %s: %w", eni.ID, eni.VSwitchID, err)
	}
	return l.syncNeighbors(vpc, br, eni)
}

// syncNeighbors makes the bridge's permanent neighbours for the ENI's MAC
// exactly the ENI's addresses. Called with the lock held.
func (l *Linker) syncNeighbors(vpc *netlink.Handle, br netlink.Link, eni emulator.ENIInfo) error {
	mac, err := net.ParseMAC(eni.MAC)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: MAC %q: %w", eni.ID, eni.MAC, err)
	}
	want := map[string]bool{}
	for _, ip := range append([]string{eni.PrimaryIP}, eni.SecondaryIPs...) {
		want[ip] = true
	}
	have, err := vpc.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: list neighbours of %s: %w", eni.ID, br.Attrs().Name, err)
	}
	for _, n := range have {
		if n.State&netlink.NUD_PERMANENT == 0 || n.HardwareAddr.String() != mac.String() {
			continue
		}
		if want[n.IP.String()] {
			delete(want, n.IP.String())
			continue
		}
		if err := vpc.NeighDel(&n); err != nil {
			return fmt.Errorf("simlink: ENI %s: remove neighbour %s: %w", eni.ID, n.IP, err)
		}
	}
	for ip := range want {
		addr := net.ParseIP(ip)
		if addr == nil {
			continue
		}
		n := &netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: addr, HardwareAddr: mac}
		if err := vpc.NeighSet(n); err != nil {
			return fmt.Errorf("simlink: ENI %s: neighbour %s: %w", eni.ID, ip, err)
		}
	}
	return nil
}

// ensureBridge returns the vSwitch's bridge, creating it with the gateway
// address when missing. Called with the lock held.
func (l *Linker) ensureBridge(vpc *netlink.Handle, eni emulator.ENIInfo) (netlink.Link, error) {
	name := BridgeName(eni.VSwitchID)
	if br, err := vpc.LinkByName(name); err == nil {
		return br, nil
	}
	_, cidr, err := net.ParseCIDR(eni.VSwitchCIDR)
	if err != nil {
		return nil, fmt.Errorf("simlink: vSwitch %s: CIDR %q: %w", eni.VSwitchID, eni.VSwitchCIDR, err)
	}
	gw := net.ParseIP(eni.GatewayIP)
	if gw == nil || !cidr.Contains(gw) {
		return nil, fmt.Errorf("simlink: vSwitch %s: gateway %q is not in %s", eni.VSwitchID, eni.GatewayIP, eni.VSwitchCIDR)
	}
	// A fixed MAC: a bridge otherwise takes its lowest port's, and every
	// change of its address flushes its neighbours, permanent ones
	// included: the ENIs' IPs would vanish as ENIs come and go.
	sum := sha1.Sum([]byte(eni.VSwitchID))
	brMAC := net.HardwareAddr{0x02, 0x42, sum[0], sum[1], sum[2], sum[3]}
	if err := vpc.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: brMAC}}); err != nil {
		return nil, fmt.Errorf("simlink: vSwitch %s: create bridge %s: %w", eni.VSwitchID, name, err)
	}
	l.bridges[name] = true
	br, err := vpc.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("simlink: vSwitch %s: find bridge %s: %w", eni.VSwitchID, name, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw, Mask: cidr.Mask}}
	if err := vpc.AddrAdd(br, addr); err != nil {
		return nil, fmt.Errorf("simlink: vSwitch %s: add gateway %s to bridge %s: %w", eni.VSwitchID, addr.IPNet, name, err)
	}
	if err := vpc.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("simlink: vSwitch %s: set bridge %s up: %w", eni.VSwitchID, name, err)
	}
	return br, nil
}

// ENIDetached removes the ENI's pair from the vpc side, which removes the
// node end wherever it is now. A pair already gone is fine.
func (l *Linker) ENIDetached(instanceID string, eni emulator.ENIInfo) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	vpc, _, err := l.handle(l.vpcPath)
	if err != nil {
		return fmt.Errorf("simlink: ENI %s: vpc: %w", eni.ID, err)
	}
	name := VPCLinkName(eni.MAC)
	delete(l.veths, name)
	link, err := vpc.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("simlink: ENI %s: find link %s: %w", eni.ID, name, err)
	}
	if err := vpc.LinkDel(link); err != nil {
		return fmt.Errorf("simlink: ENI %s: delete link %s: %w", eni.ID, name, err)
	}
	if br, err := vpc.LinkByName(BridgeName(eni.VSwitchID)); err == nil {
		eni.PrimaryIP, eni.SecondaryIPs = "", nil // no address left: drop its neighbours
		return l.syncNeighbors(vpc, br, eni)
	}
	return nil
}

// Close removes the links and bridges this linker made and closes the
// namespace handles. The namespaces themselves belong to the caller.
func (l *Linker) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	if vpc, ok := l.handles[l.vpcPath]; ok {
		for _, set := range []map[string]bool{l.veths, l.bridges} {
			for name := range set {
				if link, err := vpc.LinkByName(name); err == nil {
					if err := vpc.LinkDel(link); err != nil {
						errs = append(errs, fmt.Errorf("simlink: delete %s: %w", name, err))
					}
				}
				delete(set, name)
			}
		}
	}
	for path, h := range l.handles {
		h.Close()
		ns := l.nsFds[path]
		if err := ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("simlink: close namespace %s: %w", path, err))
		}
	}
	l.handles, l.nsFds = map[string]*netlink.Handle{}, map[string]netns.NsHandle{}
	return errors.Join(errs...)
}
