package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/sim"
)

// The sims' pods. Both sims hold the same six working pods and differ only
// in idle fillers, so that the large sim's figures against the baseline's
// are the cost of the pod count alone.
const (
	benchNS   = "bench"
	benchPort = 8080
	srvPod    = benchNS + "/srv"   // the policies' target, serves benchPort
	cliPod    = benchNS + "/cli"   // the client the last policy allows
	otherPod  = benchNS + "/other" // a client no policy allows
	// connRuns of connDuration each; the median is reported.
	connRuns     = 3
	connDuration = 2 * time.Second
	rateDuration = 3 * time.Second
	// probeTimeout bounds one reachability probe while waiting for a
	// policy to take effect; it is the resolution of the enforce figures.
	probeTimeout = 100 * time.Millisecond
	waitTimeout  = 2 * time.Minute
	// editToggles is how many times each way one policy is edited for the
	// policy edit figures.
	editToggles = 3
)

// bandwidthPods are the bandwidth targets: one per annotation family and
// size the issue names.
var bandwidthPods = []struct{ name, annotation, value, label string }{
	{"bw-1m", "k8s.aliyun.com/ingress-bandwidth", "1m", "1 MiB/s"},
	{"bw-10m", "k8s.aliyun.com/ingress-bandwidth", "10m", "10 MiB/s"},
	{"bw-100m", "kubernetes.io/ingress-bandwidth", "100M", "100 Mbit/s"},
}

// simFigures is what one sim measured; a figure not measured is NaN.
type simFigures struct {
	pods               int
	converge           float64 // seconds
	resyncMs, writes   float64 // mean per converged full resync
	rssMiB             float64
	rates              map[string][2]float64 // pod -> measured, configured bits/s
	conn0, connN       float64               // connections per second
	enforce1, enforceN float64               // ms
	// edit0 and editN: one policy edited, enforced, among 0 and among
	// the policies (ms, median of editToggles edits).
	edit0, editN       float64
	resyncMsN, writesN float64 // with the policies
	rssMiBN            float64
}

func newSimFigures(pods int) *simFigures {
	n := math.NaN()
	return &simFigures{pods: pods, converge: n, resyncMs: n, writes: n, rssMiB: n, rates: map[string][2]float64{},
		conn0: n, connN: n, enforce1: n, enforceN: n, edit0: n, editN: n, resyncMsN: n, writesN: n, rssMiBN: n}
}

// benchSims runs the baseline sim (bandwidth) and then the large one
// (policy), each torn down before the next starts.
func benchSims(ctx context.Context, o benchOptions) ([]benchRow, error) {
	base, errBase := runSim(ctx, o, "base", o.basePods, func(st *sim.State, f *simFigures) error {
		return measureBandwidth(ctx, o, st, f)
	})
	var errLarge error
	large := newSimFigures(o.pods)
	if ctx.Err() == nil {
		large, errLarge = runSim(ctx, o, "large", o.pods, func(st *sim.State, f *simFigures) error {
			return measurePolicies(ctx, o, st, f)
		})
	}
	return simRows(base, large, o.policies), errors.Join(errBase, errLarge)
}

