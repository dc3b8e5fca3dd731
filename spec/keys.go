package spec

import (
	"cmp"
	"fmt"
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

// Key identifies a pod's table: one per pod.
func (t PodNFTable) Key() string { return t.Pod }

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
	s.canonicalize(true)
}

// CanonicalizeOrder is Canonicalize for a producer whose sets' elements are
// already sorted (SortElements): it orders every section, sets and chains,
// but leaves the elements of sets as they are. Sorting a large set again is
// most of the cost of canonicalising a document, and render builds every
// set sorted once, reusing unchanged ones from render to render.
func (s *NodeState) CanonicalizeOrder() {
	s.canonicalize(false)
}

func (s *NodeState) canonicalize(elements bool) {
	sortDecorated(s.Links, linkOrder, compareNetnsKeys)
	sortDecorated(s.Addresses, addressOrder, compareNetnsKeys)
	sortDecorated(s.Routes, routeOrder, compareRouteKeys)
	sortDecorated(s.Rules, ruleOrder, compareRuleKeys)
	sortDecorated(s.Neighbors, neighborOrder, compareNeighborKeys)
	sortDecorated(s.Sysctls, sysctlOrder, compareNetnsKeys)
	sortDecorated(s.TC, qdiscOrder, compareNetnsKeys)
	sortBy(s.Pods, podOrder)
	slices.SortStableFunc(s.Problems, CompareProblems)
	s.Problems = slices.Compact(s.Problems)
	if s.NFTables != nil {
		s.NFTables.canonicalize(elements)
	}
	sortBy(s.PodNFTables, PodNFTable.Key)
	for i := range s.PodNFTables {
		s.PodNFTables[i].Table.canonicalize(elements)
	}
	if s.ENI != nil {
		sortBy(s.ENI.ENIs, func(e ENIWant) string { return e.Name })
		for i := range s.ENI.ENIs {
			e := &s.ENI.ENIs[i]
			for _, l := range [][]string{e.InUse, e.Keep, e.Release} {
				slices.SortFunc(l, CompareValues)
			}
		}
	}
}

// Canonicalize sorts sets by name, elements by value, and chains with base
// chains first, then by name.
func (t *NFTable) Canonicalize() {
	t.canonicalize(true)
}

func (t *NFTable) canonicalize(elements bool) {
	sortBy(t.Sets, setOrder)
	for _, s := range t.Sets {
		if elements {
			SortElements(s.Elements)
		}
	}
	sortDecorated(t.Chains, chainOrder, compareChainKeys)
}

// sortDecorated sorts items stably by a key computed once per item (keys
// that parse values would otherwise be parsed on every comparison), and
// writes nothing when they are in order already.
func sortDecorated[T, K any](items []T, key func(T) K, compare func(a, b K) int) {
	if len(items) < 2 {
		return
	}
	keys := make([]K, len(items))
	for i, it := range items {
		keys[i] = key(it)
	}
	if slices.IsSortedFunc(keys, compare) {
		return
	}
	order := make([]int, len(items))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return compare(keys[a], keys[b]) })
	sorted := make([]T, len(items))
	for i, idx := range order {
		sorted[i] = items[idx]
	}
	copy(items, sorted)
}

func sortBy[T any](items []T, key func(T) string) {
	sortDecorated(items, key, cmp.Compare[string])
}

// valueKey is a value parsed once for sorting.
type valueKey struct {
	lo, hi uint64
	num    bool
	text   string
}

func parseValueKey(v string) valueKey {
	lo, hi, ok := ValueRange(v)
	return valueKey{lo, hi, ok, v}
}

func compareValueKeys(a, b valueKey) int {
	switch {
	case a.num && b.num:
		return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi), cmp.Compare(a.text, b.text))
	case a.num:
		return -1
	case b.num:
		return 1
	}
	return cmp.Compare(a.text, b.text)
}

