package render

import (
	"cmp"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestSpanString(t *testing.T) {
	for _, tc := range []struct {
		s    span
		want string
	}{
		{prefixSpan(netip.MustParsePrefix("198.18.0.0/24")), "198.18.0.0/24"},
		{addrSpan(netip.MustParseAddr("198.18.0.7")), "198.18.0.7"},
		{span{lo: addrNum(netip.MustParseAddr("198.18.0.1")), hi: addrNum(netip.MustParseAddr("198.18.0.5"))}, "198.18.0.1-198.18.0.5"},
		{allAddresses, "0.0.0.0/0"},
		{span{lo: addrNum(netip.MustParseAddr("198.18.0.2")), hi: addrNum(netip.MustParseAddr("198.18.0.5"))}, "198.18.0.2-198.18.0.5"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%v.String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestMergeAndSubtractSpans(t *testing.T) {
	got := mergeSpans([]span{{lo: 10, hi: 20}, {lo: 0, hi: 5}, {lo: 6, hi: 8}, {lo: 15, hi: 30}, {lo: 40, hi: 40}})
	if want := []span{{lo: 0, hi: 8}, {lo: 10, hi: 30}, {lo: 40, hi: 40}}; !slices.Equal(got, want) {
		t.Errorf("mergeSpans = %v, want %v", got, want)
	}
	got = subtractSpans([]span{{lo: 0, hi: 100}}, []span{{lo: 0, hi: 9}, {lo: 50, hi: 50}, {lo: 90, hi: 200}})
	if want := []span{{lo: 10, hi: 49}, {lo: 51, hi: 89}}; !slices.Equal(got, want) {
		t.Errorf("subtractSpans = %v, want %v", got, want)
	}
	got = subtractSpans([]span{allAddresses}, []span{{lo: 0, hi: 0}, {lo: 1<<32 - 1, hi: 1<<32 - 1}})
	if want := []span{{lo: 1, hi: 1<<32 - 2}}; !slices.Equal(got, want) {
		t.Errorf("subtractSpans at the edges = %v, want %v", got, want)
	}
}

// TestRectanglesAreDisjointAndExact checks rectangles against brute force on
// a small universe: every (address, protocol, port) point is covered by the
// output exactly when some input allows it, and by at most one element.
func TestRectanglesAreDisjointAndExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	protos := []string{"tcp", "udp", "sctp"}
	for iter := 0; iter < 300; iter++ {
		var allows []portAllow
		for i := rng.IntN(6); i >= 0; i-- {
			lo := uint16(rng.IntN(20))
			var addrs []span
			for j := rng.IntN(3); j >= 0; j-- {
				a := uint32(rng.IntN(30))
				addrs = append(addrs, span{lo: a, hi: a + uint32(rng.IntN(5))})
			}
			for j := rng.IntN(3); j > 0; j-- {
				a := uint32(rng.IntN(36))
				addrs = append(addrs, span{lo: a, hi: a, pin: true})
			}
			allows = append(allows, portAllow{protos[rng.IntN(3)], portRange{lo, lo + uint16(rng.IntN(6))}, mergeSpans(addrs)})
		}
		rects := rectangles(portPieces(allows))
		// The document's canonical order: address span, protocol number,
		// ports (the k-way merge of the pieces must give it).
		if !slices.IsSortedFunc(rects, func(a, b rect) int {
			return cmp.Or(cmp.Compare(a.addrs.lo, b.addrs.lo), cmp.Compare(a.addrs.hi, b.addrs.hi),
				cmp.Compare(a.protoNum, b.protoNum), cmp.Compare(a.ports.lo, b.ports.lo), cmp.Compare(a.ports.hi, b.ports.hi))
		}) {
			t.Fatalf("iteration %d: rectangles out of order: %v", iter, rects)
		}
		for _, proto := range protos {
			for port := uint16(0); port < 30; port++ {
				for addr := uint32(0); addr < 40; addr++ {
					want := false
					for _, a := range allows {
						if a.proto == proto && a.ports.lo <= port && port <= a.ports.hi && containsAddr(a.addrs, addr) {
							want = true
						}
					}
					n := 0
					for _, r := range rects {
						if r.proto == proto && r.ports.lo <= port && port <= r.ports.hi && r.addrs.lo <= addr && addr <= r.addrs.hi {
							n++
						}
					}
					if n > 1 || (n == 1) != want {
						t.Fatalf("iteration %d: point (%d, %s, %d) covered %d times, allowed=%v\nallows=%v\nrects=%v", iter, addr, proto, port, n, want, allows, rects)
					}
				}
			}
		}
	}
}

func containsAddr(spans []span, a uint32) bool {
	for _, s := range spans {
		if s.lo <= a && a <= s.hi {
			return true
		}
	}
	return false
}

// TestMergeSpansKeepsPodAddressesApart: merged spans are the union of the
// unpinned spans, each run of it one span, and each pinned address that no
// unpinned span covers as a span of its own, pinned, whatever the order of
// the input (brute force on a small universe). unionSpans gives the same.
func TestMergeSpansKeepsPodAddressesApart(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 11))
	pinnedApart := 0
	for iter := range 3000 {
		var in []span
		for range rng.IntN(8) {
			a := uint32(rng.IntN(40))
			if rng.IntN(2) == 0 {
				in = append(in, span{lo: a, hi: a, pin: true})
			} else {
				in = append(in, span{lo: a, hi: a + uint32(rng.IntN(4))})
			}
		}
		var covered, pinned [48]bool
		for _, s := range in {
			for a := s.lo; a <= s.hi; a++ {
				if s.pin {
					pinned[a] = true
				} else {
					covered[a] = true
				}
			}
		}
		var want []span
		for a := uint32(0); a < 48; a++ {
			switch {
			case covered[a] && len(want) > 0 && !want[len(want)-1].pin && want[len(want)-1].hi+1 == a:
				want[len(want)-1].hi = a
			case covered[a]:
				want = append(want, span{lo: a, hi: a})
			case pinned[a]:
				want = append(want, span{lo: a, hi: a, pin: true})
				pinnedApart++
			}
		}
		rng.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
		if got := mergeSpans(in); !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Fatalf("iteration %d: mergeSpans(%v)\n= %v, want %v", iter, in, got, want)
		}
		var lists [][]span
		for len(in) > 0 {
			n := 1 + rng.IntN(len(in))
			lists = append(lists, mergeSpans(in[:n]))
			in = in[n:]
		}
		if got := unionSpans(lists); !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Fatalf("iteration %d: unionSpans(%v)\n= %v, want %v", iter, lists, got, want)
		}
	}
	if pinnedApart < 1000 {
		t.Fatalf("only %d pinned addresses stayed apart: the test does not exercise them", pinnedApart)
	}
}

