// Package tc converges the bandwidth limits of a NodeState: one root TBF
// qdisc, handle 1:, per shaped link. Only root TBF qdiscs on links we own
// are observed, replaced or deleted: host tw* veths and the pod-side links
// the document names (never an ENI in the host, never anyone else's link,
// never a qdisc of another kind).
package tc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every qdisc operation.
const Kind = "qdisc"

// Handle is the handle of every qdisc we make (1:), so that a rate change
// replaces it in place.
var Handle = netlink.MakeHandle(1, 0)

// Observe returns the root TBF qdiscs on the links we shape, in the host
// namespace and each listed namespace that still exists. The burst is
// computed back from the time the kernel stores (see BurstTolerance). It
// only reads.
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Qdisc, error) {
	own := links.NewOwnership(desired)
	notENI := func(n string, l netlink.Link) bool { return n == spec.HostNetns && own.IsENI(l) }
	var out []spec.Qdisc
	err := own.EachNamespace(ns, namespaces, "qdiscs", notENI,
		func(n string, h *netlink.Handle, names map[int]string) error {
			if !mayHaveTBF(ns, n, names) {
				return nil
			}
			// One dump per namespace, not one per link: the host has a veth
			// per pod, and the kernel's qdisc dump has no link filter.
			qs, err := links.Dump(func() ([]netlink.Qdisc, error) { return h.QdiscList(nil) })
			if err != nil {
				return fmt.Errorf("list qdiscs in %s: %w", links.NetnsName(n), err)
			}
			for _, q := range qs {
				dev, ok := names[q.Attrs().LinkIndex]
				if tbf, isTBF := q.(*netlink.Tbf); ok && isTBF && q.Attrs().Parent == netlink.HANDLE_ROOT {
					out = append(out, fromKernel(n, dev, tbf))
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

// mayHaveTBF reports whether one of the links may have a root TBF. The
// plan's snapshot knows each link's root qdisc kind from the link list
// (IFLA_QDISC), so most namespaces, whose links have their default qdisc,
// need no qdisc dump at all: a full plan skips one dump per pod, and a
// scoped plan skips the host's, which lists a qdisc per pod. A link whose
// kind is not known counts as a maybe.
func mayHaveTBF(ns op.Namespaces, netns string, names map[int]string) bool {
	for index := range names {
		if kind, ok := op.RootQdisc(ns, netns, index); !ok || kind == (&netlink.Tbf{}).Type() {
			return true
		}
	}
	return false
}

// rootTBF returns the link's root qdisc if it is a TBF, else nil.
func rootTBF(h *netlink.Handle, l netlink.Link) (*netlink.Tbf, error) {
	qs, err := links.Dump(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if tbf, ok := q.(*netlink.Tbf); ok && q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().LinkIndex == l.Attrs().Index {
			return tbf, nil
		}
	}
	return nil, nil
}

func fromKernel(netns, dev string, t *netlink.Tbf) spec.Qdisc {
	return spec.Qdisc{
		Netns: netns, Dev: dev, Kind: spec.QdiscTBF,
		RateBitsPerSecond: t.Rate * 8,
		BurstBytes:        netlink.Xmitsize(t.Rate, t.Buffer),
		LimitBytes:        t.Limit,
	}
}

// order is the document's canonical order: host first, then each
// namespace by path; device.
func order(a, b spec.Qdisc) int {
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Dev, b.Dev))
}

// BurstTolerance is how far an observed burst may be from the desired one
// and still count as equal. The kernel keeps the bucket as a time in
// scheduler ticks, not bytes: writing truncates the time to a microsecond
// and then to a tick, reading truncates it to a microsecond again and the
// bytes to a byte, so a burst comes back up to about two microseconds of
// traffic short. Three microseconds of traffic plus two bytes covers it.
func BurstTolerance(rateBitsPerSecond uint64) uint64 {
	return rateBitsPerSecond/8*3/1_000_000 + 2
}

// Equal reports whether two qdiscs are the same to the kernel: same rate
// in bytes per second (the kernel's unit), same limit, and bursts within
// BurstTolerance.
func Equal(a, b spec.Qdisc) bool {
	if a.Kind != b.Kind || a.RateBitsPerSecond/8 != b.RateBitsPerSecond/8 || a.LimitBytes != b.LimitBytes {
		return false
	}
	d := int64(a.BurstBytes) - int64(b.BurstBytes)
	if d < 0 {
		d = -d
	}
	return uint64(d) <= BurstTolerance(max(a.RateBitsPerSecond, b.RateBitsPerSecond))
}

// Diff returns the deletions of our TBFs the document does not have, then
// creations and in-place replacements, in the document's order.
func Diff(desired, observed []spec.Qdisc) []op.Op {
	have := map[string]spec.Qdisc{}
	for _, o := range observed {
		have[o.Key()] = o
	}
	want := map[string]bool{}
	ds := slices.Clone(desired)
	slices.SortStableFunc(ds, order)
	var dels, sets []op.Op
	for _, d := range ds {
		want[d.Key()] = true
		o, ok := have[d.Key()]
		switch {
		case !ok:
			sets = append(sets, setOp(op.Create, d, nil))
		case !Equal(d, o):
			sets = append(sets, setOp(op.Update, d, &o))
		}
	}
	obs := slices.Clone(observed)
	slices.SortStableFunc(obs, order)
	for _, o := range obs {
		if !want[o.Key()] {
			want[o.Key()] = true
			dels = append(dels, op.Op{
				Kind: Kind, Action: op.Delete, Key: o.Key(), Netns: o.Netns, Text: Describe(o), Writes: 1,
				Exec: func(_ context.Context, ns op.Namespaces) error { return del(ns, o) },
			})
		}
	}
	return append(dels, sets...)
}

// Describe prints a qdisc the way `tc qdisc` users write it, in exact
// units.
func Describe(q spec.Qdisc) string {
	return fmt.Sprintf("qdisc %s 1: dev %s root %s%s", q.Kind, q.Dev, params(q), links.NetnsSuffix(q.Netns))
}

func params(q spec.Qdisc) string {
	return fmt.Sprintf("rate %dbit burst %db limit %db", q.RateBitsPerSecond, q.BurstBytes, q.LimitBytes)
}

func setOp(a op.Action, d spec.Qdisc, was *spec.Qdisc) op.Op {
	text := Describe(d)
	if was != nil {
		text += " (was " + params(*was) + ")"
	}
	return op.Op{
		Kind: Kind, Action: a, Key: d.Key(), Netns: d.Netns, Pod: d.Pod, Text: text, Writes: 1,
		Exec: func(_ context.Context, ns op.Namespaces) error { return set(ns, d) },
	}
}

// toKernel builds the TBF. The bucket is given to the kernel as the time
// the burst takes at the rate, in scheduler ticks, which must fit 32 bits.
func toKernel(q spec.Qdisc, linkIndex int) (*netlink.Tbf, error) {
	if q.Kind != spec.QdiscTBF {
		return nil, fmt.Errorf("kind: %q is not supported, want %q", q.Kind, spec.QdiscTBF)
	}
	rate := q.RateBitsPerSecond / 8
	if rate == 0 {
		return nil, fmt.Errorf("rateBitsPerSecond: %d is less than one byte per second", q.RateBitsPerSecond)
	}
	if q.BurstBytes == 0 || q.LimitBytes == 0 {
		return nil, errors.New("burstBytes: burst and limit must be positive")
	}
	usec := 1e6 * float64(q.BurstBytes) / float64(rate)
	if usec*netlink.TickInUsec() > math.MaxUint32 {
		return nil, fmt.Errorf("burstBytes: %d bytes take %.0fs at %d bit/s, longer than TBF can store", q.BurstBytes, usec/1e6, q.RateBitsPerSecond)
	}
	return &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: linkIndex, Handle: Handle, Parent: netlink.HANDLE_ROOT},
		Rate:       rate,
		Limit:      q.LimitBytes,
		Buffer:     netlink.Xmittime(rate, q.BurstBytes),
	}, nil
}

// set creates or replaces the link's root qdisc with the TBF: the link is
// ours, so whatever root qdisc it has gives way.
func set(ns op.Namespaces, q spec.Qdisc) error {
	h, err := ns.Handle(q.Netns)
	if err != nil {
		return fmt.Errorf("qdisc %s: %w", q.Key(), err)
	}
	l, err := h.LinkByName(q.Dev)
	if err != nil {
		return fmt.Errorf("qdisc %s: dev %q: %w", q.Key(), q.Dev, err)
	}
	tbf, err := toKernel(q, l.Attrs().Index)
	if err != nil {
		return fmt.Errorf("qdisc %s: %w", q.Key(), err)
	}
	if err := h.QdiscReplace(tbf); err != nil {
		return fmt.Errorf("qdisc %s: replace: %w", q.Key(), err)
	}
	return nil
}

// del deletes the link's root qdisc if it is still a TBF (by its actual
// handle); a link or qdisc that is gone is success.
func del(ns op.Namespaces, q spec.Qdisc) error {
	if !ns.Exists(q.Netns) {
		return nil
	}
	h, err := ns.Handle(q.Netns)
	if err != nil {
		return fmt.Errorf("qdisc %s: %w", q.Key(), err)
	}
	l, err := h.LinkByName(q.Dev)
	if links.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("qdisc %s: dev %q: %w", q.Key(), q.Dev, err)
	}
	tbf, err := rootTBF(h, l)
	if err != nil {
		return fmt.Errorf("qdisc %s: list: %w", q.Key(), err)
	}
	if tbf == nil {
		return nil
	}
	if err := h.QdiscDel(tbf); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("qdisc %s: delete: %w", q.Key(), err)
	}
	return nil
}
