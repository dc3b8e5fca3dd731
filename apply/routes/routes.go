// Package routes converges the IPv4 routes of a NodeState. A route is ours
// when it carries spec.RouteProtocol, in any table and any namespace the
// document names; every other route is never read into a plan, changed or
// deleted (DESIGN.md §4).
package routes

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every route operation.
const Kind = "route"

func scopeName(s netlink.Scope) string {
	switch s {
	case netlink.SCOPE_UNIVERSE:
		return ""
	case netlink.SCOPE_LINK:
		return spec.ScopeLink
	case netlink.SCOPE_HOST:
		return "host"
	case netlink.SCOPE_SITE:
		return "site"
	}
	return strconv.Itoa(int(s))
}

// norm is a route in the form two equal routes share: main table as 254,
// "0.0.0.0/0" as default, universe scope as "", MACs and addresses in
// canonical text.
func norm(r spec.Route) spec.Route {
	r.Table = r.TableID()
	r.Dst = normDst(r.Dst)
	if a, err := netip.ParseAddr(r.Gw); err == nil {
		r.Gw = a.String()
	}
	if r.Scope == spec.ScopeUniverse {
		r.Scope = ""
	}
	r.Pod = ""
	return r
}

func normDst(dst string) string {
	if dst == "0.0.0.0/0" {
		return "default"
	}
	if p, err := netip.ParsePrefix(dst); err == nil {
		return p.Masked().String()
	}
	return dst
}

// key is norm(r).Key(), normalising only what the key holds.
func key(r spec.Route) string {
	r.Table, r.Dst = r.TableID(), normDst(r.Dst)
	return r.Key()
}

// orderBy is the document's canonical route order: host first, then each
// namespace by path; table id; destination (dstA and dstB, normalised) by
// value.
func orderBy(a, b spec.Route, dstA, dstB string) int {
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.TableID(), b.TableID()), spec.CompareValues(dstA, dstB))
}

// sortRoutes sorts in orderBy's order, normalising each destination once rather than
// at every comparison: a full plan sorts a route per pod.
func sortRoutes(rs []spec.Route) {
	type item struct {
		r   spec.Route
		dst string
	}
	items := make([]item, len(rs))
	for i, r := range rs {
		items[i] = item{r, normDst(r.Dst)}
	}
	slices.SortStableFunc(items, func(a, b item) int { return orderBy(a.r, b.r, a.dst, b.dst) })
	for i := range items {
		rs[i] = items[i].r
	}
}

// Diff returns deletions of our routes the document no longer has, then
// creations and in-place replacements, each in the document's order.
func Diff(desired, observed []spec.Route) []op.Op {
	have := map[string]spec.Route{}
	for _, o := range observed {
		have[key(o)] = o
	}
	want := slices.Clone(desired)
	sortRoutes(want)
	wanted := map[string]bool{}
	var dels, sets []op.Op
	for _, d := range want {
		k := key(d)
		wanted[k] = true
		o, ok := have[k]
		switch {
		case !ok:
			sets = append(sets, setOp(op.Create, d, ""))
		case changes(d, o) != "":
			sets = append(sets, setOp(op.Update, d, changes(d, o)))
		}
	}
	for _, o := range observed {
		if !wanted[key(o)] {
			dels = append(dels, deleteOp(o))
			wanted[key(o)] = true // one delete per key
		}
	}
	return append(dels, sets...)
}

// changes describes what differs between the desired and the observed
// route of one key, or "" when nothing does.
func changes(d, o spec.Route) string {
	d, o = norm(d), norm(o)
	var parts []string
	if d.Gw != o.Gw {
		parts = append(parts, "via "+orNone(o.Gw)+" → "+orNone(d.Gw))
	}
	if d.Dev != o.Dev {
		parts = append(parts, "dev "+orNone(o.Dev)+" → "+orNone(d.Dev))
	}
	if d.Scope != o.Scope {
		parts = append(parts, "scope "+orUniverse(o.Scope)+" → "+orUniverse(d.Scope))
	}
	if d.Onlink != o.Onlink {
		parts = append(parts, fmt.Sprintf("onlink %v → %v", o.Onlink, d.Onlink))
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orUniverse(s string) string {
	if s == "" {
		return spec.ScopeUniverse
	}
	return s
}

// Describe prints a route the way `ip route` does, with our protocol and,
// outside the host, the namespace.
func Describe(r spec.Route) string {
	n := norm(r)
	var b strings.Builder
	b.WriteString("route " + n.Dst)
	if n.Gw != "" {
		b.WriteString(" via " + n.Gw)
	}
	b.WriteString(" dev " + n.Dev)
	if n.Scope != "" {
		b.WriteString(" scope " + n.Scope)
	}
	if n.Onlink {
		b.WriteString(" onlink")
	}
	if n.Table == spec.MainTable {
		b.WriteString(" table main")
	} else {
		b.WriteString(" table " + strconv.Itoa(n.Table))
	}
	b.WriteString(" proto terway")
	b.WriteString(links.NetnsSuffix(r.Netns))
	return b.String()
}

func setOp(a op.Action, d spec.Route, what string) op.Op {
	text := Describe(d)
	if what != "" {
		text += ": " + what
	}
	return op.Op{
		Kind: Kind, Action: a, Key: d.Key(), Netns: d.Netns, Pod: d.Pod, Text: text, Writes: 1,
		Exec: func(_ context.Context, ns op.Namespaces) error { return set(ns, d, a == op.Update) },
	}
}

func deleteOp(o spec.Route) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Delete, Key: o.Key(), Netns: o.Netns, Text: Describe(o), Writes: 1,
		Exec: func(_ context.Context, ns op.Namespaces) error { return del(ns, o) },
	}
}

