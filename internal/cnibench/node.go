package cnibench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/terway-reconciler/terway/internal/traffic"
)

// Namespaces are named "twb<pid>-<what>": the PID of the process that made
// them, so that a later run can tell a crashed run's leftovers (PID gone)
// from a run still going, and never removes the latter.
const netnsPrefix = "twb"

func netnsName(what string) string { return fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), what) }

func netnsPath(name string) string { return "/var/run/netns/" + name }

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns runs a command inside the named namespace and returns its output.
func inNetns(name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", name}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func addNetns(name string) error {
	if err := ipCmd("netns", "add", name); err != nil {
		return err
	}
	_, err := inNetns(name, "ip", "link", "set", "lo", "up")
	return err
}

// sweepLeftovers removes namespaces of earlier runs whose process is gone
// (killed before it could clean up). A namespace whose PID runs is left
// alone, even if the PID was reused: the safe mistake.
func sweepLeftovers() {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			_ = ipCmd("netns", "del", e.Name())
		}
	}
}

// rootSnapshot records what the benchmark must leave alone in the namespace
// it runs in, which is the machine's own: links, addresses, routes, rules,
// the nftables ruleset and the forwarding sysctls.
func rootSnapshot() (string, error) {
	cmds := [][]string{
		{"ip", "-o", "link"}, {"ip", "-o", "addr"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
	}
	if _, err := exec.LookPath("nft"); err == nil {
		cmds = append(cmds, []string{"nft", "list", "ruleset"})
	}
	var sb strings.Builder
	for _, args := range cmds {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		fmt.Fprintf(&sb, "$ %s\n%s", strings.Join(args, " "), out)
	}
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		v, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&sb, "$ cat %s\n%s", f, v)
	}
	return sb.String(), nil
}

// rootUnchanged compares the machine's namespace with the snapshot taken
// before; it returns a short fingerprint for the log, or the difference.
func rootUnchanged(before, when string) (string, error) {
	after, err := rootSnapshot()
	if err != nil {
		return "", err
	}
	if after != before {
		return "", fmt.Errorf("the machine's network namespace changed %s:\nbefore:\n%s\nafter:\n%s", when, before, after)
	}
	sum := sha256.Sum256([]byte(after))
	return fmt.Sprintf("machine's namespace byte-identical %s (%d bytes of link/addr/route/rule/nft/sysctl, sha256 %x)", when, len(after), sum[:8]), nil
}

// linkNames returns the sorted link names of `ip -o link` output.
func linkNames(out string) []string {
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// agentProc is terwayd running in the node namespace in standalone mode on
// a folder of inputs, as the e2e harness and the sim run it.
type agentProc struct {
	cmd    *exec.Cmd
	log    string
	netns  string // path
	health string
	exited chan struct{} // closed once the process is reaped
}

// healthAddr is on the node namespace's loopback, which is its own.
const healthAddr = "127.0.0.1:9482"

func startAgent(ctx context.Context, binDir, nodeNS, dir, resync string) (*agentProc, error) {
	a := &agentProc{log: filepath.Join(dir, "terwayd.log"), netns: netnsPath(nodeNS), health: healthAddr}
	logFile, err := os.Create(a.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	// Info logs, as the DaemonSet runs it: debug lines would be timed too.
	a.cmd = exec.Command("ip", "netns", "exec", nodeNS, filepath.Join(binDir, "terwayd"),
		"--node-name", nodeName, "--kube-inputs", filepath.Join(dir, "inputs"), "--state-dir", filepath.Join(dir, "state"),
		"--socket", socketPath(dir), "--resync-interval", resync, "--health-addr", a.health, "--log-level", "info")
	if os.Getenv(CPUProfileEnv) != "" {
		a.cmd.Args = append(a.cmd.Args, "--enable-pprof")
	}
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	// The agent dies with this process, also when it is killed.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start terwayd: %w", err)
	}
	a.exited = make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, err := a.get(ctx, "/readyz"); err == nil && code == http.StatusOK {
			return a, nil
		}
		select {
		case <-a.exited:
			return nil, fmt.Errorf("terwayd exited: %s", a.tail())
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("terwayd not ready within 30s: %s", a.tail())
		}
	}
}

func socketPath(dir string) string { return filepath.Join(dir, "run", "terway.sock") }

// stop ends the agent (SIGTERM, then SIGKILL after 10s) and waits for it.
func (a *agentProc) stop() {
	if a == nil {
		return
	}
	select {
	case <-a.exited:
		return
	default:
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
}

func (a *agentProc) tail() string {
	data, _ := os.ReadFile(a.log)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// get fetches a path of the agent's health endpoint from inside the node
// namespace.
func (a *agentProc) get(ctx context.Context, path string) (int, string, error) {
	return traffic.Get(ctx, a.netns, "http://"+a.health+path, 5*time.Second)
}

// profile fetches a CPU profile of the agent in the background into path;
// the channel closes when it is written (or failed, which is logged).
func (a *agentProc) profile(ctx context.Context, path string, logf func(string, ...any)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", a.health, profileSeconds)
		code, body, err := traffic.Get(ctx, a.netns, url, 2*profileSeconds*time.Second)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("HTTP %d", code)
		}
		if err == nil {
			err = os.WriteFile(path, []byte(body), 0o600)
		}
		if err != nil {
			logf("cnibench: CPU profile: %v", err)
			return
		}
		logf("cnibench: CPU profile of the agent in %s", path)
	}()
	return done
}

// agentMetrics are the agent's CNI latency sums and counts and its
// allocation gauge, from /metrics.
type agentMetrics map[string]float64

