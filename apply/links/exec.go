package links

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// ErrENINotAttached is returned for an eni item whose MAC no interface
// has yet: the cloud has not attached the ENI, or the kernel has not
// registered it. The next resync adopts it once it is there.
var ErrENINotAttached = errors.New("no interface with this MAC in the host or the item's namespace: ENI not attached yet")

// createVeth creates the pair with the peer made directly in its namespace,
// both ends with the MACs and MTU of the item, and both ends up: the
// create, the host end's IPv6 mode (noIPv6Addresses), the host end up,
// then the peer up, each by the link's name. The netlink library would
// also look the new link up for its index after the create, and the peer
// up before setting it up: two round trips less per CNI ADD, one of them
// in the pod's namespace (BenchmarkVethCreate). The peer cannot come up in
// the create itself: the kernel opens it before it is paired, and a veth
// without its peer refuses to open (ENOTCONN). The host end comes up only
// after its IPv6 mode is set: a link setting of an up link makes the
// kernel walk the node's whole IPv6 routing table (a NETDEV_CHANGE for a
// link without carrier), one of a down link does not.
func createVeth(ns op.Namespaces, d spec.Link) error {
	mac, err := parseMAC(d.MAC)
	if err != nil {
		return fmt.Errorf("link %s: mac: %w", d.Key(), err)
	}
	peerMAC, err := parseMAC(d.Peer.MAC)
	if err != nil {
		return fmt.Errorf("link %s: peer.mac: %w", d.Key(), err)
	}
	fd, err := ns.Fd(d.Peer.Netns)
	if err != nil {
		return fmt.Errorf("link %s: peer namespace: %w", d.Key(), err)
	}
	c, err := ns.RouteConn(d.Netns)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.Key(), err)
	}
	if err := c.Write(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL, vethRequest(d, mac, peerMAC, fd)...); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("link %s: create veth pair with peer %s in %s: %w", d.Key(), d.Peer.Name, NetnsName(d.Peer.Netns), err)
		}
		ok, perr := pairExists(ns, d)
		if perr != nil {
			return fmt.Errorf("link %s: create veth pair: %w", d.Key(), perr)
		}
		if !ok {
			return fmt.Errorf("link %s: create veth pair: %s in %s or %s in %s is taken by another link: %w",
				d.Key(), d.Name, NetnsName(d.Netns), d.Peer.Name, NetnsName(d.Peer.Netns), err)
		}
		// The pair appeared since the plan: made as the document says, or
		// not. Bring it there now: the engine does not plan again after a
		// round that only creates links.
		return updateVeth(ns, d)
	}
	if err := noIPv6Addresses(c, d); err != nil {
		return err
	}
	if err := setUp(c, d.Name); err != nil {
		return fmt.Errorf("link %s: set up: %w", d.Key(), err)
	}
	pc, err := ns.RouteConn(d.Peer.Netns)
	if err != nil {
		return fmt.Errorf("link %s: peer namespace: %w", d.Key(), err)
	}
	if err := setUp(pc, d.Peer.Name); err != nil {
		return fmt.Errorf("link %s: set peer %s up: %w", d.Key(), d.Peer.Name, err)
	}
	return nil
}

// setUpWithoutIPv6Addresses sets the host end l's IPv6 mode
// (noIPv6Addresses), then sets it up.
func setUpWithoutIPv6Addresses(ns op.Namespaces, d spec.Link, h *netlink.Handle, l netlink.Link) error {
	c, err := ns.RouteConn(d.Netns)
	if err != nil {
		return err
	}
	if err := noIPv6Addresses(c, d); err != nil {
		return err
	}
	return h.LinkSetUp(l)
}

// setUp sets the link of that name up.
func setUp(c *op.RouteConn, name string) error {
	up := nl.NewIfInfomsg(unix.AF_UNSPEC)
	up.Flags, up.Change = unix.IFF_UP, unix.IFF_UP
	return c.Write(unix.RTM_SETLINK, 0, up, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
}

// noIPv6Addresses sets the host end's IPv6 address generation to none
// while the link is down (createVeth says why; updateVeth does the same
// for a host end it brings up). IPv6 stays on: the kernel then still hands
// a pod's IPv6 packets to the prerouting hook, where source validation
// drops and counts them (terway_pod_non_ipv4_packets_total); with IPv6 off
// it drops them before (ipv6_rcv), uncounted. What goes is the link-local
// address the carrier's arrival would give the link, with its DAD and
// multicast joins, and two of its three IPv6 routes (fe80::/64 and the
// address's local one; the multicast ff00::/8 stays). The kernel's link
// watcher adds those under the RTNL lock that every netlink request of an
// ADD needs, fe80::/64 beside every other link's, and then walks the
// node's whole IPv6 table, which now holds a third of the routes it did:
// work that grows with the pods on the node, and grows less. Pods'
// addresses and routes are IPv4 (render checks it), and nothing is routed
// to the host end over IPv6.
//
// The mode cannot go in the create: the kernel checks IFLA_AF_SPEC before
// the link has its IPv6 state and refuses it (EAFNOSUPPORT). A kernel
// without IPv6 refuses it the same way here, and has nothing to turn off.
func noIPv6Addresses(c *op.RouteConn, d spec.Link) error {
	inet6 := nl.NewRtAttr(unix.AF_INET6, nil)
	inet6.AddRtAttr(unix.IFLA_INET6_ADDR_GEN_MODE, []byte{nl.IN6_ADDR_GEN_MODE_NONE})
	af := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	af.AddChild(inet6)
	err := c.Write(unix.RTM_SETLINK, 0, nl.NewIfInfomsg(unix.AF_UNSPEC), nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(d.Name)), af)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("link %s: set IPv6 address generation none on the host end: %w", d.Key(), err)
	}
	return nil
}

