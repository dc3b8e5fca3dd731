package links

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Observed is a link as the kernel has it. spec.Link says what a link must
// be; the kernel also has state the document never names because it is
// always wanted (a link is up), so Observed carries it next to the item.
//
// Kind is spec.LinkVeth for a veth end, spec.LinkENI for a link whose MAC
// the document knows as an ENI's, and otherwise the kernel's kind ("dummy",
// "device", …) of a link the document names in a pod namespace. Peer is set
// only when the other end of a veth is exactly where the document wants it:
// a veth end with Peer nil is one whose pair is broken or not ours.
type Observed struct {
	spec.Link
	// Up is whether the link is administratively up.
	Up bool
	// PeerUp and PeerMTU describe the peer end when Peer is set.
	PeerUp  bool
	PeerMTU int
}

// Observe returns the links we own in the host namespace and in every
// listed namespace that still exists (see Ownership), plus every link whose
// MAC the document knows as an ENI's, wherever it is. A veth pair the
// document names is reported once, as the item it names, with its peer.
// It only reads.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]Observed, error) {
	own := NewOwnership(desired)
	nss := Namespaces(ns, namespaces)
	// candidates[netns][name] are the veth ends and named links seen.
	candidates := map[string]map[string]netlink.Link{}
	var out []Observed
	for _, n := range nss {
		all, err := op.LinkList(ns, n)
		if err != nil {
			return nil, fmt.Errorf("list links in %s: %w", NetnsName(n), err)
		}
		candidates[n] = map[string]netlink.Link{}
		for _, l := range all {
			switch {
			case own.isKnownENI(l):
				out = append(out, observed(n, l, spec.LinkENI))
			case own.Owns(n, l):
				candidates[n][l.Attrs().Name] = l
			}
		}
	}

	ids := nsidCache{ns: ns, ids: map[[2]string]int{}}
	if desired != nil {
		for _, d := range desired.Links {
			if d.Kind != spec.LinkVeth || d.Peer == nil {
				continue
			}
			a, okA := candidates[d.Netns][d.Name]
			b, okB := candidates[d.Peer.Netns][d.Peer.Name]
			if !okA || !okB {
				continue
			}
			paired, err := ids.paired(d.Netns, a, d.Peer.Netns, b)
			if err != nil {
				return nil, fmt.Errorf("link %s: check veth peer %s in %s: %w", d.Key(), d.Peer.Name, NetnsName(d.Peer.Netns), err)
			}
			if !paired {
				continue
			}
			o := observed(d.Netns, a, spec.LinkVeth)
			o.Peer = &spec.VethPeer{Netns: d.Peer.Netns, Name: d.Peer.Name, MAC: NormalMAC(b.Attrs().HardwareAddr.String())}
			o.PeerUp = b.Attrs().RawFlags&upFlag != 0
			o.PeerMTU = b.Attrs().MTU
			out = append(out, o)
			delete(candidates[d.Netns], d.Name)
			delete(candidates[d.Peer.Netns], d.Peer.Name)
		}
	}
	for n, byName := range candidates {
		for _, l := range byName {
			kind := l.Type()
			if kind == "veth" {
				kind = spec.LinkVeth
			}
			out = append(out, observed(n, l, kind))
		}
	}
	slices.SortFunc(out, func(x, y Observed) int {
		return cmp.Or(cmp.Compare(x.Netns, y.Netns), cmp.Compare(x.Name, y.Name), cmp.Compare(x.MAC, y.MAC))
	})
	return out, nil
}

// upFlag is IFF_UP in the link's raw flags.
const upFlag = 0x1

func observed(netns string, l netlink.Link, kind string) Observed {
	a := l.Attrs()
	return Observed{
		Link: spec.Link{Netns: netns, Name: a.Name, Kind: kind, MAC: NormalMAC(a.HardwareAddr.String()), MTU: a.MTU},
		Up:   a.RawFlags&upFlag != 0,
	}
}

// nsidCache remembers the id one namespace gives another, which is how a
// veth end names the namespace of its peer (IFLA_LINK_NETNSID).
type nsidCache struct {
	ns  op.Namespaces
	ids map[[2]string]int
}

// id returns the id namespace from gives namespace to, or -1 when it has
// none (then no veth of from can have its peer in to). It only reads.
func (c *nsidCache) id(from, to string) (int, error) {
	k := [2]string{from, to}
	if v, ok := c.ids[k]; ok {
		return v, nil
	}
	h, err := c.ns.Handle(from)
	if err != nil {
		return 0, err
	}
	fd, err := c.ns.Fd(to)
	if err != nil {
		return 0, err
	}
	v, err := h.GetNetNsIdByFd(fd)
	if err != nil {
		return 0, fmt.Errorf("netns id of %s in %s: %w", NetnsName(to), NetnsName(from), err)
	}
	c.ids[k] = v
	return v, nil
}

// paired reports whether veth a in namespace na and veth b in nb are the
// two ends of one pair: each is the other's peer index, in the other's
// namespace.
func (c *nsidCache) paired(na string, a netlink.Link, nb string, b netlink.Link) (bool, error) {
	if a.Type() != "veth" || b.Type() != "veth" {
		return false, nil
	}
	aa, ba := a.Attrs(), b.Attrs()
	if aa.ParentIndex != ba.Index || ba.ParentIndex != aa.Index {
		return false, nil
	}
	if na == nb {
		return aa.NetNsID < 0 && ba.NetNsID < 0, nil
	}
	idB, err := c.id(na, nb)
	if err != nil {
		return false, err
	}
	idA, err := c.id(nb, na)
	if err != nil {
		return false, err
	}
	return idB >= 0 && aa.NetNsID == idB && idA >= 0 && ba.NetNsID == idA, nil
}
