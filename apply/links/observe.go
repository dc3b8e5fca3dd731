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

	if desired != nil && op.Limited(ns, spec.HostNetns) {
		more, err := unrenamedENIs(ns, own, desired, out)
		if err != nil {
			return nil, err
		}
		out = append(out, more...)
	}

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
			isPair, err := paired(ns, d.Netns, a, d.Peer.Netns, b)
			if err != nil {
				return nil, fmt.Errorf("link %s: check veth peer %s in %s: %w", d.Key(), d.Peer.Name, NetnsName(d.Peer.Netns), err)
			}
			if !isPair {
				continue
			}
			o := observed(d.Netns, a, spec.LinkVeth)
			o.Peer = &spec.VethPeer{Netns: d.Peer.Netns, Name: d.Peer.Name, MAC: HardwareMAC(b.Attrs().HardwareAddr)}
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
		Link: spec.Link{Netns: netns, Name: a.Name, Kind: kind, MAC: HardwareMAC(a.HardwareAddr), MTU: a.MTU},
		Up:   a.RawFlags&upFlag != 0,
	}
}

// paired reports whether veth a in namespace na and veth b in nb are the
// two ends of one pair: each is the other's peer index, in the other's
// namespace.
func paired(ns op.Namespaces, na string, a netlink.Link, nb string, b netlink.Link) (bool, error) {
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
	idB, err := ns.NetnsID(na, nb)
	if err != nil {
		return false, err
	}
	idA, err := ns.NetnsID(nb, na)
	if err != nil {
		return false, err
	}
	return idB >= 0 && aa.NetNsID == idB && idA >= 0 && ba.NetNsID == idA, nil
}

// unrenamedENIs finds, for a scoped plan that looked host links up by
// name, the ENI links the document wants but the lookup missed: a freshly
// attached ENI has the guest's name until the first plan renames it. Only
// then is the host dumped whole.
func unrenamedENIs(ns op.Namespaces, own *Ownership, desired *spec.NodeState, seen []Observed) ([]Observed, error) {
	found := map[string]bool{}
	for _, o := range seen {
		found[o.MAC] = true
	}
	missing := false
	for _, d := range desired.Links {
		if d.Kind == spec.LinkENI && !found[NormalMAC(d.MAC)] {
			missing = true
		}
	}
	if !missing {
		return nil, nil
	}
	all, err := op.FullLinkList(ns, spec.HostNetns)
	if err != nil {
		return nil, fmt.Errorf("list links in the host: %w", err)
	}
	var out []Observed
	for _, l := range all {
		if own.isKnownENI(l) && !found[HardwareMAC(l.Attrs().HardwareAddr)] {
			out = append(out, observed(spec.HostNetns, l, spec.LinkENI))
		}
	}
	return out, nil
}
