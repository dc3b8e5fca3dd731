package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/internal/cnibench"
)

// benchOptions are `terwayctl bench`'s flags.
type benchOptions struct {
	pods, basePods, policies, cniPods int
	cniPlugins, binDir, output        string
	only                              []string
	resync                            time.Duration
	log                               io.Writer // progress; io.Discard without -v
}

// The sections of the run, for --only.
const (
	sectionCNI = "cni" // pod setup against the reference chain
	sectionSim = "sim" // convergence, resync, policy, bandwidth, RSS on sims
	// sectionAntispoof is the cost of source validation per connection.
	sectionAntispoof = "antispoof"
)

func benchCommand() *cobra.Command {
	o := benchOptions{}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "bench [--pods 250] [--cni-plugins DIR] [-o table|json]",
		Short: "Measure whole-system figures, each beside a baseline measured in the same run",
		Long: `Measure whole-system figures, each beside a baseline measured in the same run:
pod setup (CNI ADD/DEL p50 and p99, 1 and 8 workers) against the reference chain
ptp + host-local + bandwidth; time to converge N pods against 10; a converged full
resync (time, kernel writes) at N pods against 10; TCP connections per second
between two pods with 1,000 NetworkPolicies against 0; bandwidth measured against
configured; the agent's RSS at N pods against 10; TCP connections per second
between two pods with source validation on against off; CNI ADD and DEL on a
node with N pods and 1,000 policies against 10 pods and none, and the render of
a 5,000-pod, 2,000-policy cluster from scratch and through the render cache;
one policy edit enforced among 1,000 policies against among none.

Runs as root. Everything runs in network namespaces it makes (sims named
bench<pid>-*, namespaces twb<pid>-*), which it removes when it ends, also on
error or interrupt. BENCHMARKS.md holds the latest table.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose {
				o.log = cmd.ErrOrStderr()
			} else {
				o.log = io.Discard
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := runBench(ctx, o)
			if rep != nil {
				if o.output == "json" {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					if err := enc.Encode(rep); err != nil {
						return err
					}
				} else {
					fmt.Fprint(cmd.OutOrStdout(), rep.table())
				}
			}
			return err
		},
	}
	cmd.Flags().IntVar(&o.pods, "pods", 250, "pods of the large sim (convergence, resync, policy, RSS)")
	cmd.Flags().IntVar(&o.basePods, "baseline-pods", 10, "pods of the baseline sim")
	cmd.Flags().IntVar(&o.policies, "policies", 1000, "NetworkPolicies selecting the server pod in the policy figures")
	cmd.Flags().IntVar(&o.cniPods, "cni-pods", 200, fmt.Sprintf("pods per CNI round (%d alternating rounds per chain and concurrency)", cniPasses))
	cmd.Flags().StringVar(&o.cniPlugins, "cni-plugins", os.Getenv("TERWAY_CNI_PLUGINS"),
		"folder with the reference plugins ptp, host-local, bandwidth (default $TERWAY_CNI_PLUGINS, else hack/cni-plugins.sh when run from the repository)")
	cmd.Flags().StringVar(&o.binDir, "bin-dir", "", "folder of terwayd, terway and terwayctl (default: terwayctl's own)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "table", "table or json")
	cmd.Flags().StringSliceVar(&o.only, "only", nil, "run only these sections: cni, scale, sim, antispoof")
	cmd.Flags().DurationVar(&o.resync, "resync-interval", time.Second, "the sims' agent resync interval (the resync figures average a few)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print progress on stderr")
	cmd.AddCommand(benchDriver())
	return cmd
}

// benchDriver is the CNI benchmark's driver: cnibench starts it inside the
// node namespace (ip netns exec) to run the plugins there. Hidden because
// people never run it themselves.
func benchDriver() *cobra.Command {
	return &cobra.Command{
		Use:    "cni-driver",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			job := os.Getenv(cnibench.DriverEnv)
			if job == "" {
				return fmt.Errorf("%s: not set; terwayctl bench starts this command itself", cnibench.DriverEnv)
			}
			if code := cnibench.DriverMain(job); code != 0 {
				return &exitError{code: code, err: errors.New("")} // DriverMain printed why
			}
			return nil
		},
	}
}

// runBench runs the sections and returns every row measured. A section
// that fails is named in the report's errors and the others still run: a
// table with a gap says more than no table.
func runBench(ctx context.Context, o benchOptions) (*benchReport, error) {
	if o.output != "table" && o.output != "json" {
		return nil, fmt.Errorf("-o %q: want table or json", o.output)
	}
	for _, s := range o.only {
		if s != sectionCNI && s != sectionSim && s != sectionAntispoof && s != sectionScale {
			return nil, fmt.Errorf("--only %q: want %s, %s, %s or %s", s, sectionCNI, sectionSim, sectionAntispoof, sectionScale)
		}
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("terwayctl bench needs root: it makes network namespaces")
	}
	if o.basePods < 6 || o.pods < o.basePods {
		return nil, fmt.Errorf("--baseline-pods %d, --pods %d: want 6 <= baseline-pods <= pods (6 pods play server, client and the bandwidth targets)", o.basePods, o.pods)
	}
	if o.policies < 2 {
		return nil, fmt.Errorf("--policies %d: want at least 2 (a deny-all and one allowing the client)", o.policies)
	}
	if o.binDir == "" {
		var err error
		if o.binDir, err = binDir(); err != nil {
			return nil, err
		}
	}
	rep := &benchReport{Machine: thisMachine(os.Args)}
	run := func(section string) bool { return len(o.only) == 0 || slices.Contains(o.only, section) }
	var errs []error
	fail := func(what string, err error) {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", what, err))
		errs = append(errs, fmt.Errorf("%s: %w", what, err))
	}
	if run(sectionCNI) {
		rows, err := benchCNI(ctx, o)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			fail("pod setup", err)
		}
	}
	if run(sectionScale) && ctx.Err() == nil {
		rows, err := benchScale(ctx, o)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			fail("pod setup at scale", err)
		}
	}
	if run(sectionSim) && ctx.Err() == nil {
		rows, err := benchSims(ctx, o)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			fail("sims", err)
		}
	}
	if run(sectionAntispoof) && ctx.Err() == nil {
		rows, err := benchAntispoof(ctx, o)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			fail("source validation", err)
		}
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// cniPasses is how many rounds of --cni-pods pods each chain runs at each
// concurrency, the two chains' rounds alternating (cnibench.Run): the rows
// are the percentiles of all their calls pooled. One round of each, one
// chain after the other, moved the 1-worker ADD p50 ratio between 0.29
// and 0.45 over three runs of one build (BENCHMARKS.md, stop 39), as the
// scale rows did before they alternated (scaleRounds). The rounds keep
// their size: the reference chain's calls slow down as the node fills
// (with rounds of 50 pods its 8-worker ADD p50 was 63 ms, against 72 and
// 74 ms with 200 in the next two runs), so smaller rounds would compare
// against another baseline.
const cniPasses = 2

// benchCNI measures CNI ADD and DEL latency of terway and of the reference
// chain through cnibench, with this binary as the driver.
func benchCNI(ctx context.Context, o benchOptions) ([]benchRow, error) {
	plugins, err := refPlugins(o.cniPlugins)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.log, "bench: CNI ADD/DEL of %d pods, terway and %s, %d alternating rounds each\n",
		o.cniPods, strings.Join(cnibench.RefPlugins, "+"), cniPasses)
	rounds, err := cnibench.Run(ctx, cnibench.Options{
		BinDir: o.binDir, RefPlugins: plugins, Driver: []string{exe, "bench", "cni-driver"}, Pods: o.cniPods,
		Logf: func(format string, args ...any) { fmt.Fprintf(o.log, format+"\n", args...) },
	}, cniPasses)
	if err != nil {
		return nil, err
	}
	return cniRows(rounds), nil
}

// cniRows turns the rounds into rows: for each concurrency, terway's ADD
// and DEL percentiles beside the reference chain's.
func cniRows(rounds []*cnibench.Round) []benchRow {
	find := func(chain string, conc int) *cnibench.Round {
		for _, r := range rounds {
			if r.Chain == chain && r.Concurrency == conc {
				return r
			}
		}
		return nil
	}
	var concs []int
	for _, r := range rounds {
		if !slices.Contains(concs, r.Concurrency) {
			concs = append(concs, r.Concurrency)
		}
	}
	against := strings.Join(cnibench.RefPlugins, " + ")
	var rows []benchRow
	for _, conc := range concs {
		t, ref := find(cnibench.ChainTerway, conc), find(cnibench.ChainRef, conc)
		if t == nil || ref == nil {
			continue
		}
		workers := "1 worker"
		if conc != 1 {
			workers = fmt.Sprintf("%d workers", conc)
		}
		for _, c := range []struct {
			add  bool
			name string
		}{{true, "ADD"}, {false, "DEL"}} {
			for _, p := range []float64{50, 99} {
				rows = append(rows, newRow(fmt.Sprintf("CNI %s p%.0f, %s", c.name, p, workers), "ms",
					cnibench.Ms(t.Percentile(c.add, p)), cnibench.Ms(ref.Percentile(c.add, p)), against))
			}
		}
	}
	return rows
}

// refPlugins returns the folder of the reference plugins: the flag's, or
// what hack/cni-plugins.sh builds when terwayctl runs in the repository.
func refPlugins(dir string) (string, error) {
	if dir == "" {
		script := filepath.Join("hack", "cni-plugins.sh")
		if _, err := os.Stat(script); err != nil {
			return "", errors.New("--cni-plugins: required outside the repository (hack/cni-plugins.sh builds the reference plugins)")
		}
		cmd := exec.Command(script)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%s: %w", script, err)
		}
		dir = strings.TrimSpace(string(out))
	}
	return dir, cnibench.CheckRefPlugins(dir)
}
