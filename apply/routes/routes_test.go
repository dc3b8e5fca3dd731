package routes

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

const pod = "/var/run/netns/p"

func TestDiff(t *testing.T) {
	host := spec.Route{Dst: "198.18.0.10/32", Dev: "tw1", Scope: spec.ScopeLink, Pod: "ns/a"}
	def := spec.Route{Netns: pod, Dst: "default", Gw: "169.254.1.1", Dev: "eth0", Onlink: true, Pod: "ns/a"}
	eni := spec.Route{Table: 1001, Dst: "default", Gw: "198.18.64.253", Dev: "eth1", Onlink: true}
	for _, c := range []struct {
		name              string
		desired, observed []spec.Route
		want              []string
	}{
		{name: "empty"},
		{name: "converged", desired: []spec.Route{host, def, eni}, observed: []spec.Route{eni, def, host}},
		{
			name:    "create in document order",
			desired: []spec.Route{def, eni, host},
			want: []string{
				"+ route 198.18.0.10/32 dev tw1 scope link table main proto terway",
				"+ route default via 198.18.64.253 dev eth1 onlink table 1001 proto terway",
				"+ route default via 169.254.1.1 dev eth0 onlink table main proto terway netns " + pod,
			},
		},
		{
			name:     "main written as 254 and 0.0.0.0/0 as default are the same route",
			desired:  []spec.Route{{Netns: pod, Table: spec.MainTable, Dst: "0.0.0.0/0", Gw: "169.254.1.1", Dev: "eth0", Onlink: true}},
			observed: []spec.Route{def},
		},
		{
			name:     "universe scope written out is the default scope",
			desired:  []spec.Route{{Dst: "198.18.1.0/24", Dev: "tw1", Scope: spec.ScopeUniverse}},
			observed: []spec.Route{{Dst: "198.18.1.0/24", Dev: "tw1"}},
		},
		{
			name:    "changed content is replaced in place",
			desired: []spec.Route{host, def},
			observed: []spec.Route{
				{Dst: "198.18.0.10/32", Dev: "tw2"},
				{Netns: pod, Dst: "default", Gw: "169.254.1.2", Dev: "eth0"},
			},
			want: []string{
				"~ route 198.18.0.10/32 dev tw1 scope link table main proto terway: dev tw2 → tw1, scope universe → link",
				"~ route default via 169.254.1.1 dev eth0 onlink table main proto terway netns " + pod + ": via 169.254.1.2 → 169.254.1.1, onlink false → true",
			},
		},
		{
			name:     "same destination in another table is another route",
			desired:  []spec.Route{eni},
			observed: []spec.Route{{Table: 1002, Dst: "default", Gw: "198.18.64.253", Dev: "eth1", Onlink: true}},
			want: []string{
				"- route default via 198.18.64.253 dev eth1 onlink table 1002 proto terway",
				"+ route default via 198.18.64.253 dev eth1 onlink table 1001 proto terway",
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ops := Diff(c.desired, c.observed)
			var got []string
			for _, o := range ops {
				got = append(got, o.String())
				if o.Writes != 1 || o.Kind != Kind {
					t.Errorf("%s: writes %d kind %q", o, o.Writes, o.Kind)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
		})
	}
}

func TestToKernelRefusesBadInput(t *testing.T) {
	for _, r := range []spec.Route{
		{Dst: "nonsense", Dev: "x"},
		{Dst: "2001:db8::/64", Dev: "x"},
		{Dst: "default", Gw: "fe80::1", Dev: "x"},
		{Dst: "default", Dev: "x", Scope: "host"},
	} {
		if _, err := toKernel(nil, r); err == nil {
			t.Errorf("toKernel(%+v) accepted it", r)
		}
	}
}

// TestKeysMatchTheKernels: a document route's key in the kernel's form
// (wantedKey) is the key of the route the kernel gives back for it
// (kernelRoute.key), whatever way the document spells the destination and
// the main table; and different keys stay different.
func TestKeysMatchTheKernels(t *testing.T) {
	_, p24, _ := net.ParseCIDR("198.18.1.0/24")
	_, p32, _ := net.ParseCIDR("198.18.0.5/32")
	for _, c := range []struct {
		doc    spec.Route
		kernel kernelRoute
	}{
		{spec.Route{Dst: "default"}, kernelRoute{table: 254}},
		{spec.Route{Dst: "0.0.0.0/0", Table: 254}, kernelRoute{table: 254}},
		{spec.Route{Dst: "198.18.1.7/24"}, kernelRoute{table: 254, dst: p24}},
		{spec.Route{Dst: "198.18.0.5/32", Table: 1001}, kernelRoute{table: 1001, dst: p32}},
	} {
		k, ok := wantedKey(c.doc)
		if !ok || k != c.kernel.key() {
			t.Errorf("route %s: key %v (%v), the kernel's %v", c.doc.Key(), k, ok, c.kernel.key())
		}
	}
	a, _ := wantedKey(spec.Route{Dst: "198.18.0.5/32"})
	for _, other := range []spec.Route{{Dst: "198.18.0.5/32", Table: 1001}, {Dst: "198.18.0.6/32"}, {Dst: "198.18.0.4/31"}} {
		if b, _ := wantedKey(other); a == b {
			t.Errorf("routes %s and %s share a key", "198.18.0.5/32", other.Key())
		}
	}
	if _, ok := wantedKey(spec.Route{Dst: "fe80::/64"}); ok {
		t.Error("an IPv6 destination has a key")
	}
}
