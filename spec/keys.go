package spec

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Keys identify an item within its section. Two items with the same key are
// the same object in the kernel; the rest of the item is its desired content.

// Key of a link: namespace and name.
func (l Link) Key() string { return nsKey(l.Netns) + "/" + l.Name }

// Key of an address: namespace, device and CIDR.
func (a Address) Key() string { return nsKey(a.Netns) + "/" + a.Dev + "/" + a.CIDR }

// Key of a route: namespace, table and destination (one route per
// destination and table: we never install ECMP or metric variants).
func (r Route) Key() string {
	return nsKey(r.Netns) + "/table " + strconv.Itoa(r.TableID()) + "/" + r.Dst
}

// TableID returns the route's table, with 0 meaning main.
func (r Route) TableID() int {
	if r.Table == 0 {
		return MainTable
	}
	return r.Table
}

// Key of a rule: namespace, priority and selectors.
func (r Rule) Key() string {
	return fmt.Sprintf("%s/%d/from %s/to %s", nsKey(r.Netns), r.Priority, r.From, r.To)
}

// Key of a neighbour: namespace, device and IP.
func (n Neighbor) Key() string { return nsKey(n.Netns) + "/" + n.Dev + "/" + n.IP }

// Key of a sysctl: namespace and key.
func (s Sysctl) Key() string { return nsKey(s.Netns) + "/" + s.Path }

// Key of a qdisc: namespace and device (one root qdisc per link).
func (q Qdisc) Key() string { return nsKey(q.Netns) + "/" + q.Dev }

// sortByNetns orders items of the host namespace first, then by namespace
// path, then by the rest of the key.
func sortByNetns[T any](items []T, key func(T) (netns, rest string)) {
	slices.SortStableFunc(items, func(a, b T) int {
		ans, arest := key(a)
		bns, brest := key(b)
		return cmp.Or(cmp.Compare(ans, bns), cmp.Compare(arest, brest))
	})
}

func nsKey(ns string) string {
	if ns == HostNetns {
		return "host"
	}
	return ns
}

// Canonicalize sorts every section by key (sets' elements by value), so that
// equal documents print as equal bytes. Rule order inside a chain is meaning
// and is kept.
func (s *NodeState) Canonicalize() {
	sortByNetns(s.Links, func(l Link) (string, string) { return l.Netns, l.Name })
	sortByNetns(s.Addresses, func(a Address) (string, string) { return a.Netns, a.Dev + "/" + a.CIDR })
	slices.SortStableFunc(s.Routes, func(a, b Route) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.TableID(), b.TableID()),
			compareValue(a.Dst, b.Dst))
	})
	slices.SortStableFunc(s.Rules, func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Priority, b.Priority),
			compareValue(a.From, b.From), compareValue(a.To, b.To))
	})
	slices.SortStableFunc(s.Neighbors, func(a, b Neighbor) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Dev, b.Dev), compareValue(a.IP, b.IP))
	})
	sortByNetns(s.Sysctls, func(c Sysctl) (string, string) { return c.Netns, c.Path })
	sortByNetns(s.TC, func(q Qdisc) (string, string) { return q.Netns, q.Dev })
	sortBy(s.Pods, func(p Pod) string { return p.Key })
	slices.SortStableFunc(s.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.Field, b.Field), cmp.Compare(a.Reason, b.Reason))
	})
	s.Problems = slices.Compact(s.Problems)
	if s.NFTables != nil {
		s.NFTables.Canonicalize()
	}
	if s.ENI != nil {
		sortBy(s.ENI.ENIs, func(e ENIWant) string { return e.Name })
		for i := range s.ENI.ENIs {
			e := &s.ENI.ENIs[i]
			for _, l := range [][]string{e.InUse, e.Keep, e.Release} {
				slices.SortFunc(l, compareValue)
			}
		}
	}
}

// Canonicalize sorts sets by name, elements by value, and chains with base
// chains first, then by name.
func (t *NFTable) Canonicalize() {
	sortBy(t.Sets, func(s NFTSet) string { return s.Name })
	for i := range t.Sets {
		slices.SortFunc(t.Sets[i].Elements, CompareElements)
	}
	slices.SortStableFunc(t.Chains, func(a, b NFTChain) int {
		if (a.Hook == "") != (b.Hook == "") {
			if a.Hook != "" {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

func sortBy[T any](items []T, key func(T) string) {
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}

// CompareElements orders set elements by their key parts, comparing
// addresses, ports and protocols by value so that 198.18.0.9 sorts before
// 198.18.0.10.
func CompareElements(a, b NFTElement) int {
	for i := 0; i < len(a.Key) && i < len(b.Key); i++ {
		if c := compareValue(a.Key[i], b.Key[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a.Key), len(b.Key))
}

// compareValue compares two values that may be addresses, CIDRs, ranges,
// ports or protocol names by their numeric start and end, and otherwise as
// strings.
func compareValue(a, b string) int {
	alo, ahi, aok := ValueRange(a)
	blo, bhi, bok := ValueRange(b)
	switch {
	case aok && bok:
		return cmp.Or(cmp.Compare(alo, blo), cmp.Compare(ahi, bhi), cmp.Compare(a, b))
	case aok:
		return -1
	case bok:
		return 1
	}
	return cmp.Compare(a, b)
}

// ProtoNumbers maps the protocol names we print to their numbers.
var ProtoNumbers = map[string]uint64{"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}

// ValueRange parses an IPv4 address, CIDR, address range, port, port range or
// protocol name into the inclusive numeric range it covers.
func ValueRange(v string) (lo, hi uint64, ok bool) {
	if n, found := ProtoNumbers[v]; found {
		return n, n, true
	}
	if from, to, isRange := strings.Cut(v, "-"); isRange {
		l, _, ok1 := ValueRange(from)
		_, h, ok2 := ValueRange(to)
		return l, h, ok1 && ok2 && l <= h
	}
	if p, err := netip.ParsePrefix(v); err == nil && p.Addr().Is4() {
		start := ipv4Num(p.Masked().Addr())
		return start, start | (1<<(32-p.Bits()) - 1), true
	}
	if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
		n := ipv4Num(a)
		return n, n, true
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return n, n, true
	}
	return 0, 0, false
}

func ipv4Num(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}
