package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/cnibench"
	"github.com/terway-reconciler/terway/internal/nstest"
)

// refPluginsEnv names the directory with the reference plugins; unset, the
// benchmark asks hack/cni-plugins.sh (which builds them once).
const refPluginsEnv = "TERWAY_CNI_PLUGINS"

// BenchmarkCNIAddDel reports ADD and DEL latency (p50, p99) of 200 pods,
// sequentially and with 8 workers, for terway and for the reference chain
// ptp + host-local + bandwidth, and the ratio of their ADD p50s. The
// machinery, and its safety checks, are internal/cnibench's, which
// `terwayctl bench` runs too; the driver it needs is this test binary,
// re-executed inside the node namespace (TestMain). Run with -benchtime 1x
// (make bench).
func BenchmarkCNIAddDel(b *testing.B) {
	nstest.RequireRoot(b)
	exe, err := os.Executable()
	must(b, err)
	ctx := context.Background()
	bench, err := cnibench.Setup(ctx, cnibench.Options{
		BinDir: binaries(b), RefPlugins: refPlugins(b), Driver: []string{exe}, WorkDir: b.TempDir(), Logf: b.Logf,
	})
	must(b, err)
	b.Cleanup(func() {
		if err := bench.Close(); err != nil {
			b.Error(err)
		}
	})

	type key struct {
		chain string
		conc  int
	}
	p50 := map[key][]time.Duration{} // one per row: -count repeats the rows
	for _, chain := range cnibench.Chains {
		b.Run("chain="+chain, func(b *testing.B) {
			for _, conc := range []int{1, 8} {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
					var add, del []time.Duration
					var addWall time.Duration
					for b.Loop() {
						r, err := bench.Round(ctx, chain, conc)
						if r != nil {
							b.Log(r.Summary())
						}
						must(b, err)
						add = append(add, r.Add...)
						del = append(del, r.Del...)
						addWall += r.AddWall
					}
					p50[key{chain, conc}] = append(p50[key{chain, conc}], cnibench.Percentile(add, 50))
					b.ReportMetric(cnibench.Ms(cnibench.Percentile(add, 50)), "add-p50-ms")
					b.ReportMetric(cnibench.Ms(cnibench.Percentile(add, 99)), "add-p99-ms")
					b.ReportMetric(cnibench.Ms(cnibench.Percentile(del, 50)), "del-p50-ms")
					b.ReportMetric(cnibench.Ms(cnibench.Percentile(del, 99)), "del-p99-ms")
					b.ReportMetric(float64(len(add))/addWall.Seconds(), "adds/s")
					// The comparison goes with the second chain's rows (the
					// parent benchmark's log is shown only with -v), against
					// the median of terway's rows.
					t, r := cnibench.Percentile(p50[key{cnibench.ChainTerway, conc}], 50), cnibench.Percentile(add, 50)
					if chain == cnibench.ChainRef && t > 0 && r > 0 {
						verdict := "met"
						if 2*t > r {
							verdict = "NOT met"
						}
						b.ReportMetric(float64(t)/float64(r), "terway/ref-add-p50")
						b.Logf("conc=%d: ADD p50 terway %.2f ms, ref %.2f ms, terway/ref %.2f (goal <= 0.50: %s)",
							conc, cnibench.Ms(t), cnibench.Ms(r), float64(t)/float64(r), verdict)
					}
				})
			}
		})
	}
}

// refPlugins returns the directory with ptp, host-local and bandwidth.
func refPlugins(b *testing.B) string {
	b.Helper()
	dir := os.Getenv(refPluginsEnv)
	if dir == "" {
		var stderr bytes.Buffer
		cmd := exec.Command("../hack/cni-plugins.sh")
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("hack/cni-plugins.sh: %v\n%s", err, stderr.String())
		}
		dir = strings.TrimSpace(string(out))
	}
	if err := cnibench.CheckRefPlugins(dir); err != nil {
		b.Fatalf("%v (or set %s)", err, refPluginsEnv)
	}
	return dir
}
