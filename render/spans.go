package render

import (
	"cmp"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"

	"github.com/terway-reconciler/terway/spec"
)

// span is an inclusive range of IPv4 addresses as numbers. nft interval
// sets reject overlapping elements, so every set render emits is built from
// merged spans: sorted, disjoint, and not adjacent unless one of the two is
// pinned.
//
// pin marks the address of a pod on this node, as a peer: merging joins it
// with a span that overlaps it but never with a neighbour, so that the
// pod's address stays an element of its own. A CNI ADD or DEL then adds or
// takes out that element alone (apply/nft's scoped plans find a pod's
// elements by its address); merged into its neighbours' range, the pod's
// address would change an element that is not its own, which a scoped plan
// leaves to the next sync: a new pod not let in where policy allows it, a
// deleted pod's address still let in where a new pod may get it.
type span struct {
	lo, hi uint32
	pin    bool
}

var allAddresses = span{lo: 0, hi: 1<<32 - 1}

func addrNum(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func numAddr(n uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
}

func prefixSpan(p netip.Prefix) span {
	lo := addrNum(p.Masked().Addr())
	return span{lo: lo, hi: lo | uint32(uint64(1)<<(32-p.Bits())-1)}
}

func addrSpan(a netip.Addr) span { n := addrNum(a); return span{lo: n, hi: n} }

// String prints a span as nft accepts it: an address, a CIDR when the span
// is exactly one prefix, otherwise a range.
func (s span) String() string {
	if s.lo == s.hi {
		return numAddr(s.lo).String()
	}
	// One buffer, one string: a large group's sets print thousands.
	b := make([]byte, 0, len("255.255.255.255-255.255.255.255"))
	b = numAddr(s.lo).AppendTo(b)
	size := uint64(s.hi) - uint64(s.lo) + 1
	if size&(size-1) == 0 && uint64(s.lo)%size == 0 {
		b = append(b, '/')
		b = strconv.AppendInt(b, int64(32-bits.TrailingZeros64(size)), 10)
	} else {
		b = append(b, '-')
		b = numAddr(s.hi).AppendTo(b)
	}
	return string(b)
}

// mergeSpans sorts and coalesces overlapping spans, and adjacent ones that
// are not pinned.
func mergeSpans(in []span) []span {
	if len(in) < 2 {
		return slices.Clone(in)
	}
	s := slices.Clone(in)
	slices.SortFunc(s, func(a, b span) int { return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi)) })
	out := s[:1]
	for _, x := range s[1:] {
		out = pushSpan(out, x)
	}
	return out
}

// pushSpan appends x, which starts at or after the last span's start, to
// a merged list, joining it to the last span where they overlap, or touch
// and neither is pinned. The result is the same whatever the order of
// spans with the same start: a pinned address that a later span covers is
// unpinned, and then joins its neighbour before it.
func pushSpan(out []span, x span) []span {
	n := len(out)
	if n == 0 {
		return append(out, x)
	}
	last := &out[n-1]
	switch {
	case x.lo <= last.hi:
		last.hi = max(last.hi, x.hi)
		last.pin = last.pin && x.pin // the same pod address twice stays pinned
		if n > 1 && touches(out[n-2], *last) {
			out[n-2].hi = last.hi
			return out[:n-1]
		}
		return out
	case touches(*last, x):
		last.hi = x.hi
		return out
	}
	return append(out, x)
}

// touches reports whether b starts right after a ends and both may join.
func touches(a, b span) bool {
	return !a.pin && !b.pin && uint64(a.hi)+1 == uint64(b.lo)
}

// unionSpans returns the union of span lists, merged. Lists sorted by
// their start (a rule's merged addresses) are merged pairwise in linear
// passes, not sorted again: a group of a few rules over thousands of pods
// rendered most of its time in that sort.
func unionSpans(lists [][]span) []span {
	n := 0
	for _, l := range lists {
		n += len(l)
		if !slices.IsSortedFunc(l, func(a, b span) int { return cmp.Compare(a.lo, b.lo) }) {
			return mergeSpans(slices.Concat(lists...))
		}
	}
	switch {
	case n == 0:
		return nil
	case len(lists) == 1:
		return mergeSpans(lists[0]) // coalesces a list sorted but not merged
	}
	for len(lists) > 1 {
		next := make([][]span, 0, (len(lists)+1)/2)
		for i := 0; i+1 < len(lists); i += 2 {
			next = append(next, unionSorted(lists[i], lists[i+1]))
		}
		if len(lists)%2 == 1 {
			next = append(next, lists[len(lists)-1])
		}
		lists = next
	}
	return lists[0]
}

// unionSorted merges two span lists sorted by their start into one merged
// list.
func unionSorted(a, b []span) []span {
	out := make([]span, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		if j == len(b) || i < len(a) && a[i].lo <= b[j].lo {
			out = pushSpan(out, a[i])
			i++
		} else {
			out = pushSpan(out, b[j])
			j++
		}
	}
	return out
}

// subtractSpans returns a minus b; both must be merged.
func subtractSpans(a, b []span) []span {
	var out []span
	for _, x := range a {
		cur := []span{x}
		for _, y := range b {
			var next []span
			for _, c := range cur {
				if y.hi < c.lo || y.lo > c.hi {
					next = append(next, c)
					continue
				}
				if y.lo > c.lo {
					next = append(next, span{lo: c.lo, hi: y.lo - 1})
				}
				if y.hi < c.hi {
					next = append(next, span{lo: y.hi + 1, hi: c.hi})
				}
			}
			cur = next
		}
		out = append(out, cur...)
	}
	return out
}

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

