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
	"github.com/vishvananda/netlink/nl"
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
//
// A namespace is read with one dump, not one per link: the host has a veth
// per pod. Where the plan's snapshot sees only some links (a plan scoped to
// a few pods), the kernel is asked for those links' entries only, so that
// such a plan does not read every pod's entries; an entry's key names its
// link, so that view is exact.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Neighbor, error) {
	var out []spec.Neighbor
	err := links.NewOwnership(desired).EachNamespace(ns, namespaces, "neighbours", nil,
		func(n string, _ *netlink.Handle, names map[int]string) error {
			es, err := list(ns, n, names)
			if err != nil {
				return fmt.Errorf("list neighbours in %s: %w", links.NetnsName(n), err)
			}
			for _, e := range es {
				dev, ok := names[e.LinkIndex]
				if !ok || e.State&netlink.NUD_PERMANENT == 0 || e.IP.To4() == nil {
					continue
				}
				out = append(out, spec.Neighbor{Netns: n, Dev: dev, IP: e.IP.String(), MAC: links.HardwareMAC(e.HardwareAddr)})
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(out, order)
	return out, nil
}

// list reads the IPv4 entries of the namespace, or, where the snapshot is
// limited, of the named links only.
func list(ns op.Namespaces, n string, names map[int]string) ([]*netlink.Neigh, error) {
	if !op.Limited(ns, n) {
		return dump(ns, n, 0)
	}
	var out []*netlink.Neigh
	for index := range names {
		es, err := dump(ns, n, index)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

// dump reads the IPv4 entries, on link index only when it is not 0. The
// link goes in NDA_IFINDEX, which the kernel filters on; the netlink
// library puts it in the header, where a dump ignores it.
func dump(ns op.Namespaces, n string, index int) ([]*netlink.Neigh, error) {
	data := []nl.NetlinkRequestData{&netlink.Ndmsg{Family: netlink.FAMILY_V4}}
	if index != 0 {
		data = append(data, nl.NewRtAttr(unix.NDA_IFINDEX, nl.Uint32Attr(uint32(index))))
	}
	msgs, err := op.RouteDump(ns, n, unix.RTM_GETNEIGH, unix.RTM_NEWNEIGH, data...)
	if err != nil {
		return nil, err
	}
	out := make([]*netlink.Neigh, 0, len(msgs))
	for _, m := range msgs {
		e, err := netlink.NeighDeserialize(m)
		if err != nil {
			return nil, err
		}
		if e.Family == netlink.FAMILY_V4 && (index == 0 || e.LinkIndex == index) {
			out = append(out, e)
		}
	}
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

// key is norm(n).Key() without normalising the MAC, which the key does not
// hold: the full plan keys and sorts an entry per pod.
func key(n spec.Neighbor) string {
	if a, err := netip.ParseAddr(n.IP); err == nil {
		n.IP = a.String()
	}
	return n.Key()
}

// order is the document's canonical order: host first, then each
// namespace by path; device; IP by value (by text when neither parses).
func order(a, b spec.Neighbor) int {
	ia, errA := netip.ParseAddr(a.IP)
	ib, errB := netip.ParseAddr(b.IP)
	if c := cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Dev, b.Dev), ia.Compare(ib)); c != 0 || errA == nil || errB == nil {
		return c
	}
	return cmp.Compare(a.IP, b.IP)
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
