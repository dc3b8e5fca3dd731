package render

import (
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
		{span{addrNum(netip.MustParseAddr("198.18.0.1")), addrNum(netip.MustParseAddr("198.18.0.5"))}, "198.18.0.1-198.18.0.5"},
		{allAddresses, "0.0.0.0/0"},
		{span{addrNum(netip.MustParseAddr("198.18.0.2")), addrNum(netip.MustParseAddr("198.18.0.5"))}, "198.18.0.2-198.18.0.5"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%v.String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func TestMergeAndSubtractSpans(t *testing.T) {
	got := mergeSpans([]span{{10, 20}, {0, 5}, {6, 8}, {15, 30}, {40, 40}})
	if want := []span{{0, 8}, {10, 30}, {40, 40}}; !slices.Equal(got, want) {
		t.Errorf("mergeSpans = %v, want %v", got, want)
	}
	got = subtractSpans([]span{{0, 100}}, []span{{0, 9}, {50, 50}, {90, 200}})
	if want := []span{{10, 49}, {51, 89}}; !slices.Equal(got, want) {
		t.Errorf("subtractSpans = %v, want %v", got, want)
	}
	got = subtractSpans([]span{allAddresses}, []span{{0, 0}, {1<<32 - 1, 1<<32 - 1}})
	if want := []span{{1, 1<<32 - 2}}; !slices.Equal(got, want) {
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
				addrs = append(addrs, span{a, a + uint32(rng.IntN(5))})
			}
			allows = append(allows, portAllow{protos[rng.IntN(3)], portRange{lo, lo + uint16(rng.IntN(6))}, mergeSpans(addrs)})
		}
		rects := rectangles(portPieces(allows))
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