// vethRequest is the RTM_NEWLINK request of createVeth: what the netlink
// library sends for a netlink.Veth of these attributes, the peer's
// txqueuelen 0 included (the library's for a Veth whose PeerTxQLen is left
// 0, as it was here), with both ends down.
func vethRequest(d spec.Link, mac, peerMAC net.HardwareAddr, peerNetns int) []nl.NetlinkRequestData {
	host := nl.NewIfInfomsg(unix.AF_UNSPEC)
	data := []nl.NetlinkRequestData{host, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(d.Name))}
	if d.MTU > 0 {
		data = append(data, nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(d.MTU))))
	}
	if mac != nil {
		data = append(data, nl.NewRtAttr(unix.IFLA_ADDRESS, mac))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("veth"))
	peer := info.AddRtAttr(nl.IFLA_INFO_DATA, nil).AddRtAttr(nl.VETH_INFO_PEER, nil)
	nl.NewIfInfomsgChild(peer, unix.AF_UNSPEC)
	peer.AddRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(d.Peer.Name))
	peer.AddRtAttr(unix.IFLA_TXQLEN, nl.Uint32Attr(0))
	if d.MTU > 0 {
		peer.AddRtAttr(unix.IFLA_MTU, nl.Uint32Attr(uint32(d.MTU)))
	}
	if peerMAC != nil {
		peer.AddRtAttr(unix.IFLA_ADDRESS, peerMAC)
	}
	peer.AddRtAttr(unix.IFLA_NET_NS_FD, nl.Uint32Attr(uint32(peerNetns)))
	return append(data, info)
}

// pairExists reports whether both ends of d exist and are one pair.
func pairExists(ns op.Namespaces, d spec.Link) (bool, error) {
	_, a, errA := lookup(ns, d.Netns, d.Name)
	_, b, errB := lookup(ns, d.Peer.Netns, d.Peer.Name)
	if errA != nil || errB != nil {
		if IsNotFound(errA) || IsNotFound(errB) {
			return false, nil
		}
		return false, errors.Join(errA, errB)
	}
	return paired(ns, d.Netns, a, d.Peer.Netns, b)
}

// updateVeth reads the pair again and fixes MAC, MTU and up on each end.
func updateVeth(ns op.Namespaces, d spec.Link) error {
	ha, a, err := lookup(ns, d.Netns, d.Name)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.Key(), err)
	}
	hb, b, err := lookup(ns, d.Peer.Netns, d.Peer.Name)
	if err != nil {
		return fmt.Errorf("link %s: peer: %w", d.Key(), err)
	}
	ok, err := paired(ns, d.Netns, a, d.Peer.Netns, b)
	if err != nil {
		return fmt.Errorf("link %s: peer: %w", d.Key(), err)
	}
	if !ok {
		return fmt.Errorf("link %s: peer %s in %s is not this veth's peer any more; the next plan recreates the pair",
			d.Key(), d.Peer.Name, NetnsName(d.Peer.Netns))
	}
	o := observed(d.Netns, a, spec.LinkVeth)
	o.Peer = &spec.VethPeer{Netns: d.Peer.Netns, Name: d.Peer.Name, MAC: HardwareMAC(b.Attrs().HardwareAddr)}
	o.PeerUp = b.Attrs().RawFlags&upFlag != 0
	o.PeerMTU = b.Attrs().MTU
	for _, c := range vethChanges(d, o) {
		h, l := ha, a
		if c.peer {
			h, l = hb, b
		}
		switch {
		case c.mac != "":
			hw, _ := net.ParseMAC(c.mac) // normalised by vethChanges, so it parses
			err = h.LinkSetHardwareAddr(l, hw)
		case c.mtu != 0:
			err = h.LinkSetMTU(l, c.mtu)
		case c.up && !c.peer:
			// A host end left down (a create cut short, another's
			// pair) gets its IPv6 mode first, as createVeth's does. One
			// already up keeps what it has: the setting would not take
			// its addresses away.
			err = setUpWithoutIPv6Addresses(ns, d, h, l)
		case c.up:
			err = h.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("link %s: %s: %w", d.Key(), c, err)
		}
	}
	return nil
}