// runSim starts a sim of pods pods, measures what every sim measures, then
// extra, and removes the sim, also on error or interrupt.
func runSim(ctx context.Context, o benchOptions, role string, pods int, extra func(*sim.State, *simFigures) error) (*simFigures, error) {
	f := newSimFigures(pods)
	name := fmt.Sprintf("bench%d-%s", os.Getpid(), role)
	cluster, err := os.MkdirTemp("", "terway-bench-cluster-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(cluster)
	if err := writeBenchCluster(cluster, pods); err != nil {
		return f, err
	}
	defer func() {
		if err := sim.Down(name); err != nil {
			fmt.Fprintf(os.Stderr, "terwayctl bench: sim %s down: %v\n", name, err)
		}
	}()
	fmt.Fprintf(o.log, "bench: sim %s: %d pods\n", name, pods)
	start := time.Now()
	st, err := sim.Up(ctx, sim.Options{Cluster: cluster, Name: name, BinDir: o.binDir, Resync: o.resync, Log: o.log})
	if err != nil {
		return f, fmt.Errorf("sim %s up: %w", name, err)
	}
	if err := waitConverged(ctx, st); err != nil {
		return f, fmt.Errorf("sim %s: %w", name, err)
	}
	f.converge = time.Since(start).Seconds()
	fmt.Fprintf(o.log, "bench: sim %s converged in %.2fs\n", name, f.converge)
	if f.resyncMs, f.writes, err = measureResync(ctx, st, o.resync); err != nil {
		return f, fmt.Errorf("sim %s: resync: %w", name, err)
	}
	if f.rssMiB, err = agentRSS(st.AgentPID); err != nil {
		return f, fmt.Errorf("sim %s: %w", name, err)
	}
	fmt.Fprintf(o.log, "bench: sim %s: resync %.1f ms, %.1f writes; agent RSS %.1f MiB\n", name, f.resyncMs, f.writes, f.rssMiB)
	if read, byGen, err := nftFullChecks(ctx, st); err == nil {
		// Whether the resyncs above read the nftables table or trusted
		// its generation (terway_nft_full_checks_total), since the start.
		fmt.Fprintf(o.log, "bench: sim %s: full syncs' nftables checks so far: %.0f read the table, %.0f by its generation\n", name, read, byGen)
	}
	if err := extra(st, f); err != nil {
		return f, fmt.Errorf("sim %s: %w", name, err)
	}
	return f, nil
}

// writeBenchCluster writes the cluster folder: the default node (the sim
// adds it), one namespace, six working pods and idle fillers without
// containerPorts (no server process: the pod count is what is measured).
func writeBenchCluster(dir string, pods int) error {
	pod := func(name, labels, annotations string, serve bool) string {
		ports := ""
		if serve {
			ports = fmt.Sprintf(", ports: [{name: echo, containerPort: %d}]", benchPort)
		}
		return fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: %s, name: %s, labels: {%s}, annotations: {%s}}\n"+
			"spec:\n  containers: [{name: c, image: i%s}]\n", benchNS, name, labels, annotations, ports)
	}
	docs := []string{
		fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {ns: %s}}\n", benchNS, benchNS),
		pod("srv", "app: srv", "", true),
		pod("cli", "app: cli", "", false),
		pod("other", "app: other", "", false),
	}
	for _, b := range bandwidthPods {
		docs = append(docs, pod(b.name, "app: bw", fmt.Sprintf("%s: %q", b.annotation, b.value), true))
	}
	for i := len(docs) - 1; i < pods; i++ {
		docs = append(docs, pod(fmt.Sprintf("f-%04d", i), "app: filler", "", false))
	}
	return os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(strings.Join(docs, "---\n")), 0o600)
}

