package op

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Snapshot is a Namespaces for one plan: it remembers each namespace's link
// list and existence, so the kinds that live on links (addresses,
// neighbours, routes, qdiscs) do not each dump every namespace again. It is
// for observing only: execute with the Namespaces it wraps, never with a
// snapshot, which does not see the links execution creates.
type Snapshot struct {
	Namespaces
	mu     sync.Mutex
	links  map[string]*linkEntry
	exists map[string]bool
	// only, per namespace, limits the link list to these names, looked up
	// one by one instead of dumped: a plan scoped to a few pods then costs
	// the same whatever the number of other pods.
	only map[string][]string
	// handles, conns, fds and nsids are what each namespace resolved to
	// for this plan. A registry checks on every call that a path still
	// names the namespace it opened (a stat of the path), and a plan asks
	// thousands of times on a full node; once per namespace per plan is
	// enough for observing, and execution asks the registry itself.
	handles map[string]*netlink.Handle
	conns   map[string]*RouteConn
	fds     map[string]int
	nsids   map[[2]string]int
}

// NewSnapshot wraps ns for one plan.
func NewSnapshot(ns Namespaces) *Snapshot {
	return &Snapshot{Namespaces: ns, links: map[string]*linkEntry{}, exists: map[string]bool{},
		handles: map[string]*netlink.Handle{}, conns: map[string]*RouteConn{}, fds: map[string]int{}, nsids: map[[2]string]int{}}
}

// remember returns the value cached under k, or resolves and caches it;
// resolve runs outside the snapshot's lock (it takes the registry's).
func remember[K comparable, V any](s *Snapshot, m map[K]V, k K, resolve func() (V, error)) (V, error) {
	s.mu.Lock()
	v, ok := m[k]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := resolve()
	if err != nil {
		return v, err
	}
	s.mu.Lock()
	m[k] = v
	s.mu.Unlock()
	return v, nil
}

// Handle is the namespace's handle, resolved once per plan.
func (s *Snapshot) Handle(netns string) (*netlink.Handle, error) {
	return remember(s, s.handles, netns, func() (*netlink.Handle, error) { return s.Namespaces.Handle(netns) })
}

// RouteConn is the namespace's RouteConn, resolved once per plan.
func (s *Snapshot) RouteConn(netns string) (*RouteConn, error) {
	return remember(s, s.conns, netns, func() (*RouteConn, error) { return s.Namespaces.RouteConn(netns) })
}

// Fd is the namespace's descriptor, resolved once per plan.
func (s *Snapshot) Fd(netns string) (int, error) {
	return remember(s, s.fds, netns, func() (int, error) { return s.Namespaces.Fd(netns) })
}

// NetnsID is the id from gives to, read once per plan (also when there is
// none: the plan is one view of the kernel).
func (s *Snapshot) NetnsID(from, to string) (int, error) {
	return remember(s, s.nsids, [2]string{from, to}, func() (int, error) { return s.Namespaces.NetnsID(from, to) })
}

// OnlyLinks makes the snapshot see, in netns, only the links named (those
// that exist). Call it before observing.
func (s *Snapshot) OnlyLinks(netns string, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.only == nil {
		s.only = map[string][]string{}
	}
	s.only[netns] = names
}

// Exists reports, once per namespace, whether it exists.
func (s *Snapshot) Exists(netns string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.exists[netns]; ok {
		return e
	}
	e := s.Namespaces.Exists(netns)
	s.exists[netns] = e
	return e
}

// linkEntry is one namespace's link list, read once: kinds observing
// concurrently wait for the first reader instead of dumping again, and
// different namespaces are read in parallel. qdiscs holds each listed
// link's root qdisc kind (IFLA_QDISC), by index, which tells tc whether a
// namespace has any qdisc worth dumping.
type linkEntry struct {
	once   sync.Once
	links  []netlink.Link
	qdiscs map[int]string
	err    error
}

func (s *Snapshot) entry(netns string) *linkEntry {
	s.mu.Lock()
	e := s.links[netns]
	if e == nil {
		e = &linkEntry{}
		s.links[netns] = e
	}
	names, only := s.only[netns]
	s.mu.Unlock()
	e.once.Do(func() {
		if only {
			e.links, e.qdiscs, e.err = linksByName(s.Namespaces, netns, names)
		} else {
			e.links, e.qdiscs, e.err = dumpLinks(s.Namespaces, netns)
		}
	})
	return e
}

