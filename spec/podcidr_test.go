package spec

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestNodePodCIDRAccepts(t *testing.T) {
	for _, tc := range []struct {
		podCIDR  string
		podCIDRs []string
		want     string
	}{
		{"198.18.0.0/24", nil, "198.18.0.0/24"},
		{"198.18.0.0/16", nil, "198.18.0.0/16"},
		{"198.18.0.7/32", nil, "198.18.0.7/32"},
		{"198.18.0.0/24", []string{"198.18.0.0/24"}, "198.18.0.0/24"},
		{"", []string{"198.18.0.0/24"}, "198.18.0.0/24"},
		// Dual stack: the IPv4 CIDR, wherever it is.
		{"198.18.0.0/24", []string{"198.18.0.0/24", "fd00::/64"}, "198.18.0.0/24"},
		{"fd00::/64", []string{"fd00::/64", "198.18.1.0/24"}, "198.18.1.0/24"},
	} {
		got, err := NodePodCIDR(tc.podCIDR, tc.podCIDRs)
		if err != nil || got.String() != tc.want {
			t.Errorf("NodePodCIDR(%q, %q) = %v, %v; want %s", tc.podCIDR, tc.podCIDRs, got, err, tc.want)
		}
	}
}

// TestNodePodCIDRRejects wants each bad value refused with the field and a
// reason that names the value and says what is wrong.
func TestNodePodCIDRRejects(t *testing.T) {
	for _, tc := range []struct {
		podCIDR  string
		podCIDRs []string
		field    string
		reason   []string
	}{
		{"", nil, "spec.podCIDR", []string{"not set"}},
		{"300.1.0.0/24", nil, "spec.podCIDR", []string{`"300.1.0.0/24" is not a CIDR`, `"300.1.0.0" is not an IP address`, "value >255"}},
		{"10.0.0.0/33", nil, "spec.podCIDR", []string{`"10.0.0.0/33" is not a CIDR`, "prefix length", "0 to 32"}},
		{"10.0.0.5/0", nil, "spec.podCIDR", []string{"host bits set", "0.0.0.0/0", "is a /0", "/16 to /32"}},
		{"10.0.0.0/8", nil, "spec.podCIDR", []string{`"10.0.0.0/8" is a /8`}},
		{"0.0.0.0/0", nil, "spec.podCIDR", []string{"is a /0"}},
		{"10.0.0.0", nil, "spec.podCIDR", []string{"no /prefix-length"}},
		{"10.0.0.0/024", nil, "spec.podCIDR", []string{`"10.0.0.0/024" is not a CIDR`}},
		{"10.0.0.0/-1", nil, "spec.podCIDR", []string{"prefix length"}},
		{"10.0.0.0/ 24", nil, "spec.podCIDR", []string{"prefix length"}},
		{"fd00::/64", nil, "spec.podCIDR", []string{"IPv6", "IPv4 addresses only"}},
		{"::ffff:10.0.0.0/120", nil, "spec.podCIDR", []string{"IPv6"}},
		{"", []string{"fd00::/64"}, "spec.podCIDRs", []string{"no IPv4 CIDR"}},
		{"", []string{"198.18.0.0/24", "300.0.0.0/24"}, "spec.podCIDRs[1]", []string{`"300.0.0.0" is not an IP address`}},
		{"", []string{"198.18.0.0/24", "198.18.1.0/24"}, "spec.podCIDRs[1]", []string{"same address family"}},
		{"", []string{"fd00::/64", "10.0.0.0/8"}, "spec.podCIDRs[1]", []string{"is a /8"}},
		{"198.18.0.0/24", []string{"198.18.1.0/24"}, "spec.podCIDR", []string{"differs from spec.podCIDRs[0]"}},
		{"", []string{"198.18.0.0/24", "fd00::/64", "fd01::/64"}, "spec.podCIDRs", []string{"has 3 CIDRs"}},
	} {
		got, err := NodePodCIDR(tc.podCIDR, tc.podCIDRs)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("NodePodCIDR(%q, %q) = %v, %v; want a FieldError", tc.podCIDR, tc.podCIDRs, got, err)
			continue
		}
		if got.IsValid() || fe.Usable {
			t.Errorf("NodePodCIDR(%q, %q) returned %v (usable %v) with its error", tc.podCIDR, tc.podCIDRs, got, fe.Usable)
		}
		if fe.Field != tc.field {
			t.Errorf("NodePodCIDR(%q, %q): field %q, want %q (%v)", tc.podCIDR, tc.podCIDRs, fe.Field, tc.field, err)
		}
		for _, want := range tc.reason {
			if !strings.Contains(fe.Reason, want) {
				t.Errorf("NodePodCIDR(%q, %q): reason %q does not say %q", tc.podCIDR, tc.podCIDRs, fe.Reason, want)
			}
		}
	}
}

// TestNodePodCIDRHostBitsServe: a pod CIDR with host bits set, which the API
// server accepts, is reported but its network serves, so a node that ran
// pods from it keeps them.
func TestNodePodCIDRHostBitsServe(t *testing.T) {
	for _, tc := range []struct {
		podCIDR  string
		podCIDRs []string
		field    string
	}{
		{"10.0.0.5/24", nil, "spec.podCIDR"},
		{"10.0.0.5/24", []string{"10.0.0.5/24", "fd00::/64"}, "spec.podCIDRs[0]"},
	} {
		got, err := NodePodCIDR(tc.podCIDR, tc.podCIDRs)
		var fe *FieldError
		if !errors.As(err, &fe) || !fe.Usable || fe.Field != tc.field || !strings.Contains(fe.Reason, `"10.0.0.5/24" has host bits set (its network is 10.0.0.0/24)`) {
			t.Errorf("NodePodCIDR(%q, %q) error %#v; want a usable FieldError of %s naming the network", tc.podCIDR, tc.podCIDRs, err, tc.field)
		}
		if got != netip.MustParsePrefix("10.0.0.0/24") {
			t.Errorf("NodePodCIDR(%q, %q) = %v, want the masked 10.0.0.0/24", tc.podCIDR, tc.podCIDRs, got)
		}
	}
}