func (a *agentProc) metrics(ctx context.Context) (agentMetrics, error) {
	code, body, err := a.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("agent /metrics: status %d", code)
	}
	m := agentMetrics{}
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if name == "terway_allocations" || name == metricHeldBack || name == metricDeparting || histogramTotal(name) {
			if v, err := strconv.ParseFloat(value, 64); err == nil {
				m[name] = v
			}
		}
	}
	return m, nil
}

// The agent's gauges of the pods whose admission as policy peers, or whose
// address's withdrawal from the peer sets, is still to come
// (agent/admission.go, agent/withdrawal.go).
const (
	metricHeldBack  = "terway_pods_held_back"
	metricDeparting = "terway_pods_departing"
	// The histograms of their steps' phases.
	metricAdmissionSteps  = "terway_peer_admission_step_seconds"
	metricWithdrawalSteps = "terway_peer_withdrawal_step_seconds"
)

// waitSettled waits until the agent has admitted every pod set up as a
// policy peer and withdrawn every deleted one's address: the work an ADD
// or DEL leaves for after its answer. The gauges fall to 0 when the last
// step takes its pods, before it writes them: settled is the gauges at 0
// and no step observed (steps) for settleQuiet.
func (a *agentProc) waitSettled(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	var quietSince time.Time
	last := -1.0
	for {
		m, err := a.metrics(ctx)
		if err != nil {
			return err
		}
		held, departing, steps := m[metricHeldBack], m[metricDeparting], m.steps()
		switch {
		case held != 0 || departing != 0 || steps != last:
			quietSince, last = time.Now(), steps
		case time.Since(quietSince) >= settleQuiet:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent still has %.0f pods held back as peers and %.0f departing, or steps under way, after %s", held, departing, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// settleQuiet is how long no admission or withdrawal step may have been
// observed for the agent to be settled: longer than the gaps between a
// step's observations (its render, apply and read-back, tens of
// milliseconds each at 1,000 policies).
const settleQuiet = 300 * time.Millisecond

// steps counts the admission and withdrawal steps' observed phases.
func (m agentMetrics) steps() float64 {
	var n float64
	for name, v := range m {
		for _, h := range []string{metricAdmissionSteps, metricWithdrawalSteps} {
			if strings.HasPrefix(name, h+"_count") {
				n += v
			}
		}
	}
	return n
}

// benchHistograms are the agent's histograms whose means the bench reads
// (meanSince).
var benchHistograms = []string{
	"terway_cni_request_duration_seconds", "terway_cni_add_phase_seconds",
	"terway_peer_admission_seconds", metricAdmissionSteps, metricWithdrawalSteps,
}

// histogramTotal tells whether name is a labelled _sum or _count series
// of one of benchHistograms.
func histogramTotal(name string) bool {
	for _, h := range benchHistograms {
		if strings.HasPrefix(name, h+"_sum{") || strings.HasPrefix(name, h+"_count{") {
			return true
		}
	}
	return false
}

// meanSince is the mean of the histogram family's observations since
// before, over its series whose labels ("{...}") match; false when there
// were none.
func (m agentMetrics) meanSince(before agentMetrics, family string, match func(labels string) bool) (time.Duration, bool) {
	var sum, n float64
	for name, v := range m {
		if labels, ok := strings.CutPrefix(name, family+"_sum"); ok && match(labels) {
			sum += v - before[name]
		} else if labels, ok := strings.CutPrefix(name, family+"_count"); ok && match(labels) {
			n += v - before[name]
		}
	}
	if n == 0 {
		return 0, false
	}
	return time.Duration(sum / n * float64(time.Second)), true
}

func labelsAre(want string) func(string) bool { return func(l string) bool { return l == want } }

// mean is the agent-side mean latency of successful calls of the command
// since before.
func (m agentMetrics) mean(command string, before agentMetrics) time.Duration {
	d, _ := m.meanSince(before, "terway_cni_request_duration_seconds", labelsAre(`{command="`+command+`",result="ok"}`))
	return d
}

// admission is the mean time from an ADD to its pod's admission as a
// policy peer since before, whoever admitted it (terway_peer_admission_seconds).
func (m agentMetrics) admission(before agentMetrics) time.Duration {
	d, _ := m.meanSince(before, "terway_peer_admission_seconds", func(string) bool { return true })
	return d
}

// addPhases is the agent's mean time of each phase of an ADD since before
// (terway_cni_add_phase_seconds), as "lock 1ms, render 9ms, ...".
func (m agentMetrics) addPhases(before agentMetrics) string {
	var out []string
	for _, phase := range []string{"allocate", "lock", "render", "apply"} {
		if d, ok := m.meanSince(before, "terway_cni_add_phase_seconds", labelsAre(`{phase="`+phase+`"}`)); ok {
			out = append(out, fmt.Sprintf("%s %v", phase, d.Round(10*time.Microsecond)))
		}
	}
	return strings.Join(out, ", ")
}

// admissionSteps is the agent's mean time of each phase of an admission
// step since before (terway_peer_admission_step_seconds), and how many
// steps there were, as "3 steps: ahead 15ms, render 9ms, apply 20ms".
func (m agentMetrics) admissionSteps(before agentMetrics) string {
	n := m[`terway_peer_admission_step_seconds_count{phase="render"}`] - before[`terway_peer_admission_step_seconds_count{phase="render"}`]
	out := []string{}
	for _, phase := range []string{"ahead", "render", "apply", "check"} {
		if d, ok := m.meanSince(before, "terway_peer_admission_step_seconds", labelsAre(`{phase="`+phase+`"}`)); ok {
			out = append(out, fmt.Sprintf("%s %v", phase, d.Round(10*time.Microsecond)))
		}
	}
	return fmt.Sprintf("%.0f steps: %s", n, strings.Join(out, ", "))
}
