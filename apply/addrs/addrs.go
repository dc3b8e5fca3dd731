// Package addrs converges the IPv4 addresses of a NodeState. An address
// is ours when it is on a link we own (links.Ownership): host tw* veths
// and ENI links by MAC, and in pod namespaces the links the document names
// there. Addresses on every other link are never read into a plan.
package addrs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every address operation.
const Kind = "address"

// Observe returns the IPv4 addresses on the links we own, in the host
// namespace and each listed namespace that still exists. IPv6 addresses
// (the kernel's link-local ones included) are not ours and not listed.
// It only reads.
//
// A namespace is read with one dump, not one per link: the host has a veth
// per pod. Where the plan's snapshot sees only some links (a plan scoped to
// a few pods), the kernel is asked for those links' addresses only; an
// address's key names its link, so that view is exact.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Address, error) {
	var out []spec.Address
	err := links.NewOwnership(desired).EachNamespace(ns, namespaces, "addresses", nil,
		func(n string, _ *netlink.Handle, names map[int]string) error {
			as, err := list(ns, n, names)
			if err != nil {
				return fmt.Errorf("list addresses in %s: %w", links.NetnsName(n), err)
			}
			for _, a := range as {
				if dev, ok := names[a.index]; ok {
					out = append(out, spec.Address{Netns: n, Dev: dev, CIDR: a.cidr.String()})
				}
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, order)
	return out, nil
}

// kernelAddr is what Observe reads of one address.
type kernelAddr struct {
	index int
	cidr  *net.IPNet
}

// list reads the IPv4 addresses of the namespace, or, where the snapshot
// is limited, of the named links only (the kernel filters by link).
func list(ns op.Namespaces, n string, names map[int]string) ([]kernelAddr, error) {
	if !op.Limited(ns, n) {
		return dump(ns, n, 0)
	}
	var out []kernelAddr
	for index := range names {
		as, err := dump(ns, n, index)
		if errors.Is(err, unix.ENODEV) {
			continue // the link, and its addresses, went away since it was listed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, as...)
	}
	return out, nil
}

func dump(ns op.Namespaces, n string, index int) ([]kernelAddr, error) {
	msgs, err := op.RouteDump(ns, n, unix.RTM_GETADDR, unix.RTM_NEWADDR,
		&nl.IfAddrmsg{IfAddrmsg: unix.IfAddrmsg{Family: unix.AF_INET, Index: uint32(index)}})
	if err != nil {
		return nil, err
	}
	out := make([]kernelAddr, 0, len(msgs))
	for _, m := range msgs {
		a, ok := parse(m)
		if ok && (index == 0 || a.index == index) {
			out = append(out, a)
		}
	}
	return out, nil
}

// parse decodes one IPv4 address message as the netlink library does: the
// local address with the prefix length, or alone (/32) when it has a peer.
func parse(m []byte) (kernelAddr, bool) {
	if len(m) < unix.SizeofIfAddrmsg {
		return kernelAddr{}, false
	}
	h := nl.DeserializeIfAddrmsg(m)
	if h.Family != unix.AF_INET {
		return kernelAddr{}, false
	}
	attrs := m[unix.SizeofIfAddrmsg:]
	address, hasAddress := op.Attr(attrs, unix.IFA_ADDRESS)
	local, hasLocal := op.Attr(attrs, unix.IFA_LOCAL)
	var ip net.IP
	bits := int(h.Prefixlen)
	switch {
	case hasLocal && (!hasAddress || !net.IP(local).Equal(address)):
		ip, bits = local, 8*len(local) // a peer address holds the prefix
	case hasAddress:
		ip = address
	default:
		return kernelAddr{}, false
	}
	if len(ip) != net.IPv4len {
		return kernelAddr{}, false
	}
	return kernelAddr{index: int(h.Index), cidr: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, 8*len(ip))}}, true
}

// norm writes the CIDR canonically (the address keeps its host bits: it is
// an interface address, not a network).
func norm(a spec.Address) spec.Address {
	if p, err := netip.ParsePrefix(a.CIDR); err == nil {
		a.CIDR = p.String()
	}
	a.Pod = ""
	return a
}

func key(a spec.Address) string { return norm(a).Key() }

// order is the document's canonical order: host first, then each
// namespace by path; device and CIDR.
func order(a, b spec.Address) int {
	a, b = norm(a), norm(b)
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Dev+"/"+a.CIDR, b.Dev+"/"+b.CIDR))
}

// Diff returns the deletions of our addresses the document does not have,
// then the additions, each in the document's order. An address has no
// content beyond its key, so there are no updates: a different prefix
// length is another key.
func Diff(desired, observed []spec.Address) []op.Op {
	want := map[string]bool{}
	for _, d := range desired {
		want[key(d)] = true
	}
	have := map[string]bool{}
	obs := slices.Clone(observed)
	slices.SortStableFunc(obs, order)
	var dels, adds []op.Op
	for _, o := range obs {
		have[key(o)] = true
		if !want[key(o)] {
			dels = append(dels, addrOp(op.Delete, o))
		}
	}
	ds := slices.Clone(desired)
	slices.SortStableFunc(ds, order)
	for _, d := range ds {
		if !have[key(d)] {
			adds = append(adds, addrOp(op.Create, d))
			have[key(d)] = true
		}
	}
	return append(dels, adds...)
}

// Describe prints an address as `ip addr` users write it.
func Describe(a spec.Address) string {
	return "address " + norm(a).CIDR + " dev " + a.Dev + links.NetnsSuffix(a.Netns)
}

func addrOp(act op.Action, a spec.Address) op.Op {
	o := op.Op{Kind: Kind, Action: act, Key: a.Key(), Netns: a.Netns, Text: Describe(a), Writes: 1}
	if act == op.Create {
		o.Pod = a.Pod
	}
	o.Exec = func(_ context.Context, ns op.Namespaces) error { return set(ns, a, act == op.Create) }
	return o
}

// set adds (add) or deletes the address. "Already there" on add and "not
// there" on delete are success.
func set(ns op.Namespaces, a spec.Address, add bool) error {
	p, err := netip.ParsePrefix(a.CIDR)
	if err != nil || !p.Addr().Is4() {
		return fmt.Errorf("address %s: cidr: %q is not an IPv4 address/prefix", a.Key(), a.CIDR)
	}
	if !add && !ns.Exists(a.Netns) {
		return nil
	}
	h, err := ns.Handle(a.Netns)
	if err != nil {
		return fmt.Errorf("address %s: %w", a.Key(), err)
	}
	l, err := h.LinkByName(a.Dev)
	if err != nil {
		if !add && links.IsNotFound(err) {
			return nil // the link, and its addresses, are gone
		}
		return fmt.Errorf("address %s: dev %q: %w", a.Key(), a.Dev, err)
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}
	if add {
		if err := h.AddrAdd(l, na); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address %s: add: %w", a.Key(), err)
		}
		return nil
	}
	if err := h.AddrDel(l, na); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("address %s: delete: %w", a.Key(), err)
	}
	return nil
}
