package neigh

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

func TestDiff(t *testing.T) {
	const pod = "/var/run/netns/p"
	gw := spec.Neighbor{Netns: pod, Dev: "eth0", IP: "169.254.1.1", MAC: "02:00:00:00:00:01", Pod: "ns/a"}
	for _, c := range []struct {
		name              string
		desired, observed []spec.Neighbor
		want              []string
	}{
		{name: "empty"},
		{name: "converged, MAC case ignored", desired: []spec.Neighbor{gw},
			observed: []spec.Neighbor{{Netns: pod, Dev: "eth0", IP: "169.254.1.1", MAC: "02:00:00:00:00:01"}}},
		{name: "create", desired: []spec.Neighbor{gw},
			want: []string{"+ neighbor 169.254.1.1 lladdr 02:00:00:00:00:01 dev eth0 nud permanent netns " + pod}},
		{
			name: "MAC change", desired: []spec.Neighbor{gw},
			observed: []spec.Neighbor{{Netns: pod, Dev: "eth0", IP: "169.254.1.1", MAC: "02:00:00:00:00:09"}},
			want:     []string{"~ neighbor 169.254.1.1 lladdr 02:00:00:00:00:01 dev eth0 nud permanent netns " + pod + ": lladdr 02:00:00:00:00:09 → 02:00:00:00:00:01"},
		},
		{
			name:     "undesired, by IP value",
			observed: []spec.Neighbor{{Dev: "tw1", IP: "198.18.0.10", MAC: "02:00:00:00:00:02"}, {Dev: "tw1", IP: "198.18.0.9", MAC: "02:00:00:00:00:03"}},
			want: []string{
				"- neighbor 198.18.0.9 lladdr 02:00:00:00:00:03 dev tw1 nud permanent",
				"- neighbor 198.18.0.10 lladdr 02:00:00:00:00:02 dev tw1 nud permanent",
			},
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
