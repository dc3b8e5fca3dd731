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
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Address, error) {
	var out []spec.Address
	err := links.NewOwnership(desired).EachNamespace(ns, namespaces, "addresses", nil,
		func(n string, h *netlink.Handle, names map[int]string) error {
			// One dump per namespace, not one per link: the host has a veth per pod.
			as, err := links.Dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
			if err != nil {
				return fmt.Errorf("list addresses in %s: %w", links.NetnsName(n), err)
			}
			for _, a := range as {
				dev, ok := names[a.LinkIndex]
				if !ok || a.IPNet == nil || a.IP.To4() == nil {
					continue
				}
				out = append(out, spec.Address{Netns: n, Dev: dev, CIDR: a.IPNet.String()})
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, order)
	return out, nil
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