var allPorts = portRange{0, 65535}

func (p portRange) String() string {
	if p.lo == p.hi {
		return strconv.Itoa(int(p.lo))
	}
	return strconv.Itoa(int(p.lo)) + "-" + strconv.Itoa(int(p.hi))
}

// portAllow says: these addresses may use this protocol on these ports.
type portAllow struct {
	proto string
	ports portRange
	addrs []span
}

func (a portAllow) equal(b portAllow) bool {
	return a.proto == b.proto && a.ports == b.ports && slices.Equal(a.addrs, b.addrs)
}

// rect is one element of a ports set: addresses, protocol and ports.
type rect struct {
	addrs    span
	proto    string
	protoNum uint64
	ports    portRange
	// portsText is ports printed, once per piece: the piece's thousands
	// of elements share it.
	portsText string
}

// portPiece is one protocol's port range with the addresses allowed on
// all of it: the port axis cut at every boundary of the allowances.
type portPiece struct {
	proto    string
	protoNum uint64
	ports    portRange
	addrs    []span // merged
}

// portPieces cuts each protocol's port axis at every boundary of allows;
// each piece gets the union of the addresses allowed on it, and
// neighbouring pieces with equal addresses are joined again. Pieces are
// disjoint.
func portPieces(allows []portAllow) []portPiece {
	byProto := map[string][]portAllow{}
	for _, a := range allows {
		if len(a.addrs) > 0 {
			byProto[a.proto] = append(byProto[a.proto], a)
		}
	}
	var pieces []portPiece
	for proto, list := range byProto {
		cuts := map[uint32]bool{}
		for _, a := range list {
			cuts[uint32(a.ports.lo)] = true
			cuts[uint32(a.ports.hi)+1] = true
		}
		bounds := make([]uint32, 0, len(cuts))
		for c := range cuts {
			bounds = append(bounds, c)
		}
		slices.Sort(bounds)
		first := len(pieces)
		for i := 0; i+1 < len(bounds); i++ {
			pr := portRange{uint16(bounds[i]), uint16(bounds[i+1] - 1)}
			var lists [][]span
			for _, a := range list {
				if a.ports.lo <= pr.lo && pr.hi <= a.ports.hi {
					lists = append(lists, a.addrs)
				}
			}
			addrs := unionSpans(lists)
			if len(addrs) == 0 {
				continue
			}
			if n := len(pieces); n > first && uint32(pieces[n-1].ports.hi)+1 == uint32(pr.lo) && slices.Equal(pieces[n-1].addrs, addrs) {
				pieces[n-1].ports.hi = pr.hi
				continue
			}
			pieces = append(pieces, portPiece{proto, spec.ProtoNumbers[proto], pr, addrs})
		}
	}
	return pieces
}

// rectangleCount is how many rectangles (eachRectangle) pieces make.
func rectangleCount(pieces []portPiece) int {
	n := 0
	for _, p := range pieces {
		n += len(p.addrs)
	}
	return n
}

// eachRectangle turns port pieces (portPieces of a union of portAllows)
// into disjoint (addresses, proto, ports) elements, every address span of
// every piece, and hands each to emit in the document's canonical order
// (address, protocol number, port). The caller builds its elements as they
// come: a list of the rectangles first was a fifth of what an admission
// step's render allocated.
func eachRectangle(pieces []portPiece, emit func(rect)) {
	texts := make([]string, len(pieces))
	for i, p := range pieces {
		texts[i] = p.ports.String()
	}
	if len(pieces) == 1 {
		for _, s := range pieces[0].addrs {
			emit(rect{s, pieces[0].proto, pieces[0].protoNum, pieces[0].ports, texts[0]})
		}
		return // one piece's merged spans are in order already
	}
	// Each piece's spans are in order: a k-way merge of the pieces, by a
	// heap of their next spans, puts the rectangles in order without
	// sorting them all (that sort was most of the cost of rendering a
	// large group). Two packed integers per key keep the comparison cheap.
	type sortKey struct{ addrs, rest uint64 }
	keyOf := func(p, i int) sortKey {
		pc := &pieces[p]
		s := pc.addrs[i]
		return sortKey{uint64(s.lo)<<32 | uint64(s.hi), pc.protoNum<<32 | uint64(pc.ports.lo)<<16 | uint64(pc.ports.hi)}
	}
	less := func(a, b sortKey) bool { return a.addrs < b.addrs || a.addrs == b.addrs && a.rest < b.rest }
	type head struct {
		key       sortKey
		piece, at int
	}
	heap := make([]head, 0, len(pieces))
	down := func(i int) {
		for {
			l, small := 2*i+1, i
			if l < len(heap) && less(heap[l].key, heap[small].key) {
				small = l
			}
			if r := l + 1; r < len(heap) && less(heap[r].key, heap[small].key) {
				small = r
			}
			if small == i {
				return
			}
			heap[i], heap[small] = heap[small], heap[i]
			i = small
		}
	}
	for p := range pieces {
		if len(pieces[p].addrs) > 0 {
			heap = append(heap, head{keyOf(p, 0), p, 0})
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for len(heap) > 0 {
		h := &heap[0]
		pc := &pieces[h.piece]
		emit(rect{pc.addrs[h.at], pc.proto, pc.protoNum, pc.ports, texts[h.piece]})
		if h.at++; h.at < len(pc.addrs) {
			h.key = keyOf(h.piece, h.at)
		} else {
			heap[0] = heap[len(heap)-1]
			heap = heap[:len(heap)-1]
		}
		down(0)
	}
}
