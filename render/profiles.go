package render

import (
	"cmp"
	"slices"
	"strconv"
)

// A group whose policies admit many peers on many ports that are not
// adjacent has a ports set that is their product: 500 peers on 100 ports
// are 50,000 (address, protocol, port) elements, and an edit that takes 80
// peers away deletes 8,000 of them. Such a group is rendered in the split
// form instead: for each distinct list of (protocol, ports) that some
// addresses are allowed (a port profile), one rule matching the profile's
// addresses in one set and the protocol and port in another. The same 500
// peers on 100 ports are then 500 + 100 elements, and the edit deletes 80.
//
// The split form is used only where it is much smaller, and only for few
// profiles, because each profile is a rule every packet of the group may
// walk: a group with many different allowances keeps the one concatenated
// set, whose lookup cost does not grow with them.
var (
	// splitMinElements is the size of a ports set below which the group
	// keeps the one set: small groups look as they always have.
	splitMinElements = 1024
	// splitMaxProfiles bounds the rules a packet of a split group walks.
	splitMaxProfiles = 8
	// splitShrink is how many times fewer elements the split form must
	// have.
	splitShrink = 4
)

// SplitEveryGroupForTest makes render choose the split form for every group
// of at most 8 port profiles, whatever its size and gain, until restore is
// called. Tests of the datapath use it to put the split form through the
// kernel and explain with small inputs. Not safe while another goroutine
// renders.
func SplitEveryGroupForTest() (restore func()) {
	minElements, shrink := splitMinElements, splitShrink
	splitMinElements, splitShrink = 1, 0
	return func() { splitMinElements, splitShrink = minElements, shrink }
}

// protoPorts is one (protocol, port range) of a profile, packed as
// protocol number << 32 | lo << 16 | hi, which sorts as the document's
// canonical order of a (protocol, service) element.
type protoPorts uint64

func packProtoPorts(protoNum uint64, r portRange) protoPorts {
	return protoPorts(protoNum<<32 | uint64(r.lo)<<16 | uint64(r.hi))
}

func (p protoPorts) ports() portRange { return portRange{uint16(p >> 16), uint16(p)} }

// portProfile is the addresses allowed exactly these (protocol, ports).
type portProfile struct {
	ports []protoPorts
	addrs []span
}