// TestUnionSpansIsMerge: the union of span lists by pairwise merges is
// what sorting and merging their concatenation gives, for merged lists,
// lists sorted but overlapping, and unsorted lists (which take the sort).
func TestUnionSpansIsMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 8))
	kinds := map[string]int{}
	for iter := range 2000 {
		var lists [][]span
		for range rng.IntN(7) {
			var l []span
			for range rng.IntN(8) {
				a := uint32(rng.IntN(60))
				if rng.IntN(40) == 0 {
					a = 1<<32 - 1 - uint32(rng.IntN(3)) // the top of the space
				}
				l = append(l, span{lo: a, hi: a + min(uint32(rng.IntN(4)), 1<<32-1-a)})
			}
			switch rng.IntN(4) {
			case 0:
				kinds["unsorted"]++
			case 1:
				slices.SortFunc(l, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
				kinds["sorted"]++
			default:
				l = mergeSpans(l)
				kinds["merged"]++
			}
			lists = append(lists, l)
		}
		want := mergeSpans(slices.Concat(lists...))
		if got := unionSpans(lists); !slices.Equal(got, want) && len(got)+len(want) > 0 {
			t.Fatalf("iteration %d: union of %v\n= %v, want %v", iter, lists, got, want)
		}
	}
	for _, k := range []string{"unsorted", "sorted", "merged"} {
		if kinds[k] < 100 {
			t.Fatalf("only %d %s lists: the test did not exercise them", kinds[k], k)
		}
	}
}
