package sysctl

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

func TestDiff(t *testing.T) {
	fwd := spec.Sysctl{Path: "net/ipv4/ip_forward", Value: "1"}
	ports := spec.Sysctl{Netns: "/var/run/netns/p", Path: "net/ipv4/ip_local_port_range", Value: "1024 65000"}
	for _, c := range []struct {
		name              string
		desired, observed []spec.Sysctl
		want              []string
	}{
		{name: "empty"},
		{name: "equal, whitespace aside", desired: []spec.Sysctl{fwd, ports},
			observed: []spec.Sysctl{{Path: fwd.Path, Value: "1"}, {Netns: ports.Netns, Path: ports.Path, Value: "1024\t65000"}}},
		{name: "absent key is a create", desired: []spec.Sysctl{fwd}, want: []string{"+ sysctl net/ipv4/ip_forward = 1"}},
		{name: "other value is an update", desired: []spec.Sysctl{ports},
			observed: []spec.Sysctl{{Netns: ports.Netns, Path: ports.Path, Value: "32768 60999"}},
			want:     []string{"~ sysctl net/ipv4/ip_local_port_range = 1024 65000 netns /var/run/netns/p (was 32768 60999)"}},
		{name: "a key no longer named is left alone", observed: []spec.Sysctl{fwd}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, o := range Diff(c.desired, c.observed) {
				got = append(got, o.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

func TestCheckPath(t *testing.T) {
	for p, ok := range map[string]bool{
		"net/ipv4/ip_forward":                                     true,
		"net/ipv4/conf/tw1a2b3c/rp_filter":                        true,
		"net/ipv4/conf/eth0.100/rp_filter":                        true,
		"kernel/hostname":                                         false,
		"net/../kernel/hostname":                                  false,
		"/net/ipv4/ip_forward":                                    false,
		"net/ipv4//ip_forward":                                    false,
		"net/ipv4/conf/all/rp_filter\n":                           false,
		"net/ipv4/conf/x y/rp_filter":                             false,
		"net/ipv4/neigh/default/gc_thresh1":                       true,
		"net/ipv4/conf/" + strings.Repeat("a", 15) + "/rp_filter": true,
	} {
		if got := checkPath(p) == nil; got != ok {
			t.Errorf("checkPath(%q) ok = %v, want %v", p, got, ok)
		}
	}
}
