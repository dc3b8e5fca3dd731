package addrs

import (
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// parse reads an address as the netlink library does: with the prefix
// length when the local address is the address, alone when it has a peer.
func TestParse(t *testing.T) {
	msg := func(prefix uint8, attrs ...*nl.RtAttr) []byte {
		b := (&nl.IfAddrmsg{IfAddrmsg: unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: prefix, Index: 7}}).Serialize()
		for _, a := range attrs {
			b = append(b, a.Serialize()...)
		}
		return b
	}
	ip := func(typ int, a, b, c, d byte) *nl.RtAttr { return nl.NewRtAttr(typ, []byte{a, b, c, d}) }
	for _, tc := range []struct {
		name string
		m    []byte
		want string
	}{
		{"local and address", msg(24, ip(unix.IFA_ADDRESS, 10, 0, 0, 1), ip(unix.IFA_LOCAL, 10, 0, 0, 1)), "10.0.0.1/24"},
		{"peer", msg(24, ip(unix.IFA_ADDRESS, 10, 0, 0, 2), ip(unix.IFA_LOCAL, 10, 0, 0, 1)), "10.0.0.1/32"},
		{"address only", msg(16, ip(unix.IFA_ADDRESS, 10, 1, 0, 1)), "10.1.0.1/16"},
		{"none", msg(16), ""},
	} {
		a, ok := parse(tc.m)
		got := ""
		if ok {
			got = a.cidr.String()
			if a.index != 7 {
				t.Errorf("%s: index %d, want 7", tc.name, a.index)
			}
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
