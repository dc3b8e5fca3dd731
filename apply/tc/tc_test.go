package tc

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

func tbf(rate uint64, burst, limit uint32) spec.Qdisc {
	return spec.Qdisc{Dev: "tw1", Kind: spec.QdiscTBF, RateBitsPerSecond: rate, BurstBytes: burst, LimitBytes: limit}
}

func TestEqual(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b spec.Qdisc
		want bool
	}{
		{"same", tbf(10e6, 32768, 65536), tbf(10e6, 32768, 65536), true},
		{"burst rounded down by the kernel", tbf(10e6, 32768, 65536), tbf(10e6, 32766, 65536), true},
		{"burst rounded at 40 Gbit/s", tbf(40e9, 1<<20, 4<<20), tbf(40e9, 1045000, 4<<20), true},
		{"burst really different", tbf(10e6, 32768, 65536), tbf(10e6, 16384, 65536), false},
		{"rate below a byte is the same rate", tbf(10_000_007, 32768, 65536), tbf(10e6, 32768, 65536), true},
		{"rate different", tbf(10e6, 32768, 65536), tbf(20e6, 32768, 65536), false},
		{"limit different", tbf(10e6, 32768, 65536), tbf(10e6, 32768, 65535), false},
	} {
		if got := Equal(c.a, c.b); got != c.want {
			t.Errorf("%s: Equal = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestDiff(t *testing.T) {
	d := tbf(10e6, 32768, 65536)
	for _, c := range []struct {
		name              string
		desired, observed []spec.Qdisc
		want              []string
	}{
		{name: "empty"},
		{name: "converged within rounding", desired: []spec.Qdisc{d}, observed: []spec.Qdisc{tbf(10e6, 32766, 65536)}},
		{name: "create", desired: []spec.Qdisc{d}, want: []string{"+ qdisc tbf 1: dev tw1 root rate 10000000bit burst 32768b limit 65536b"}},
		{name: "replace", desired: []spec.Qdisc{d}, observed: []spec.Qdisc{tbf(5e6, 32766, 65536)},
			want: []string{"~ qdisc tbf 1: dev tw1 root rate 10000000bit burst 32768b limit 65536b (was rate 5000000bit burst 32766b limit 65536b)"}},
		{name: "delete", observed: []spec.Qdisc{tbf(5e6, 32766, 65536)},
			want: []string{"- qdisc tbf 1: dev tw1 root rate 5000000bit burst 32766b limit 65536b"}},
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

func TestToKernelRefusesBadInput(t *testing.T) {
	for name, q := range map[string]spec.Qdisc{
		"rate below one byte":    tbf(7, 100, 100),
		"zero burst":             tbf(10e6, 0, 100),
		"zero limit":             tbf(10e6, 100, 0),
		"bucket too long to fit": tbf(8, 4_000_000_000, 100),
		"another kind":           {Dev: "tw1", Kind: "htb", RateBitsPerSecond: 10e6, BurstBytes: 1, LimitBytes: 1},
	} {
		if _, err := toKernel(q, 1); err == nil {
			t.Errorf("%s: toKernel accepted %+v", name, q)
		}
	}
	k, err := toKernel(tbf(10e6, 32768, 65536), 3)
	if err != nil || k.Rate != 1_250_000 || k.Limit != 65536 || k.Buffer == 0 || k.LinkIndex != 3 || k.Handle != Handle {
		t.Errorf("toKernel = %+v, %v", k, err)
	}
}