// splitProfiles returns the port profiles of pieces (as portPieces makes
// them) when the split form is chosen for them, else nil. Profiles are in
// the order of their lowest address; each one's addresses are merged spans
// and its ports are in canonical order.
//
// It never makes the concatenated set's elements: 500 peers on 100 ports
// are 100 pieces with one address list, one class below, and the sweep
// walks its 500 spans once, not 50,000 rectangles.
func splitProfiles(pieces []portPiece) []portProfile {
	product := 0
	for _, p := range pieces {
		product += len(p.addrs)
	}
	if product < splitMinElements || len(pieces) == 0 {
		return nil
	}
	// Pieces with the same addresses form one class, with all their ports.
	type class struct {
		addrs []span
		ports []protoPorts
	}
	var classes []class
	byHash := map[uint64][]int{}
	for _, p := range pieces {
		h := hashSpans(p.addrs)
		c := -1
		for _, i := range byHash[h] {
			if slices.Equal(classes[i].addrs, p.addrs) {
				c = i
				break
			}
		}
		if c < 0 {
			c = len(classes)
			classes = append(classes, class{addrs: p.addrs})
			byHash[h] = append(byHash[h], c)
		}
		classes[c].ports = append(classes[c].ports, packProtoPorts(p.protoNum, p.ports))
	}
	if len(classes) == 1 {
		// Every piece allows the same addresses: one profile, no sweep. A
		// policy of 50,000 peers on one port is one such class, and is
		// refused here at the cost of a count.
		c := classes[0]
		ports := unionPorts(c.ports)
		if (len(c.addrs)+len(ports))*splitShrink > product {
			return nil
		}
		return []portProfile{{ports: ports, addrs: c.addrs}}
	}
	// A sweep along the address axis: at each boundary the active classes
	// change, and between boundaries the addresses share one profile, the
	// union of the active classes' ports. A class is never active twice at
	// once because its spans are disjoint.
	type event struct {
		at    uint64
		class int
		start bool
	}
	var events []event
	pinned := map[uint32]bool{} // pods' own addresses (see span)
	for i, c := range classes {
		for _, s := range c.addrs {
			events = append(events, event{uint64(s.lo), i, true}, event{uint64(s.hi) + 1, i, false})
			if s.pin {
				pinned[s.lo] = true
			}
		}
	}
	// Ends before starts at one address: a class's pinned address and the
	// span right after it are both its own, one ending where the next
	// starts.
	slices.SortFunc(events, func(a, b event) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(boolNum(a.start), boolNum(b.start)))
	})
	var (
		active   []int // sorted class indexes
		profiles []portProfile
		byKey    = map[string]int{}
		key      []byte
		cur      = -1 // profile of the addresses from lo on, -1 for none
		lo       uint64
	)
	closeSpan := func(end uint64) {
		if cur < 0 || end <= lo {
			return
		}
		p := &profiles[cur]
		s := span{lo: uint32(lo), hi: uint32(end - 1)}
		s.pin = s.lo == s.hi && pinned[s.lo]
		if n := len(p.addrs); n > 0 && touches(p.addrs[n-1], s) {
			p.addrs[n-1].hi = s.hi
			return
		}
		p.addrs = append(p.addrs, s)
	}
	for i := 0; i < len(events); {
		at := events[i].at
		for ; i < len(events) && events[i].at == at; i++ {
			e := events[i]
			j, found := slices.BinarySearch(active, e.class)
			switch {
			case e.start && !found:
				active = slices.Insert(active, j, e.class)
			case !e.start && found:
				active = slices.Delete(active, j, j+1)
			}
		}
		closeSpan(at)
		lo = at
		if len(active) == 0 {
			cur = -1
			continue
		}
		key = key[:0]
		for _, c := range active {
			key = strconv.AppendInt(key, int64(c), 36)
			key = append(key, ',')
		}
		k, ok := byKey[string(key)]
		if !ok {
			if len(profiles) == splitMaxProfiles {
				return nil
			}
			lists := make([][]protoPorts, len(active))
			for i, c := range active {
				lists[i] = classes[c].ports
			}
			k = len(profiles)
			byKey[string(key)] = k
			profiles = append(profiles, portProfile{ports: unionPorts(lists...)})
		}
		cur = k
	}
	size := 0
	for _, p := range profiles {
		size += len(p.addrs) + len(p.ports)
	}
	if size*splitShrink > product {
		return nil
	}
	return profiles
}

func boolNum(b bool) int {
	if b {
		return 1
	}
	return 0
}

// hashSpans is an FNV-1a hash of a span list, to find equal lists fast.
func hashSpans(spans []span) uint64 {
	h := uint64(14695981039346656037)
	for _, s := range spans {
		h = (h ^ uint64(s.lo)) * 1099511628211
		h = (h ^ uint64(s.hi)) * 1099511628211
	}
	return h
}

// unionPorts is the entries of lists, sorted and merged: a profile's ports.
func unionPorts(lists ...[]protoPorts) []protoPorts {
	ports := slices.Concat(lists...)
	slices.Sort(ports)
	return mergeProtoPorts(ports)
}

// mergeProtoPorts copies a sorted list of entries, joining adjacent port
// ranges of one protocol (eachRectangle keeps them apart where their
// addresses differ, which within one profile they do not).
func mergeProtoPorts(in []protoPorts) []protoPorts {
	out := make([]protoPorts, 0, len(in))
	for _, e := range in {
		if n := len(out); n > 0 {
			last := out[n-1]
			if last>>32 == e>>32 && uint32(last.ports().hi)+1 == uint32(e.ports().lo) {
				out[n-1] = last&^0xffff | protoPorts(e.ports().hi)
				continue
			}
		}
		out = append(out, e)
	}
	return out
}
