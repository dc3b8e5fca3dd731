package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Observe returns the IPv4 routes with our protocol, in every table, in the
// host namespace and in each listed namespace that still exists. Table is 0
// for main, as in the document. It only reads.
//
// The kernel filters the dumps by our protocol, so another's routes are
// never even sent. Where the plan's snapshot sees only some links of a
// namespace (a plan scoped to a few pods), it also filters by those links;
// since a route's key has no device, that view is complete only if it holds
// every key the document wants there: a wanted route that is missing might
// sit on another link (an IP reused before its old route was removed), so
// then the whole namespace is read, as a full plan would, and of it the
// routes of wanted keys and those on the listed links are returned. A
// wanted route on a listed link that does not exist yet (the plan creates
// it: a CNI ADD's veth) is not looked for: its create replaces a route of
// ours of its key found elsewhere (set).
func Observe(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]spec.Route, error) {
	var out []spec.Route
	for _, n := range links.Namespaces(ns, namespaces) {
		rs, err := observeNetns(ns, n, desired)
		if err != nil {
			return nil, fmt.Errorf("list routes in %s: %w", links.NetnsName(n), err)
		}
		out = append(out, rs...)
	}
	sortRoutes(out)
	return out, nil
}

func observeNetns(ns op.Namespaces, n string, desired *spec.NodeState) ([]spec.Route, error) {
	all, err := op.LinkList(ns, n)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := make(map[int]string, len(all))
	for _, l := range all {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	listed, limited := op.LimitedTo(ns, n)
	var wanted map[routeKey]bool
	if limited {
		present := make(map[string]bool, len(names))
		for _, name := range names {
			present[name] = true
		}
		// mustSee are the wanted keys the listed links must show for the
		// view to be complete. A route on a link the plan creates (a CNI
		// ADD's veth) is not there yet; one of its key on another link
		// (its address reused before the old route went) is replaced by
		// the create (set). Without this, every ADD read the whole table.
		wanted = map[routeKey]bool{}
		mustSee := map[routeKey]bool{}
		for _, d := range desiredRoutes(desired) {
			k, ok := wantedKey(d)
			if !ok || d.Netns != n {
				continue
			}
			wanted[k] = true
			if d.Dev == "" || present[d.Dev] || !slices.Contains(listed, d.Dev) {
				mustSee[k] = true
			}
		}
		out, complete, err := observeLinks(ns, n, all, names, mustSee)
		if err != nil || complete {
			return out, err
		}
	}
	krs, err := dump(ns, n, 0)
	if err != nil {
		return nil, err
	}
	if limited {
		return scopedRoutes(ns, n, krs, names, wanted)
	}
	out := make([]spec.Route, 0, len(krs))
	for _, r := range krs {
		out = append(out, fromKernel(n, r, names))
	}
	return out, nil
}

// scopedRoutes keeps, of a namespace's routes read whole (krs) for a plan
// whose snapshot lists only some links, the routes of wanted keys, named
// by their link wherever it is, and every route of a key that has one on
// a listed link. The others are other pods' routes: the scoped plan would
// only drop their deletion (engine's podScope.filter), after diffing and
// sorting every pod's route for it. A key kept keeps all of its routes,
// so that its one deletion is the one a full read plans. The others are
// passed over by their key in the kernel's form, without being turned
// into the document's: on a node of 250 pods they are all but a few.
func scopedRoutes(ns op.Namespaces, n string, krs []kernelRoute, names map[int]string,
	wanted map[routeKey]bool) ([]spec.Route, error) {
	keys := make([]routeKey, len(krs))
	listed := map[routeKey]bool{}
	for i, r := range krs {
		keys[i] = r.key()
		if _, known := names[r.oif]; known && r.oif != 0 {
			listed[keys[i]] = true
		}
	}
	var out []spec.Route
	for i, r := range krs {
		if !wanted[keys[i]] && !listed[keys[i]] {
			continue
		}
		o := fromKernel(n, r, names)
		if _, known := names[r.oif]; wanted[keys[i]] && r.oif != 0 && !known {
			// A wanted key on a link the snapshot does not list: name
			// the link, so the update reads as a full plan's does.
			var err error
			if o.Dev, err = linkName(ns, n, r.oif); err != nil {
				return nil, err
			}
		}
		out = append(out, o)
	}
	return out, nil
}

func desiredRoutes(desired *spec.NodeState) []spec.Route {
	if desired == nil {
		return nil
	}
	return desired.Routes
}

// routeKey is a route's key within its namespace (spec.Route.Key): its
// table and destination.
type routeKey struct {
	table int
	dst   netip.Prefix
}

// key is r's routeKey: a default route's destination is 0.0.0.0/0.
func (r kernelRoute) key() routeKey {
	k := routeKey{table: r.table, dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0)}
	if r.dst != nil {
		if a, ok := netip.AddrFromSlice(r.dst.IP); ok {
			ones, _ := r.dst.Mask.Size()
			k.dst = netip.PrefixFrom(a.Unmap(), ones).Masked()
		}
	}
	return k
}

