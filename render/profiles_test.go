package render

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSplitProfilesMatchRectangles: for random allowances, an (address,
// protocol, port) triple is in the split form's profiles exactly when it
// is in the rectangles of the one concatenated set, at random points and
// at every boundary, also with pods' pinned addresses among them; each
// profile's addresses are merged, no address is in
// two profiles, and each profile's ports are sorted and merged.
func TestSplitProfilesMatchRectangles(t *testing.T) {
	defer SplitEveryGroupForTest()()
	rng := rand.New(rand.NewPCG(17, 2026))
	protos := []string{"tcp", "udp", "sctp"}
	split := 0
	for round := range 2000 {
		var allows []portAllow
		for range 1 + rng.IntN(6) {
			lo := uint16(rng.IntN(40))
			a := portAllow{proto: protos[rng.IntN(len(protos))], ports: portRange{lo, lo + uint16(rng.IntN(3))}}
			for range 1 + rng.IntN(5) {
				l := uint32(rng.IntN(200))
				a.addrs = append(a.addrs, span{lo: l, hi: l + uint32(rng.IntN(20))})
			}
			for range rng.IntN(4) { // pods' own addresses (see span)
				l := uint32(rng.IntN(220))
				a.addrs = append(a.addrs, span{lo: l, hi: l, pin: true})
			}
			a.addrs = mergeSpans(a.addrs)
			allows = append(allows, a)
		}
		pieces := portPieces(allows)
		rects := rectangles(pieces)
		profiles := splitProfiles(pieces)
		if profiles == nil {
			continue
		}
		split++
		inRects := func(addr uint32, proto uint64, port uint16) bool {
			for _, r := range rects {
				if r.addrs.lo <= addr && addr <= r.addrs.hi && r.protoNum == proto && r.ports.lo <= port && port <= r.ports.hi {
					return true
				}
			}
			return false
		}
		inProfiles := func(addr uint32, proto uint64, port uint16) bool {
			for _, p := range profiles {
				for _, s := range p.addrs {
					if s.lo <= addr && addr <= s.hi {
						for _, e := range p.ports {
							if uint64(e>>32) == proto && e.ports().lo <= port && port <= e.ports().hi {
								return true
							}
						}
					}
				}
			}
			return false
		}
		var addrs []uint32
		for _, r := range rects {
			addrs = append(addrs, r.addrs.lo, r.addrs.hi, r.addrs.hi+1)
			if r.addrs.lo > 0 {
				addrs = append(addrs, r.addrs.lo-1)
			}
		}
		for range 20 {
			addrs = append(addrs, uint32(rng.IntN(240)))
		}
		for _, addr := range addrs {
			for _, proto := range []uint64{6, 17, 132} {
				for port := range uint16(45) {
					if got, want := inProfiles(addr, proto, port), inRects(addr, proto, port); got != want {
						t.Fatalf("round %d: %d proto %d port %d: in the split form %v, in the rectangles %v\nallows %v\nprofiles %v", round, addr, proto, port, got, want, allows, profiles)
					}
				}
			}
		}
		var all []span
		for _, p := range profiles {
			if !slices.Equal(mergeSpans(p.addrs), p.addrs) {
				t.Fatalf("round %d: a profile's addresses are not merged: %v", round, p.addrs)
			}
			if !slices.IsSorted(p.ports) || !slices.Equal(mergeProtoPorts(p.ports), p.ports) {
				t.Fatalf("round %d: a profile's ports are not sorted and merged: %v", round, p.ports)
			}
			all = append(all, p.addrs...)
		}
		slices.SortFunc(all, func(a, b span) int { return int(int64(a.lo) - int64(b.lo)) })
		for i := 1; i < len(all); i++ {
			if all[i].lo <= all[i-1].hi {
				t.Fatalf("round %d: an address is in two profiles: %v and %v", round, all[i-1], all[i])
			}
		}
	}
	if split < 1000 {
		t.Errorf("only %d of 2000 rounds were split: the test does not exercise the split form", split)
	}
}

// TestSplitChosenOnlyWhereItPays: 500 peers on 100 ports that are not
// adjacent are 50,000 rectangles and split into 600 elements; 5 peers on
// the same ports stay one set (under splitMinElements), and so do 2,000
// peers on one port each (every profile different: too many rules).
func TestSplitChosenOnlyWhereItPays(t *testing.T) {
	product := func(peers, ports int) []portAllow {
		var addrs []span
		for i := range peers {
			addrs = append(addrs, span{lo: uint32(2 * i), hi: uint32(2 * i)})
		}
		var out []portAllow
		for p := range ports {
			out = append(out, portAllow{"tcp", portRange{uint16(1000 + 2*p), uint16(1000 + 2*p)}, addrs})
		}
		return out
	}
	pieces := portPieces(product(500, 100))
	if rects := rectangles(pieces); len(rects) != 50000 {
		t.Fatalf("%d rectangles, want 50,000", len(rects))
	}
	profiles := splitProfiles(pieces)
	if len(profiles) != 1 || len(profiles[0].addrs) != 500 || len(profiles[0].ports) != 100 {
		t.Fatalf("500 x 100: want one profile of 500 addresses and 100 ports, got %d profiles", len(profiles))
	}
	if p := splitProfiles(portPieces(product(5, 100))); p != nil {
		t.Errorf("5 x 100 (500 elements) was split")
	}
	var each []portAllow
	for i := range 2000 {
		each = append(each, portAllow{"tcp", portRange{uint16(i), uint16(i)}, []span{{lo: uint32(2 * i), hi: uint32(2 * i)}}})
	}
	if p := splitProfiles(portPieces(each)); p != nil {
		t.Errorf("2,000 peers on a port each was split into %d profiles", len(p))
	}
}

func BenchmarkSplitProfiles(b *testing.B) {
	var addrs []span
	for i := range 500 {
		addrs = append(addrs, span{lo: uint32(2 * i), hi: uint32(2 * i)})
	}
	var allows []portAllow
	for p := range 100 {
		allows = append(allows, portAllow{"tcp", portRange{uint16(1000 + 2*p), uint16(1000 + 2*p)}, addrs})
	}
	for b.Loop() {
		splitProfiles(portPieces(allows))
	}
}

// rectangles is eachRectangle's rectangles as a list.
func rectangles(pieces []portPiece) []rect {
	out := make([]rect, 0, rectangleCount(pieces))
	eachRectangle(pieces, func(r rect) { out = append(out, r) })
	return out
}
