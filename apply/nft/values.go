package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// dtype is what we need to know about one nft data type: its kernel id
// (what `nft list` uses to print the values), its size on the wire, and
// whether values of it are numbers that can form ranges.
type dtype struct {
	name  string
	magic uint32
	size  int
	// numeric types accept ranges "a-b" (and CIDRs for addresses) in
	// interval sets; ifname and ct_state do not.
	numeric bool
	// hostOrder types are in host byte order for nft (ct_state is a native
	// u32 bitmask; ifname a string nft would print reversed otherwise); all
	// others are big endian. nft reads this from the set's userdata.
	hostOrder bool
}

var dtypes = map[string]dtype{
	spec.TypeIPv4Addr: {name: spec.TypeIPv4Addr, magic: 7, size: 4, numeric: true},
	spec.TypeProto:    {name: spec.TypeProto, magic: 12, size: 1, numeric: true},
	spec.TypeService:  {name: spec.TypeService, magic: 13, size: 2, numeric: true},
	spec.TypeIfName:   {name: spec.TypeIfName, magic: 41, size: 16, hostOrder: true},
	spec.TypeCtState:  {name: spec.TypeCtState, magic: 26, size: 4, hostOrder: true},
}

// ctStates are the conntrack state bits in the order nft prints them.
var ctStates = []struct {
	name string
	bit  uint32
}{
	{"invalid", 1}, {"established", 2}, {"related", 4}, {"new", 8}, {"untracked", 64},
}

func lookupType(name string) (dtype, error) {
	t, ok := dtypes[name]
	if !ok {
		return dtype{}, fmt.Errorf("type %q is not supported", name)
	}
	return t, nil
}

// concatLen is the key length of a set of these types: one part is its own
// size, a concatenation pads every part to 4-byte registers.
func concatLen(types []dtype) int {
	if len(types) == 1 {
		return types[0].size
	}
	n := 0
	for _, t := range types {
		n += pad4(t.size)
	}
	return n
}

func pad4(n int) int { return (n + 3) &^ 3 }

// keyRange is one key part as the inclusive range of wire values it covers;
// a single value has lo == hi.
type keyRange struct{ lo, hi []byte }

func (r keyRange) single() bool { return bytes.Equal(r.lo, r.hi) }

// parsePart parses one key part of type t: a value, or for numeric types a
// range "a-b" or (addresses) a CIDR.
func parsePart(t dtype, s string) (keyRange, error) {
	s = strings.TrimSpace(s)
	switch t.name {
	case spec.TypeIfName:
		name := strings.Trim(s, `"`)
		if name == "" || len(name) > 15 {
			return keyRange{}, fmt.Errorf("%q is not an interface name (1 to 15 bytes)", s)
		}
		b := make([]byte, 16)
		copy(b, name)
		return keyRange{b, b}, nil
	case spec.TypeCtState:
		bit, err := ctBit(s)
		if err != nil {
			return keyRange{}, err
		}
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, bit)
		return keyRange{b, b}, nil
	}
	if t.name == spec.TypeIPv4Addr {
		if p, err := netip.ParsePrefix(s); err == nil {
			if !p.Addr().Is4() {
				return keyRange{}, fmt.Errorf("%q is not an IPv4 prefix", s)
			}
			lo, hi := prefixRange(p.Masked())
			return keyRange{be(lo, 4), be(hi, 4)}, nil
		}
	}
	if from, to, ok := strings.Cut(s, "-"); ok {
		lo, err := parseNumber(t, from)
		if err != nil {
			return keyRange{}, err
		}
		hi, err := parseNumber(t, to)
		if err != nil {
			return keyRange{}, err
		}
		if lo > hi {
			return keyRange{}, fmt.Errorf("range %q ends before it starts", s)
		}
		return keyRange{be(lo, t.size), be(hi, t.size)}, nil
	}
	n, err := parseNumber(t, s)
	if err != nil {
		return keyRange{}, err
	}
	return keyRange{be(n, t.size), be(n, t.size)}, nil
}

func parseNumber(t dtype, s string) (uint64, error) {
	s = strings.TrimSpace(s)
	switch t.name {
	case spec.TypeIPv4Addr:
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return 0, fmt.Errorf("%q is not an IPv4 address", s)
		}
		b := a.As4()
		return uint64(binary.BigEndian.Uint32(b[:])), nil
	case spec.TypeProto:
		if n, ok := spec.ProtoNumbers[s]; ok {
			return n, nil
		}
	}
	n, err := strconv.ParseUint(s, 10, 8*t.size)
	if err != nil {
		return 0, fmt.Errorf("%q is not a valid %s", s, t.name)
	}
	return n, nil
}