// waitConverged waits until no pod waits for its admission as a policy
// peer (agent/admission.go: the plan holds such pods back, as the agent
// does until it admits them), no deleted pod's address waits for its
// withdrawal (agent/withdrawal.go: the plan keeps those, as the agent does
// until it withdraws them), and then a full plan of the agent is empty.
// The gauges come first: the agent computes at most one plan a second
// (planView), and a plan asked for while pods were still held made the
// next look a second later, so that the figure moved in steps of a second
// with when the admission ran.
func waitConverged(ctx context.Context, st *sim.State) error {
	deadline := time.Now().Add(waitTimeout)
	for {
		path := "/metrics"
		code, body, err := st.AgentGet(ctx, path)
		if err == nil && code == 200 {
			if strings.Contains("\n"+body, "\nterway_pods_held_back 0\n") &&
				strings.Contains("\n"+body, "\nterway_pods_departing 0\n") {
				path = "/plan"
				code, body, err = st.AgentGet(ctx, path)
				if err == nil && code == 200 && body == "" {
					return nil
				}
			} else {
				body = "pods still held back as peers, or deleted pods' addresses not withdrawn yet"
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent not converged after %s: %s answers %d, %v:\n%s", waitTimeout, path, code, err, body)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// measureResync averages the agent's own figures over the full resyncs of
// an idle window: nothing changes the inputs, so every reconcile in it is
// a timer-driven full resync of a converged node.
func measureResync(ctx context.Context, st *sim.State, interval time.Duration) (ms, writes float64, err error) {
	// Let a resync that began before the node was idle finish first.
	if err := sleepCtx(ctx, interval+interval/2); err != nil {
		return 0, 0, err
	}
	before, err := agentCounters(ctx, st)
	if err != nil {
		return 0, 0, err
	}
	if err := sleepCtx(ctx, max(5*interval, 4*time.Second)); err != nil {
		return 0, 0, err
	}
	after, err := agentCounters(ctx, st)
	if err != nil {
		return 0, 0, err
	}
	n := after["terway_reconcile_duration_seconds_count"] - before["terway_reconcile_duration_seconds_count"]
	if n < 2 {
		return 0, 0, fmt.Errorf("%.0f resyncs in the window, want at least 2", n)
	}
	sum := after["terway_reconcile_duration_seconds_sum"] - before["terway_reconcile_duration_seconds_sum"]
	w := after["terway_kernel_writes_total"] - before["terway_kernel_writes_total"]
	return 1000 * sum / n, w / n, nil
}

// agentCounters reads the agent's /metrics, by series as printed (the
// name, with its labels if any).
func agentCounters(ctx context.Context, st *sim.State) (map[string]float64, error) {
	code, body, err := st.AgentGet(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("agent /metrics: status %d", code)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	if _, ok := m["terway_kernel_writes_total"]; !ok {
		return nil, errors.New("the agent exports no terway_kernel_writes_total: rebuild terwayd (make build)")
	}
	return m, nil
}

// nftFullChecks reads terway_nft_full_checks_total from the sim's agent:
// the full syncs' checks that read the nftables table, and those that
// concluded from its generation.
func nftFullChecks(ctx context.Context, st *sim.State) (read, byGen float64, err error) {
	m, err := agentCounters(ctx, st)
	if err != nil {
		return 0, 0, err
	}
	read, okRead := m[`terway_nft_full_checks_total{how="read"}`]
	byGen, okGen := m[`terway_nft_full_checks_total{how="generation"}`]
	if !okRead || !okGen {
		return 0, 0, errors.New("the agent exports no terway_nft_full_checks_total: rebuild terwayd (make build)")
	}
	return read, byGen, nil
}

// agentRSS is the resident set of the sim's terwayd, in MiB.
func agentRSS(pid int) (float64, error) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || strings.TrimSpace(string(comm)) != "terwayd" {
		return 0, fmt.Errorf("process %d is not terwayd (%q, %v)", pid, strings.TrimSpace(string(comm)), err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kib / 1024, nil
		}
	}
	return 0, fmt.Errorf("process %d: no VmRSS", pid)
}

// measureBandwidth sends from the client to each bandwidth target.
func measureBandwidth(ctx context.Context, o benchOptions, st *sim.State, f *simFigures) error {
	for _, b := range bandwidthPods {
		if err := ctx.Err(); err != nil {
			return err
		}
		r, err := st.MeasureRate(cliPod, benchNS+"/"+b.name, benchPort, rateDuration)
		if err != nil {
			return err
		}
		if r.ExpectedBits == 0 {
			return fmt.Errorf("pod %s: no limit found in its annotations", b.name)
		}
		f.rates[b.name] = [2]float64{r.MeasuredBits, float64(r.ExpectedBits)}
		fmt.Fprintf(o.log, "bench: %s: %.2f Mbit/s measured, %.2f configured\n", b.name, r.MeasuredBits/1e6, float64(r.ExpectedBits)/1e6)
	}
	return nil
}

// measurePolicies measures new connections from the client to the server
// without policies, then with o.policies policies selecting the server: a
// deny-all (its enforcement time is the baseline), policies each allowing a
// distinct /32 on a distinct port, and last the one allowing the client.
// The folder source reads the whole inputs folder after each change, so
// the client is reachable again only once the agent enforces a snapshot
// holding every policy.
func measurePolicies(ctx context.Context, o benchOptions, st *sim.State, f *simFigures) error {
	srv, cli := st.Pod(srvPod), st.Pod(cliPod)
	if srv == nil || cli == nil {
		return fmt.Errorf("pods %s and %s: not in the sim", srvPod, cliPod)
	}
	addr := net.JoinHostPort(srv.IP, strconv.Itoa(benchPort))
	var err error
	if f.conn0, err = connRate(ctx, cli.Netns, addr); err != nil {
		return fmt.Errorf("0 policies: %w", err)
	}
	fmt.Fprintf(o.log, "bench: 0 policies: %.0f connections/s\n", f.conn0)

	dir, err := os.MkdirTemp("", "terway-bench-policies-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	deny, many, allow := filepath.Join(dir, "deny.yaml"), filepath.Join(dir, "many.yaml"), filepath.Join(dir, "allow.yaml")
	moved := filepath.Join(dir, "moved.yaml")
	if err := writePolicies(deny, many, allow, moved, o.policies); err != nil {
		return err
	}

	start := time.Now()
	if err := sim.Apply(ctx, st.Name, io.Discard, deny); err != nil {
		return err
	}
	seen, err := waitReach(ctx, st, cliPod, false)
	if err != nil {
		return fmt.Errorf("deny-all: %w", err)
	}
	f.enforce1 = ms(seen.Sub(start))
	start = time.Now()
	if err := sim.Apply(ctx, st.Name, io.Discard, many); err != nil {
		return err
	}
	if err := sim.Apply(ctx, st.Name, io.Discard, allow); err != nil {
		return err
	}
	if seen, err = waitReach(ctx, st, cliPod, true); err != nil {
		return fmt.Errorf("%d policies: %w", o.policies, err)
	}
	f.enforceN = ms(seen.Sub(start))
	fmt.Fprintf(o.log, "bench: enforced 1 policy in %.0f ms, %d in %.0f ms\n", f.enforce1, o.policies, f.enforceN)
	// The policies must still isolate the server, or the figure below
	// would measure an open path.
	if ok, err := st.Probe(otherPod, srvPod, benchPort, "tcp", 2*probeTimeout); err != nil || ok {
		return fmt.Errorf("%s reaches %s through %d policies that do not allow it (%v)", otherPod, srvPod, o.policies, err)
	}
	if err := waitConverged(ctx, st); err != nil {
		return err
	}
	if f.connN, err = connRate(ctx, cli.Netns, addr); err != nil {
		return fmt.Errorf("%d policies: %w", o.policies, err)
	}
	fmt.Fprintf(o.log, "bench: %d policies: %.0f connections/s\n", o.policies, f.connN)
	if f.resyncMsN, f.writesN, err = measureResync(ctx, st, o.resync); err != nil {
		return fmt.Errorf("resync with %d policies: %w", o.policies, err)
	}
	if f.rssMiBN, err = agentRSS(st.AgentPID); err != nil {
		return err
	}
	// Last, since edits are followed by slower connections (see
	// BENCHMARKS.md): one policy edited among the policies, then among
	// none other than the deny-all, in the same sim.
	if f.editN, err = measureEdits(ctx, st, allow, moved); err != nil {
		return fmt.Errorf("edit among %d policies: %w", o.policies, err)
	}
	if err := sim.Delete(ctx, st.Name, io.Discard, many); err != nil {
		return err
	}
	if f.edit0, err = measureEdits(ctx, st, allow, moved); err != nil {
		return fmt.Errorf("edit among 0 policies: %w", err)
	}
	fmt.Fprintf(o.log, "bench: one policy edit enforced in %.0f ms among 0 policies, %.0f ms among %d\n", f.edit0, f.editN, o.policies)
	if after, err := connRate(ctx, cli.Netns, addr); err == nil {
		fmt.Fprintf(o.log, "bench: after the edits, 0 policies: %.0f connections/s\n", after)
	}
	return nil
}

// measureEdits edits the allow policy (reachable) to the moved one and
// back editToggles times each way, and returns the median time from an
// edit to the first probe that sees it in force. It ends as it began.
func measureEdits(ctx context.Context, st *sim.State, allow, moved string) (float64, error) {
	var times []float64
	for range editToggles {
		for _, e := range []struct {
			file  string
			reach bool
		}{{moved, false}, {allow, true}} {
			start := time.Now()
			if err := sim.Apply(ctx, st.Name, io.Discard, e.file); err != nil {
				return 0, err
			}
			seen, err := waitReach(ctx, st, cliPod, e.reach)
			if err != nil {
				return 0, err
			}
			times = append(times, ms(seen.Sub(start)))
		}
	}
	return median(times), nil
}

// writePolicies writes the deny-all, n-2 distinct policies and the one
// allowing the client, all selecting the server: n policies in all; and
// moved, the allow policy edited to allow another port.
func writePolicies(deny, many, allow, moved string, n int) error {
	head := func(name string) string {
		return fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: %s, name: %s}\n"+
			"spec:\n  podSelector: {matchLabels: {app: srv}}\n  policyTypes: [Ingress]\n", benchNS, name)
	}
	if err := os.WriteFile(deny, []byte(head("deny-all")), 0o600); err != nil {
		return err
	}
	var docs []string
	for i := range n - 2 {
		// Addresses from the benchmarking block, outside the pods' CIDR;
		// no packet is ever sent to them.
		docs = append(docs, head(fmt.Sprintf("p-%05d", i))+fmt.Sprintf(
			"  ingress: [{from: [{ipBlock: {cidr: 198.19.%d.%d/32}}], ports: [{protocol: TCP, port: %d}]}]\n",
			16+i/256, i%256, 10000+i%50000))
	}
	if err := os.WriteFile(many, []byte(strings.Join(docs, "---\n")), 0o600); err != nil {
		return err
	}
	allowPort := func(port int) []byte {
		return []byte(head("allow-cli") + fmt.Sprintf(
			"  ingress: [{from: [{podSelector: {matchLabels: {app: cli}}}], ports: [{protocol: TCP, port: %d}]}]\n", port))
	}
	if err := os.WriteFile(moved, allowPort(benchPort+1), 0o600); err != nil {
		return err
	}
	return os.WriteFile(allow, allowPort(benchPort), 0o600)
}

// waitReach probes from the pod to the server until reachability is want
// and returns when the first probe that saw it began: the policy was in
// force then, and the probe's own time is not the agent's. Unreachable
// must be seen twice in a row: one slow echo on a loaded machine is not a
// policy.
func waitReach(ctx context.Context, st *sim.State, from string, want bool) (time.Time, error) {
	deadline := time.Now().Add(waitTimeout)
	var firstMiss time.Time
	for time.Now().Before(deadline) {
		t := time.Now()
		ok, err := st.Probe(from, srvPod, benchPort, "tcp", probeTimeout)
		if err != nil {
			return t, err
		}
		switch {
		case ok && want:
			return t, nil
		case !ok && !want:
			if firstMiss.IsZero() {
				firstMiss = t
			} else {
				return firstMiss, nil
			}
		default:
			firstMiss = time.Time{}
		}
		if err := ctx.Err(); err != nil {
			return t, err
		}
	}
	return time.Now(), fmt.Errorf("%s -> %s still reachable=%v after %s", from, srvPod, !want, waitTimeout)
}

// connRate is the median of connRuns runs of traffic.ConnRate.
func connRate(ctx context.Context, netns, addr string) (float64, error) {
	var runs []float64
	for range connRuns {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		r, err := traffic.ConnRate(netns, addr, connDuration)
		if err != nil {
			return 0, err
		}
		runs = append(runs, r)
	}
	return median(runs), nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// simRows lays the sims' figures out in the order; a figure either
// sim did not measure is left out.
func simRows(base, large *simFigures, policies int) []benchRow {
	var rows []benchRow
	add := func(figure, unit string, terway, baseline float64, against string) {
		if !math.IsNaN(terway) && !math.IsNaN(baseline) {
			rows = append(rows, newRow(figure, unit, terway, baseline, against))
		}
	}
	basePods := fmt.Sprintf("%d pods", base.pods)
	add(fmt.Sprintf("time to converge %d pods", large.pods), "s", large.converge, base.converge, basePods)
	add("  per pod", "ms", 1000*large.converge/float64(large.pods), 1000*base.converge/float64(base.pods), basePods)
	add(fmt.Sprintf("converged full resync, %d pods", large.pods), "ms", large.resyncMs, base.resyncMs, basePods)
	add("  kernel writes per resync", "", large.writes, base.writes, basePods)
	withPolicies := fmt.Sprintf("%d pods, 0 policies", large.pods)
	add(fmt.Sprintf("converged full resync, %d pods + %d policies", large.pods, policies), "ms", large.resyncMsN, large.resyncMs, withPolicies)
	add("  kernel writes per resync", "", large.writesN, large.writes, withPolicies)
	add(fmt.Sprintf("TCP connections/s between 2 pods, %d policies", policies), "/s", large.connN, large.conn0, "0 policies")
	add(fmt.Sprintf("time to enforce %d policies", policies), "ms", large.enforceN, large.enforce1, "1 policy (deny-all)")
	add(fmt.Sprintf("time to enforce 1 policy edit, %d policies", policies), "ms", large.editN, large.edit0, "0 policies")
	for _, b := range bandwidthPods {
		if r, ok := base.rates[b.name]; ok {
			add(fmt.Sprintf("bandwidth, ingress %s (%s)", b.label, b.value), "Mbit/s", r[0]/1e6, r[1]/1e6, "configured")
		}
	}
	add(fmt.Sprintf("agent RSS, %d pods", large.pods), "MiB", large.rssMiB, base.rssMiB, basePods)
	add(fmt.Sprintf("agent RSS, %d pods + %d policies", large.pods, policies), "MiB", large.rssMiBN, large.rssMiB, withPolicies)
	return rows
}
