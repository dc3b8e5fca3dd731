package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/terway-reconciler/terway/internal/cnibench"
	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/render"
)

// sectionScale is pod start as the cluster grows: CNI ADD on a node with
// many pods and policies against a small empty one, and render at
// cluster scale.
const sectionScale = "scale"

// scaleTimedPods are ADDed (then DELed) one at a time on each node.
const scaleTimedPods = 50

// scaleRounds is how many rounds each node runs, the two nodes' rounds
// alternating: the rows are the percentiles of all their calls pooled.
// One round of each moved the ADD p50 ratio between 1.10 and 1.87 from
// one run of the same build to the next (the shared machine's speed
// drifts between the two rounds); alternating rounds expose both nodes to
// the same drift, and 150 calls a node give a steadier median than 50.
const scaleRounds = 3

// The cluster-scale render: pods cluster-wide, of which renderLocal on this
// node, and policies.
const (
	renderClusterPods = 5000
	renderLocal       = 250
	renderPolicies    = 2000
	renderRuns        = 5
)

// benchScale measures CNI ADD and DEL with o.pods resident pods and
// o.policies policies (synth's shapes, over 20 namespaces with 250 pods on
// other nodes) against o.basePods resident pods and none, one worker, in
// scaleRounds alternating rounds of each, and the render of a 5,000-pod,
// 2,000-policy cluster.
func benchScale(ctx context.Context, o benchOptions) ([]benchRow, error) {
	rows := renderRows(o)
	plugins, err := refPlugins(o.cniPlugins)
	if err != nil {
		return rows, err
	}
	exe, err := os.Executable()
	if err != nil {
		return rows, err
	}
	round := func(resident, policies int) (*cnibench.Round, error) {
		fmt.Fprintf(o.log, "bench: CNI ADD/DEL of %d pods on a node with %d pods and %d policies\n", scaleTimedPods, resident, policies)
		b, err := cnibench.Setup(ctx, cnibench.Options{
			BinDir: o.binDir, RefPlugins: plugins, Driver: []string{exe, "bench", "cni-driver"}, Pods: scaleTimedPods,
			Resident: resident, Policies: policies,
			Logf: func(format string, args ...any) { fmt.Fprintf(o.log, format+"\n", args...) },
		})
		if err != nil {
			return nil, err
		}
		r, err := b.Round(ctx, cnibench.ChainTerway, 1)
		if r != nil {
			fmt.Fprintf(o.log, "bench: %s\n", r.Summary())
		}
		if cerr := b.Close(); err == nil {
			err = cerr
		}
		return r, err
	}
	var bases, larges []*cnibench.Round
	for i := range scaleRounds {
		base, err := round(o.basePods, 0)
		if err != nil {
			return rows, fmt.Errorf("%d pods, 0 policies: %w", o.basePods, err)
		}
		large, err := round(o.pods, o.policies)
		if err != nil {
			return rows, fmt.Errorf("%d pods, %d policies: %w", o.pods, o.policies, err)
		}
		b50, l50 := base.Percentile(true, 50), large.Percentile(true, 50)
		fmt.Fprintf(o.log, "bench: rounds %d of %d: CNI ADD p50 %.1f ms with %d pods + %d policies against %.1f ms with %d pods (%.2f)\n",
			i+1, scaleRounds, cnibench.Ms(l50), o.pods, o.policies, cnibench.Ms(b50), o.basePods, float64(l50)/float64(b50))
		bases, larges = append(bases, base), append(larges, large)
	}
	base, large := cnibench.Pool(bases), cnibench.Pool(larges)
	against := fmt.Sprintf("%d pods + 0 policies", o.basePods)
	for _, c := range []struct {
		add  bool
		name string
	}{{true, "ADD"}, {false, "DEL"}} {
		for _, p := range []float64{50, 99} {
			rows = append(rows, newRow(fmt.Sprintf("CNI %s p%.0f, %d pods + %d policies", c.name, p, o.pods, o.policies), "ms",
				cnibench.Ms(large.Percentile(c.add, p)), cnibench.Ms(base.Percentile(c.add, p)), against))
		}
	}
	rows = append(rows, newRow(fmt.Sprintf("  agent's part of an ADD, %d pods + %d policies", o.pods, o.policies), "ms",
		cnibench.Ms(large.AgentAdd), cnibench.Ms(base.AgentAdd), against))
	rows = append(rows, newRow(fmt.Sprintf("  from an ADD to its admission as a peer, %d pods + %d policies", o.pods, o.policies), "ms",
		cnibench.Ms(large.AgentAdmit), cnibench.Ms(base.AgentAdmit), against))
	return rows, nil
}

// renderRows renders a synthetic cluster from scratch, and through a
// render.Cache after one pod's ADD (its allocation added or removed since
// the last render), median of renderRuns each.
func renderRows(o benchOptions) []benchRow {
	in := synth.Cluster(synth.Params{LocalPods: renderLocal, RemotePods: renderClusterPods - renderLocal,
		Policies: renderPolicies, Namespaces: 20, Seed: 1})
	fmt.Fprintf(o.log, "bench: render %d pods x %d policies\n", renderClusterPods, renderPolicies)
	timeRender := func(render func(render.Inputs) error, inputs func(int) render.Inputs) float64 {
		var runs []float64
		for i := range renderRuns * 2 {
			x := inputs(i)
			start := time.Now()
			if err := render(x); err != nil {
				return math.NaN()
			}
			if i >= renderRuns { // the first ones warm up
				runs = append(runs, ms(time.Since(start)))
			}
		}
		return median(runs)
	}
	same := func(int) render.Inputs { return in }
	scratch := timeRender(func(x render.Inputs) error { _, err := render.Render(x); return err }, same)
	without := in
	without.Allocations = slices.Clone(in.Allocations[:len(in.Allocations)-1])
	k := render.NewCache()
	cached := timeRender(func(x render.Inputs) error { _, err := k.Render(x); return err }, func(i int) render.Inputs {
		if i%2 == 0 {
			return without // the last pod's DEL
		}
		return in // and its ADD again
	})
	if math.IsNaN(scratch) || math.IsNaN(cached) {
		return nil // a synthetic cluster that does not render: a bug the render tests catch
	}
	figure := fmt.Sprintf("render %d pods × %d policies (cluster-wide; %d on this node)", renderClusterPods, renderPolicies, renderLocal)
	return []benchRow{
		absoluteRow(figure, "ms", scratch),
		newRow("  through the render cache, after one pod's ADD or DEL", "ms", cached, scratch, "render from scratch"),
	}
}
