package rules

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

func TestDiff(t *testing.T) {
	to := spec.Rule{Priority: 1510, To: "198.18.0.10/32", Table: spec.MainTable, Pod: "ns/a"}
	from := spec.Rule{Priority: 1520, From: "198.18.0.10/32", Table: 1001, Pod: "ns/a"}
	for _, c := range []struct {
		name              string
		desired, observed []spec.Rule
		want              []string
	}{
		{name: "empty"},
		{name: "converged", desired: []spec.Rule{from, to}, observed: []spec.Rule{to, from}},
		{
			name: "add", desired: []spec.Rule{from, to},
			want: []string{
				"+ rule priority 1510 from all to 198.18.0.10/32 lookup main",
				"+ rule priority 1520 from 198.18.0.10/32 lookup 1001",
			},
		},
		{
			name: "changed table is a delete and an add", desired: []spec.Rule{from},
			observed: []spec.Rule{{Priority: 1520, From: "198.18.0.10/32", Table: 1002}},
			want: []string{
				"- rule priority 1520 from 198.18.0.10/32 lookup 1002",
				"+ rule priority 1520 from 198.18.0.10/32 lookup 1001",
			},
		},
		{
			name: "undesired rule in the band", observed: []spec.Rule{to},
			want: []string{"- rule priority 1510 from all to 198.18.0.10/32 lookup main"},
		},
		{
			name: "unmasked and masked selectors are the same rule", observed: []spec.Rule{{Priority: 1530, From: "198.18.0.0/16", Table: 1001}},
			desired: []spec.Rule{{Priority: 1530, From: "198.18.7.7/16", Table: 1001}},
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

func TestToKernelStaysInTheBand(t *testing.T) {
	for _, r := range []spec.Rule{
		{Priority: 1400, From: "198.18.0.1/32", Table: 1001},
		{Priority: 32766, Table: spec.MainTable},
		{Priority: 1510, From: "2001:db8::/64", Table: 1001},
		{Priority: 1510, To: "x", Table: 1001},
	} {
		if _, err := toKernel(r); err == nil {
			t.Errorf("toKernel(%+v) accepted it", r)
		}
	}
}