// LinkList lists a namespace's links: from the snapshot when ns is one,
// else with a fresh dump.
func LinkList(ns Namespaces, netns string) ([]netlink.Link, error) {
	if s, ok := ns.(*Snapshot); ok {
		e := s.entry(netns)
		return e.links, e.err
	}
	links, _, err := dumpLinks(ns, netns)
	return links, err
}

// Limited reports whether ns is a snapshot that sees only some links of
// netns (OnlyLinks): the kinds that live on links then ask the kernel
// about those links only, instead of dumping the namespace.
func Limited(ns Namespaces, netns string) bool {
	_, ok := LimitedTo(ns, netns)
	return ok
}

// LimitedTo returns the links a limited snapshot of netns sees (the names
// given to OnlyLinks, those that exist and those that do not); ok is
// false when ns does not limit netns.
func LimitedTo(ns Namespaces, netns string) (names []string, ok bool) {
	s, isSnap := ns.(*Snapshot)
	if !isSnap {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names, ok = s.only[netns]
	return names, ok
}

// RootQdisc returns the kind of the root qdisc ("noqueue", "tbf", …) of
// the link with this index as the snapshot listed it; ok is false when ns
// is not a snapshot or the link was not listed.
func RootQdisc(ns Namespaces, netns string, index int) (kind string, ok bool) {
	s, isSnap := ns.(*Snapshot)
	if !isSnap {
		return "", false
	}
	e := s.entry(netns)
	if e.err != nil {
		return "", false
	}
	kind, ok = e.qdiscs[index]
	return kind, ok
}

// dumpTries bounds the retries of a dump the kernel marked interrupted (the
// table changed while it was read); a few retries get a consistent view.
const dumpTries = 5

// rtextFilterSkipStats is RTEXT_FILTER_SKIP_STATS (linux/rtnetlink.h),
// which golang.org/x/sys does not name.
const rtextFilterSkipStats = 1 << 3

// linkRequest is the header and attributes of a link get or dump. Unlike
// the netlink library's, it asks the kernel to leave out the counters
// (summed over every CPU, for every link, on every plan) and SR-IOV VF
// details: nothing here reads them, and a plan reads every link of the node.
func linkRequest(extra ...nl.NetlinkRequestData) []nl.NetlinkRequestData {
	return append([]nl.NetlinkRequestData{nl.NewIfInfomsg(unix.AF_UNSPEC),
		nl.NewRtAttr(unix.IFLA_EXT_MASK, nl.Uint32Attr(rtextFilterSkipStats))}, extra...)
}

// dumpLinks lists the namespace's links. It reads the replies itself, not
// through the library's LinkList, to keep each link's root qdisc kind,
// which the library's links do not carry.
func dumpLinks(ns Namespaces, netns string) ([]netlink.Link, map[int]string, error) {
	msgs, err := RouteDump(ns, netns, unix.RTM_GETLINK, unix.RTM_NEWLINK, linkRequest()...)
	if err != nil {
		return nil, nil, fmt.Errorf("dump links: %w", err)
	}
	return decodeLinks(msgs)
}

func decodeLinks(msgs [][]byte) ([]netlink.Link, map[int]string, error) {
	links := make([]netlink.Link, 0, len(msgs))
	qdiscs := make(map[int]string, len(msgs))
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			return nil, nil, fmt.Errorf("link message of %d bytes is too short", len(m))
		}
		l, err := netlink.LinkDeserialize(nil, m)
		if err != nil {
			return nil, nil, err
		}
		links = append(links, l)
		qdiscs[l.Attrs().Index] = AttrString(m[unix.SizeofIfInfomsg:], unix.IFLA_QDISC)
	}
	return links, qdiscs, nil
}

func linksByName(ns Namespaces, netns string, names []string) ([]netlink.Link, map[int]string, error) {
	var msgs [][]byte
	for _, name := range names {
		attr := nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name))
		if len(name) >= unix.IFNAMSIZ {
			// Too long for a name; the kernel may know it as an alternative one.
			attr = nl.NewRtAttr(unix.IFLA_ALT_IFNAME, nl.ZeroTerminated(name))
		}
		m, err := RouteGet(ns, netns, unix.RTM_GETLINK, unix.RTM_NEWLINK, linkRequest(attr)...)
		switch {
		case errors.Is(err, unix.ENODEV):
		case err != nil:
			return nil, nil, fmt.Errorf("look up link %s: %w", name, err)
		default:
			msgs = append(msgs, m...)
		}
	}
	return decodeLinks(msgs)
}
