package links

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Ownership answers "is this link ours?" for one desired document
// (DESIGN.md §4). The kinds that live on links (addresses, neighbours,
// qdiscs) ask it too, so that every kind draws the same line:
//
//   - host namespace: veths whose name starts with spec.HostVethPrefix, the
//     veth ends the document names there, and ENI links whose MAC a desired
//     eni item names. A host interface is never ours by name alone: "eth1"
//     may be the node's own NIC until the ENI with the right MAC is renamed.
//   - pod namespaces: the links the document names there (veth ends and eni
//     items), and ENI links by MAC. Only the CNI puts links into a pod
//     namespace, so a name the document gives there is ours.
type Ownership struct {
	// eniMACs are the MACs of desired eni items, normalised.
	eniMACs map[string]bool
	// knownENIs adds the MACs the document's eni section lists: ENIs the
	// node has even if no link item wants them right now. links uses them
	// to send an ENI left in a pod namespace back to the host.
	knownENIs map[string]bool
	// named maps a namespace to the link names the document gives there.
	named map[string]map[string]bool
}

// NewOwnership indexes the desired document. A nil document owns only the
// host's tw* veths.
func NewOwnership(desired *spec.NodeState) *Ownership {
	o := &Ownership{eniMACs: map[string]bool{}, knownENIs: map[string]bool{}, named: map[string]map[string]bool{}}
	if desired == nil {
		return o
	}
	name := func(netns, n string) {
		if o.named[netns] == nil {
			o.named[netns] = map[string]bool{}
		}
		o.named[netns][n] = true
	}
	for _, l := range desired.Links {
		switch l.Kind {
		case spec.LinkVeth:
			name(l.Netns, l.Name)
			if l.Peer != nil {
				name(l.Peer.Netns, l.Peer.Name)
			}
		case spec.LinkENI:
			if m := NormalMAC(l.MAC); m != "" {
				o.eniMACs[m] = true
				o.knownENIs[m] = true
			}
			if l.Netns != spec.HostNetns {
				name(l.Netns, l.Name)
			}
		}
	}
	if desired.ENI != nil {
		for _, e := range desired.ENI.ENIs {
			if m := NormalMAC(e.MAC); m != "" {
				o.knownENIs[m] = true
			}
		}
	}
	return o
}

// IsENI reports whether the link is an ENI a desired eni item names.
func (o *Ownership) IsENI(l netlink.Link) bool {
	// Asked of every link by every kind on every plan: no MAC text when no
	// ENI is wanted (VPC mode).
	return len(o.eniMACs) > 0 && o.eniMACs[HardwareMAC(l.Attrs().HardwareAddr)]
}

// isKnownENI reports whether the link is an ENI the document knows of, as
// an eni item or in the eni section.
func (o *Ownership) isKnownENI(l netlink.Link) bool {
	return len(o.knownENIs) > 0 && o.knownENIs[HardwareMAC(l.Attrs().HardwareAddr)]
}

// Named reports whether the document names a link called name in netns
// (for the host: as a veth end).
func (o *Ownership) Named(netns, name string) bool { return o.named[netns][name] }

// Owns reports whether the link in netns is ours (see Ownership).
func (o *Ownership) Owns(netns string, l netlink.Link) bool {
	if o.IsENI(l) {
		return true
	}
	name := l.Attrs().Name
	if netns == spec.HostNetns {
		return l.Type() == "veth" && (strings.HasPrefix(name, spec.HostVethPrefix) || o.Named(netns, name))
	}
	return o.Named(netns, name)
}

// List returns the links of netns that we own, for the kinds that live on
// links. It only reads (through the plan's snapshot when ns is one).
func (o *Ownership) List(ns op.Namespaces, netns string) ([]netlink.Link, error) {
	all, err := op.LinkList(ns, netns)
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", NetnsName(netns), err)
	}
	var out []netlink.Link
	for _, l := range all {
		if o.Owns(netns, l) {
			out = append(out, l)
		}
	}
	return out, nil
}

// Namespaces returns the namespaces an Observe looks at: the host first,
// then each listed namespace once, sorted, leaving out the ones that no
// longer exist (a pod whose sandbox is gone has nothing to observe).
func Namespaces(ns op.Namespaces, listed []string) []string {
	out := []string{spec.HostNetns}
	rest := slices.Clone(listed)
	slices.Sort(rest)
	for _, n := range slices.Compact(rest) {
		if n != spec.HostNetns && ns.Exists(n) {
			out = append(out, n)
		}
	}
	return out
}

// dumpTries bounds the retries of a dump the kernel marked interrupted.
// A dump is interrupted when the table changes while it is read; a few
// retries get a consistent view on any node that is not churning wildly.
const dumpTries = 5

// Dump runs a netlink dump and retries it while the kernel reports it
// interrupted, so that an Observe never plans from a torn view.
func Dump[T any](fn func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for range dumpTries {
		v, err = fn()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, fmt.Errorf("dump still interrupted after %d tries: %w", dumpTries, err)
}

// NetnsName names a namespace in messages: "host" or its path.
func NetnsName(netns string) string {
	if netns == spec.HostNetns {
		return "host"
	}
	return netns
}

// NetnsSuffix is what a plan line ends with for an item outside the host
// namespace: " netns PATH", as `ip -n` users read it; empty for the host.
func NetnsSuffix(netns string) string {
	if netns == spec.HostNetns {
		return ""
	}
	return " netns " + netns
}

// NormalMAC returns the MAC in lower-case colon form, or "" when it does
// not parse, so that MACs written differently compare equal.
func NormalMAC(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) == 0 {
		return ""
	}
	return hw.String()
}

// HardwareMAC is NormalMAC of a link's (or neighbour's) hardware address,
// without the round trip through text: the address forms net.ParseMAC
// accepts print in normal form already, and the others are not MACs.
func HardwareMAC(hw net.HardwareAddr) string {
	switch len(hw) {
	case 6, 8, 20:
		return hw.String()
	}
	return ""
}

// IsNotFound reports whether a netlink error means the object is gone.
func IsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// EachNamespace visits the host and each listed namespace that still exists,
// with its netlink handle and the names (by ifindex) of the links we own
// there; a namespace with no such link is skipped. skip, when set, leaves out
// some owned links (tc does not shape ENIs). It is the common walk of the
// kinds that live on our links: addresses, neighbours, qdiscs. what names the
// kind in errors.
func (o *Ownership) EachNamespace(ns op.Namespaces, namespaces []string, what string,
	skip func(netns string, l netlink.Link) bool, fn func(netns string, h *netlink.Handle, names map[int]string) error) error {
	for _, n := range Namespaces(ns, namespaces) {
		h, err := ns.Handle(n)
		if err != nil {
			return fmt.Errorf("observe %s in %s: %w", what, NetnsName(n), err)
		}
		owned, err := o.List(ns, n)
		if err != nil {
			return err
		}
		names := make(map[int]string, len(owned))
		for _, l := range owned {
			if skip == nil || !skip(n, l) {
				names[l.Attrs().Index] = l.Attrs().Name
			}
		}
		if len(names) == 0 {
			continue
		}
		if err := fn(n, h, names); err != nil {
			return err
		}
	}
	return nil
}