// deleteVeth deletes one end of a veth pair (which deletes both). It
// refuses to delete anything that is not a veth.
func deleteVeth(ns op.Namespaces, o spec.Link) error {
	if !ns.Exists(o.Netns) {
		return nil // the namespace and its links are gone
	}
	_, l, err := lookup(ns, o.Netns, o.Name)
	if IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("link %s: %w", o.Key(), err)
	}
	if l.Type() != "veth" {
		return fmt.Errorf("link %s: is a %s now, not a veth: not deleting it", o.Key(), l.Type())
	}
	if err := delLink(ns, o.Netns, l); err != nil && !errors.Is(err, unix.ENODEV) && !IsNotFound(err) {
		return fmt.Errorf("link %s: delete veth: %w", o.Key(), err)
	}
	return nil
}

// delLink deletes l, by its index, through a netlink socket of its own in
// netns: the kernel holds a deletion's request until RCU grace periods
// have passed (20 ms here), and the namespace's shared handle sends one
// request at a time. Deletions on sockets of their own wait together
// (op.Op.Concurrent): eight took 45 ms against 150 ms one after another.
// The socket is opened inside the registry's switch to the namespace
// (ns.Do), which never lets a thread go in another namespace.
func delLink(ns op.Namespaces, netns string, l netlink.Link) error {
	var h *netlink.Handle
	if err := ns.Do(netns, func() (err error) {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	}); err != nil {
		return fmt.Errorf("open a netlink socket in %s: %w", NetnsName(netns), err)
	}
	defer h.Close()
	return h.LinkDel(l)
}

// adoptENI finds the link with d's MAC in one of the search namespaces and
// renames, moves, sizes and (if up) raises it to match d. The steps are
// planned again from what the kernel has now, so a retry after a partial
// failure continues where the last attempt stopped.
func adoptENI(ns op.Namespaces, d spec.Link, search []string, up bool) error {
	mac := NormalMAC(d.MAC)
	found, l, err := findByMAC(ns, mac, search)
	if err != nil {
		return fmt.Errorf("link %s: find mac %s: %w", d.Key(), mac, err)
	}
	if l == nil {
		if !up {
			return nil // parking a link that is gone: nothing to do
		}
		return fmt.Errorf("link %s: mac %s: %w", d.Key(), mac, ErrENINotAttached)
	}
	o := *found
	h, err := ns.Handle(o.Netns)
	if err != nil {
		return fmt.Errorf("link %s: %w", d.Key(), err)
	}
	park := parkName(o.MAC, o.Name)
	for _, s := range planENI(d, o, up) {
		var what string
		switch s {
		case stepDown:
			what, err = "set down", h.LinkSetDown(l)
		case stepPark:
			what, err = "rename to "+park, h.LinkSetName(l, park)
		case stepMove:
			what = "move to " + NetnsName(d.Netns)
			err = moveLink(ns, h, l, d.Netns)
			if err == nil {
				// The link has a new index in its new namespace.
				h, err = ns.Handle(d.Netns)
				if err == nil {
					if found, l, err = findByMAC(ns, mac, []string{d.Netns}); err == nil && found == nil {
						err = fmt.Errorf("not found in %s after the move", NetnsName(d.Netns))
					}
				}
			}
		case stepRename:
			what, err = "rename to "+d.Name, h.LinkSetName(l, d.Name)
		case stepMTU:
			what, err = fmt.Sprintf("set mtu %d", d.MTU), h.LinkSetMTU(l, d.MTU)
		case stepUp:
			what, err = "set up", h.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("link %s: mac %s: %s: %w", d.Key(), mac, what, err)
		}
	}
	return nil
}

func moveLink(ns op.Namespaces, h *netlink.Handle, l netlink.Link, to string) error {
	fd, err := ns.Fd(to)
	if err != nil {
		return err
	}
	return h.LinkSetNsFd(l, fd)
}

// findByMAC looks for the link with the MAC in each existing namespace of
// search, in order. It returns nil, nil, nil when no namespace has it.
func findByMAC(ns op.Namespaces, mac string, search []string) (*Observed, netlink.Link, error) {
	seen := map[string]bool{}
	for _, n := range search {
		if seen[n] || !ns.Exists(n) {
			continue
		}
		seen[n] = true
		h, err := ns.Handle(n)
		if err != nil {
			return nil, nil, err
		}
		all, err := Dump(func() ([]netlink.Link, error) { return h.LinkList() })
		if err != nil {
			return nil, nil, fmt.Errorf("list links in %s: %w", NetnsName(n), err)
		}
		for _, l := range all {
			if HardwareMAC(l.Attrs().HardwareAddr) == mac {
				o := observed(n, l, spec.LinkENI)
				return &o, l, nil
			}
		}
	}
	return nil, nil, nil
}

// lookup returns the namespace's handle and the link called name in it.
func lookup(ns op.Namespaces, netns, name string) (*netlink.Handle, netlink.Link, error) {
	h, err := ns.Handle(netns)
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s in %s: %w", name, NetnsName(netns), err)
	}
	return h, l, nil
}

// parseMAC parses a MAC that may be empty (then the kernel picks one).
func parseMAC(s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	hw, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a MAC address: %w", s, err)
	}
	return hw, nil
}