// SortElements sorts elements as CompareElements does, parsing each value
// once into a flat buffer rather than on every comparison (sets reach
// 100,000 elements), and not at all moving elements that are already in
// order: it writes nothing then, so a shared sorted set may be passed.
func SortElements(elems []NFTElement) {
	if len(elems) < 2 {
		return
	}
	width := len(elems[0].Key)
	for _, e := range elems {
		if len(e.Key) != width {
			slices.SortStableFunc(elems, CompareElements) // invalid set; Validate reports it
			return
		}
	}
	keys := make([]valueKey, len(elems)*width)
	for i, e := range elems {
		for j, v := range e.Key {
			keys[i*width+j] = parseValueKey(v)
		}
	}
	compare := func(a, b int) int {
		for j := 0; j < width; j++ {
			if c := compareValueKeys(keys[a*width+j], keys[b*width+j]); c != 0 {
				return c
			}
		}
		return 0
	}
	sorted := true
	for i := 1; i < len(elems) && sorted; i++ {
		sorted = compare(i-1, i) <= 0
	}
	if sorted {
		return
	}
	order := make([]int, len(elems))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, compare)
	out := make([]NFTElement, len(elems))
	for i, idx := range order {
		out[i] = elems[idx]
	}
	copy(elems, out)
}

// CompareElements orders set elements by their key parts, comparing
// addresses, ports and protocols by value so that 198.18.0.9 sorts before
// 198.18.0.10.
func CompareElements(a, b NFTElement) int {
	for i := 0; i < len(a.Key) && i < len(b.Key); i++ {
		if c := CompareValues(a.Key[i], b.Key[i]); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a.Key), len(b.Key))
}

// CompareValues compares two values that may be addresses, CIDRs, ranges,
// ports or protocol names by their numeric start and end, and otherwise as
// strings (numbers first). It is the document's canonical order of values;
// apply orders its plans the same way.
func CompareValues(a, b string) int {
	return compareValueKeys(parseValueKey(a), parseValueKey(b))
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
	addr, bits, hasBits := strings.Cut(v, "/")
	if n, ok := parseIPv4(addr); ok {
		if !hasBits {
			return n, n, true
		}
		b, err := strconv.ParseUint(bits, 10, 8)
		if err != nil || b > 32 {
			return 0, 0, false
		}
		size := uint64(1) << (32 - b)
		start := n &^ (size - 1)
		return start, start + size - 1, true
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return n, n, true
	}
	return 0, 0, false
}

// parseIPv4 parses dotted-quad IPv4 without allocating: it runs for every
// set element of every render.
func parseIPv4(s string) (uint64, bool) {
	var n, part uint64
	dots, digits := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			part = part*10 + uint64(c-'0')
			digits++
			if part > 255 || digits > 3 {
				return 0, false
			}
		case c == '.' && digits > 0 && dots < 3:
			n, part, digits = n<<8|part, 0, 0
			dots++
		default:
			return 0, false
		}
	}
	if dots != 3 || digits == 0 {
		return 0, false
	}
	return n<<8 | part, true
}

// Namespaces lists the network namespaces other than the host that the
// document names, sorted: the namespaces apply observes besides the node's.
func (s *NodeState) Namespaces() []string {
	var out []string
	add := func(n string) {
		if n != HostNetns {
			out = append(out, n)
		}
	}
	for _, l := range s.Links {
		add(l.Netns)
		if l.Peer != nil {
			add(l.Peer.Netns)
		}
	}
	for _, a := range s.Addresses {
		add(a.Netns)
	}
	for _, r := range s.Routes {
		add(r.Netns)
	}
	for _, r := range s.Rules {
		add(r.Netns)
	}
	for _, n := range s.Neighbors {
		add(n.Netns)
	}
	for _, c := range s.Sysctls {
		add(c.Netns)
	}
	for _, q := range s.TC {
		add(q.Netns)
	}
	for _, p := range s.Pods {
		add(p.Netns)
	}
	for _, t := range s.PodNFTables {
		add(t.Netns)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