// toKernel builds the netlink route of a document route.
func toKernel(h *netlink.Handle, r spec.Route) (*netlink.Route, error) {
	n := norm(r)
	dst, err := dstNet(n.Dst)
	if err != nil {
		return nil, err
	}
	kr := &netlink.Route{Dst: dst, Table: n.Table, Protocol: netlink.RouteProtocol(spec.RouteProtocol), Family: netlink.FAMILY_V4}
	if n.Gw != "" {
		a, err := netip.ParseAddr(n.Gw)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("gw: %q is not an IPv4 address", r.Gw)
		}
		kr.Gw = a.AsSlice()
	}
	switch n.Scope {
	case "":
		kr.Scope = netlink.SCOPE_UNIVERSE
	case spec.ScopeLink:
		kr.Scope = netlink.SCOPE_LINK
	default:
		return nil, fmt.Errorf("scope: %q is not %q or %q", r.Scope, spec.ScopeLink, spec.ScopeUniverse)
	}
	if n.Onlink {
		kr.Flags = int(netlink.FLAG_ONLINK)
	}
	l, err := h.LinkByName(n.Dev)
	if err != nil {
		return nil, fmt.Errorf("dev: %q: %w", n.Dev, err)
	}
	kr.LinkIndex = l.Attrs().Index
	return kr, nil
}

// dstNet parses a normalised destination.
func dstNet(dst string) (*net.IPNet, error) {
	if dst == "default" {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, nil
	}
	p, err := netip.ParsePrefix(dst)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("dst: %q is not \"default\" or an IPv4 CIDR", dst)
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, nil
}

// set adds the route (create) or replaces ours in place (update). A
// create that finds a route of the same destination and table replaces it
// when that route is ours, and otherwise says whose it is: we never
// replace a route we do not own.
func set(ns op.Namespaces, d spec.Route, replace bool) error {
	h, err := ns.Handle(d.Netns)
	if err != nil {
		return fmt.Errorf("route %s: %w", d.Key(), err)
	}
	kr, err := toKernel(h, d)
	if err != nil {
		return fmt.Errorf("route %s: %w", d.Key(), err)
	}
	if replace {
		if err := h.RouteReplace(kr); err != nil {
			return fmt.Errorf("route %s: replace: %w", d.Key(), err)
		}
		return nil
	}
	err = h.RouteAdd(kr)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		if err != nil {
			return fmt.Errorf("route %s: add: %w", d.Key(), err)
		}
		return nil
	}
	same, lerr := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: kr.Dst, Table: kr.Table},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if lerr != nil {
		return fmt.Errorf("route %s: add: %w (and listing the one in the way: %w)", d.Key(), err, lerr)
	}
	for _, r := range same {
		if r.Protocol == netlink.RouteProtocol(spec.RouteProtocol) {
			// Ours: made it what the document wants. A scoped plan does
			// not look for a route of a new link's key elsewhere
			// (Observe): one left on another link by an address reused
			// before its old route went is this.
			if err := h.RouteReplace(kr); err != nil {
				return fmt.Errorf("route %s: replace ours in the way: %w", d.Key(), err)
			}
			return nil
		}
	}
	protos := make([]string, 0, len(same))
	for _, r := range same {
		protos = append(protos, r.Protocol.String())
	}
	return fmt.Errorf("route %s: add: a route we do not own (protocol %s) has this destination and table: %w",
		d.Key(), strings.Join(protos, ", "), err)
}

// del deletes our route of the destination and table: the request carries
// our protocol, so the kernel never matches anyone else's.
func del(ns op.Namespaces, o spec.Route) error {
	if !ns.Exists(o.Netns) {
		return nil
	}
	h, err := ns.Handle(o.Netns)
	if err != nil {
		return fmt.Errorf("route %s: %w", o.Key(), err)
	}
	n := norm(o)
	dst, err := dstNet(n.Dst)
	if err != nil {
		return fmt.Errorf("route %s: %w", o.Key(), err)
	}
	kr := &netlink.Route{Dst: dst, Table: n.Table, Protocol: netlink.RouteProtocol(spec.RouteProtocol),
		Scope: netlink.SCOPE_NOWHERE, Family: netlink.FAMILY_V4}
	// On the observed route's link only: of two routes of one key (a
	// metric apart), the kernel would otherwise delete the first it finds,
	// which may sit on another pod's link. A link gone since takes its
	// routes with it; one we cannot name leaves the key alone to decide.
	if n.Dev != "" {
		if index, ok := linkIndex(h, n.Dev); ok {
			kr.LinkIndex = index
		}
	}
	if err := h.RouteDel(kr); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("route %s: delete: %w", o.Key(), err)
	}
	return nil
}

// linkIndex finds a link by the name Observe gave it: its name, or "ifN"
// (index N) for a link it did not name.
func linkIndex(h *netlink.Handle, dev string) (int, bool) {
	if l, err := h.LinkByName(dev); err == nil {
		return l.Attrs().Index, true
	}
	if rest, ok := strings.CutPrefix(dev, "if"); ok {
		if i, err := strconv.Atoi(rest); err == nil && i > 0 {
			return i, true
		}
	}
	return 0, false
}
