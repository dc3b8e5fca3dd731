// Package neigh converges the permanent IPv4 neighbour (ARP) entries of a
// NodeState. An entry is ours when it is permanent and on a link we own
// (links.Ownership); entries the kernel learns (reachable, stale, …) and
// entries on other links are never read into a plan.
package neigh

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

// Kind is the Op.Kind of every neighbour operation.
const Kind = "neighbor"

// Observe returns the permanent IPv4 neighbour entries on the links we
// own, in the host namespace and each listed namespace that still exists.
// It only reads.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Neighbor, error) {
	var out []spec.Neighbor
	err := links.NewOwnership(desired).EachNamespace(ns, namespaces, "neighbours", nil,
		func(n string, h *netlink.Handle, names map[int]string) error {
			// One dump per namespace, not one per link: the host has a veth per pod.
			es, err := links.Dump(func() ([]netlink.Neigh, error) { return h.NeighList(0, netlink.FAMILY_V4) })
			if err != nil {
				return fmt.Errorf("list neighbours in %s: %w", links.NetnsName(n), err)
			}
			for _, e := range es {
				dev, ok := names[e.LinkIndex]
				if !ok || e.State&netlink.NUD_PERMANENT == 0 || e.IP.To4() == nil {
					continue
				}
				out = append(out, spec.Neighbor{Netns: n, Dev: dev, IP: e.IP.String(), MAC: links.NormalMAC(e.HardwareAddr.String())})
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, order)
	return out, nil
}

func norm(n spec.Neighbor) spec.Neighbor {
	if a, err := netip.ParseAddr(n.IP); err == nil {
		n.IP = a.String()
	}
	if m := links.NormalMAC(n.MAC); m != "" {
		n.MAC = m
	}
	n.Pod = ""
	return n
}

func key(n spec.Neighbor) string { return norm(n).Key() }

// order is the document's canonical order: host first, then each
// namespace by path; device; IP by value.
func order(a, b spec.Neighbor) int {
	a, b = norm(a), norm(b)
	ia, _ := netip.ParseAddr(a.IP)
	ib, _ := netip.ParseAddr(b.IP)
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Dev, b.Dev), ia.Compare(ib), cmp.Compare(a.IP, b.IP))
}

// Diff returns the deletions of our entries the document does not have,
// then creations and MAC changes (both written with a replace), in the
// document's order.
func Diff(desired, observed []spec.Neighbor) []op.Op {
	have := map[string]spec.Neighbor{}
	for _, o := range observed {
		have[key(o)] = o
	}
	want := map[string]bool{}
	ds := slices.Clone(desired)
	slices.SortStableFunc(ds, order)
	var dels, sets []op.Op
	for _, d := range ds {
		k := key(d)
		want[k] = true
		o, ok := have[k]
		switch {
		case !ok:
			sets = append(sets, setOp(op.Create, d, ""))
		case norm(o).MAC != norm(d).MAC:
			sets = append(sets, setOp(op.Update, d, "lladdr "+o.MAC+" → "+norm(d).MAC))
		}
	}
	obs := slices.Clone(observed)
	slices.SortStableFunc(obs, order)
	for _, o := range obs {
		if !want[key(o)] {
			want[key(o)] = true
			dels = append(dels, op.Op{
				Kind: Kind, Action: op.Delete, Key: o.Key(), Netns: o.Netns, Text: Describe(o), Writes: 1,
				Exec: func(_ context.Context, ns op.Namespaces) error { return del(ns, o) },
			})
		}
	}
	return append(dels, sets...)
}

// Describe prints an entry as `ip neigh` users write it.
func Describe(n spec.Neighbor) string {
	m := norm(n)
	return "neighbor " + m.IP + " lladdr " + m.MAC + " dev " + m.Dev + " nud permanent" + links.NetnsSuffix(n.Netns)
}

func setOp(a op.Action, d spec.Neighbor, what string) op.Op {
	text := Describe(d)
	if what != "" {
		text += ": " + what
	}
	return op.Op{
		Kind: Kind, Action: a, Key: d.Key(), Netns: d.Netns, Pod: d.Pod, Text: text, Writes: 1,
		Exec: func(_ context.Context, ns op.Namespaces) error { return set(ns, d) },
	}
}

func toKernel(h *netlink.Handle, n spec.Neighbor) (*netlink.Neigh, error) {
	ip, err := netip.ParseAddr(n.IP)
	if err != nil || !ip.Is4() {
		return nil, fmt.Errorf("ip: %q is not an IPv4 address", n.IP)
	}
	l, err := h.LinkByName(n.Dev)
	if err != nil {
		return nil, fmt.Errorf("dev %q: %w", n.Dev, err)
	}
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: ip.AsSlice()}, nil
}

// set creates or replaces the entry as permanent with the item's MAC.
func set(ns op.Namespaces, d spec.Neighbor) error {
	hw, err := net.ParseMAC(d.MAC)
	if err != nil {
		return fmt.Errorf("neighbor %s: mac: %q: %w", d.Key(), d.MAC, err)
	}
	h, err := ns.Handle(d.Netns)
	if err != nil {
		return fmt.Errorf("neighbor %s: %w", d.Key(), err)
	}
	k, err := toKernel(h, d)
	if err != nil {
		return fmt.Errorf("neighbor %s: %w", d.Key(), err)
	}
	k.HardwareAddr = hw
	if err := h.NeighSet(k); err != nil {
		return fmt.Errorf("neighbor %s: replace: %w", d.Key(), err)
	}
	return nil
}

func del(ns op.Namespaces, o spec.Neighbor) error {
	if !ns.Exists(o.Netns) {
		return nil
	}
	h, err := ns.Handle(o.Netns)
	if err != nil {
		return fmt.Errorf("neighbor %s: %w", o.Key(), err)
	}
	k, err := toKernel(h, o)
	if links.IsNotFound(err) {
		return nil // the link, and its entries, are gone
	}
	if err != nil {
		return fmt.Errorf("neighbor %s: %w", o.Key(), err)
	}
	if err := h.NeighDel(k); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("neighbor %s: delete: %w", o.Key(), err)
	}
	return nil
}