func ctBit(s string) (uint32, error) {
	for _, st := range ctStates {
		if st.name == s {
			return st.bit, nil
		}
	}
	return 0, fmt.Errorf("%q is not a conntrack state", s)
}

// ctMask parses state names into one bitmask.
func ctMask(names []string) (uint32, error) {
	var m uint32
	for _, n := range names {
		bit, err := ctBit(strings.TrimSpace(n))
		if err != nil {
			return 0, err
		}
		m |= bit
	}
	return m, nil
}

// ctNames lists the states of a bitmask in nft's order.
func ctNames(m uint32) ([]string, bool) {
	var out []string
	for _, st := range ctStates {
		if m&st.bit != 0 {
			out = append(out, st.name)
			m &^= st.bit
		}
	}
	return out, m == 0
}

func prefixRange(p netip.Prefix) (lo, hi uint64) {
	b := p.Addr().As4()
	lo = uint64(binary.BigEndian.Uint32(b[:]))
	hi = lo | (1<<(32-p.Bits()) - 1)
	return lo, hi
}

func be(n uint64, size int) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, n)
	return b[8-size:]
}

func num(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	return n
}

// formatPart prints a key part canonically: what `nft list` prints, so that
// the desired and the observed side compare as strings.
func formatPart(t dtype, r keyRange) string {
	switch t.name {
	case spec.TypeIfName:
		return string(bytes.TrimRight(r.lo, "\x00"))
	case spec.TypeCtState:
		names, _ := ctNames(binary.NativeEndian.Uint32(r.lo))
		return strings.Join(names, ",")
	case spec.TypeIPv4Addr:
		lo, hi := num(r.lo), num(r.hi)
		if lo == hi {
			return ipString(lo)
		}
		// A range that is exactly one prefix prints as a CIDR.
		span := hi - lo + 1
		if span&(span-1) == 0 && lo&(span-1) == 0 {
			bits := 32
			for s := span; s > 1; s >>= 1 {
				bits--
			}
			return ipString(lo) + "/" + strconv.Itoa(bits)
		}
		return ipString(lo) + "-" + ipString(hi)
	}
	lo, hi := num(r.lo), num(r.hi)
	if lo == hi {
		return numString(t, lo)
	}
	return numString(t, lo) + "-" + numString(t, hi)
}

func ipString(n uint64) string {
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

func numString(t dtype, n uint64) string {
	if t.name == spec.TypeProto {
		for name, v := range spec.ProtoNumbers {
			if v == n {
				return name
			}
		}
	}
	return strconv.FormatUint(n, 10)
}

// canonKey parses the key parts of an element of a set of these types,
// checks that ranges appear only where the set allows them, and returns the
// parsed ranges and the canonical text of each part.
func canonKey(types []dtype, interval bool, parts []string) ([]keyRange, []string, error) {
	if len(parts) != len(types) {
		return nil, nil, fmt.Errorf("has %d key parts, the type has %d", len(parts), len(types))
	}
	rs := make([]keyRange, len(parts))
	texts := make([]string, len(parts))
	for i, p := range parts {
		r, err := parsePart(types[i], p)
		if err != nil {
			return nil, nil, fmt.Errorf("key part %d: %w", i+1, err)
		}
		if !r.single() && !interval {
			return nil, nil, fmt.Errorf("key part %d: %q is a range, the set has no interval flag", i+1, p)
		}
		rs[i] = r
		texts[i] = formatPart(types[i], r)
	}
	return rs, texts, nil
}

// joinKey lays key parts out as the kernel stores them: a single part as
// is, concatenated parts each padded to a 4-byte register.
func joinKey(types []dtype, parts [][]byte) []byte {
	if len(parts) == 1 {
		return slices.Clone(parts[0])
	}
	out := make([]byte, 0, concatLen(types))
	for i, p := range parts {
		out = append(out, p...)
		out = append(out, make([]byte, pad4(types[i].size)-len(p))...)
	}
	return out
}

// splitKey is the inverse of joinKey.
func splitKey(types []dtype, key []byte) ([][]byte, error) {
	if len(key) != concatLen(types) {
		return nil, fmt.Errorf("key of %d bytes, the type needs %d", len(key), concatLen(types))
	}
	if len(types) == 1 {
		return [][]byte{key}, nil
	}
	out := make([][]byte, len(types))
	off := 0
	for i, t := range types {
		out[i] = key[off : off+t.size]
		off += pad4(t.size)
	}
	return out, nil
}

// next returns b+1 as a big-endian number of the same width, and false when
// b is the largest value (all ones), which has no successor.
func next(b []byte) ([]byte, bool) {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			return out, true
		}
	}
	return nil, false
}

// prev returns b-1 (b is never zero where it is used: an interval end is
// always above its start).
func prev(b []byte) []byte {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}
