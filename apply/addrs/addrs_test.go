package addrs

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

func TestDiff(t *testing.T) {
	const pod = "/var/run/netns/p"
	a := spec.Address{Netns: pod, Dev: "eth0", CIDR: "198.18.0.10/32", Pod: "ns/a"}
	for _, c := range []struct {
		name              string
		desired, observed []spec.Address
		want              []string
	}{
		{name: "empty"},
		{name: "converged", desired: []spec.Address{a}, observed: []spec.Address{{Netns: pod, Dev: "eth0", CIDR: "198.18.0.10/32"}}},
		{name: "add", desired: []spec.Address{a}, want: []string{"+ address 198.18.0.10/32 dev eth0 netns " + pod}},
		{
			name: "another prefix length is another address", desired: []spec.Address{a},
			observed: []spec.Address{{Netns: pod, Dev: "eth0", CIDR: "198.18.0.10/24"}},
			want:     []string{"- address 198.18.0.10/24 dev eth0 netns " + pod, "+ address 198.18.0.10/32 dev eth0 netns " + pod},
		},
		{
			name:     "host first, then namespaces",
			observed: []spec.Address{{Netns: pod, Dev: "eth0", CIDR: "198.18.0.11/32"}, {Dev: "tw1", CIDR: "198.18.1.1/32"}},
			want:     []string{"- address 198.18.1.1/32 dev tw1", "- address 198.18.0.11/32 dev eth0 netns " + pod},
		},
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