// wantedKey is a document route's routeKey, as key gives the kernel's
// route of the same key; ok is false for a destination that is not an
// IPv4 prefix (validation refuses such a document).
func wantedKey(d spec.Route) (routeKey, bool) {
	k := routeKey{table: d.TableID(), dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0)}
	if d.Dst == "default" {
		return k, true
	}
	p, err := netip.ParsePrefix(d.Dst)
	if err != nil || !p.Addr().Unmap().Is4() {
		return k, false
	}
	k.dst = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).Masked()
	return k, true
}

// observeLinks reads the routes on the given links only, and reports
// whether they hold every wanted key.
func observeLinks(ns op.Namespaces, n string, ls []netlink.Link, names map[int]string, wanted map[routeKey]bool) ([]spec.Route, bool, error) {
	var out []spec.Route
	seen := map[routeKey]bool{}
	for _, l := range ls {
		krs, err := dump(ns, n, l.Attrs().Index)
		if errors.Is(err, unix.ENODEV) {
			return nil, false, nil // the link went away since it was listed
		}
		if err != nil {
			return nil, false, err
		}
		for _, r := range krs {
			out = append(out, fromKernel(n, r, names))
			seen[r.key()] = true
		}
	}
	for k := range wanted {
		if !seen[k] {
			return nil, false, nil
		}
	}
	return out, true, nil
}

func linkName(ns op.Namespaces, n string, index int) (string, error) {
	h, err := ns.Handle(n)
	if err != nil {
		return "", err
	}
	l, err := h.LinkByIndex(index)
	if links.IsNotFound(err) {
		return "if" + strconv.Itoa(index), nil
	}
	if err != nil {
		return "", fmt.Errorf("look up link %d: %w", index, err)
	}
	return l.Attrs().Name, nil
}

// kernelRoute is what Observe reads of one route.
type kernelRoute struct {
	table int
	dst   *net.IPNet // nil for a default route
	gw    net.IP
	oif   int
	scope netlink.Scope
	flags int
}

// dump lists our IPv4 routes in every table, on link oif only when it is
// not 0. The kernel filters by protocol and link (strict socket); the
// checks here repeat them, so a kernel that ignored a filter would cost
// time, not correctness.
func dump(ns op.Namespaces, n string, oif int) ([]kernelRoute, error) {
	data := []nl.NetlinkRequestData{&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET, Protocol: spec.RouteProtocol}}}
	if oif != 0 {
		data = append(data, nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(oif))))
	}
	msgs, err := op.RouteDump(ns, n, unix.RTM_GETROUTE, unix.RTM_NEWROUTE, data...)
	if err != nil {
		return nil, err
	}
	out := make([]kernelRoute, 0, len(msgs))
	for _, m := range msgs {
		r, ours, err := parse(m)
		if err != nil {
			return nil, err
		}
		if ours && (oif == 0 || r.oif == oif) {
			out = append(out, r)
		}
	}
	return out, nil
}

// parse decodes one route message; ours is false for what Observe never
// reports: other families and protocols, and cached clones.
func parse(m []byte) (r kernelRoute, ours bool, err error) {
	if len(m) < unix.SizeofRtMsg {
		return r, false, fmt.Errorf("route message of %d bytes is too short", len(m))
	}
	h := nl.DeserializeRtMsg(m)
	if h.Family != unix.AF_INET || h.Protocol != spec.RouteProtocol || h.Flags&unix.RTM_F_CLONED != 0 {
		return r, false, nil
	}
	attrs, err := nl.ParseRouteAttr(m[unix.SizeofRtMsg:])
	if err != nil {
		return r, false, fmt.Errorf("route message: %w", err)
	}
	r = kernelRoute{table: int(h.Table), scope: netlink.Scope(h.Scope), flags: int(h.Flags)}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			if len(a.Value) == 4 {
				r.table = int(nl.NativeEndian().Uint32(a.Value))
			}
		case unix.RTA_DST:
			r.dst = &net.IPNet{IP: net.IP(a.Value), Mask: net.CIDRMask(int(h.Dst_len), 8*len(a.Value))}
		case unix.RTA_GATEWAY:
			r.gw = net.IP(a.Value)
		case unix.RTA_OIF:
			if len(a.Value) == 4 {
				r.oif = int(nl.NativeEndian().Uint32(a.Value))
			}
		}
	}
	return r, true, nil
}

func fromKernel(netns string, r kernelRoute, names map[int]string) spec.Route {
	out := spec.Route{Netns: netns, Dst: "default", Scope: scopeName(r.scope), Onlink: r.flags&int(netlink.FLAG_ONLINK) != 0}
	if r.table != unix.RT_TABLE_MAIN {
		out.Table = r.table
	}
	if r.dst != nil {
		if ones, _ := r.dst.Mask.Size(); ones != 0 {
			out.Dst = r.dst.String()
		}
	}
	if r.gw != nil {
		out.Gw = r.gw.String()
	}
	if r.oif != 0 {
		out.Dev = names[r.oif]
		if out.Dev == "" {
			out.Dev = "if" + strconv.Itoa(r.oif)
		}
	}
	return out
}
