// Package cnibench measures pod setup: CNI ADD and DEL latency of terway
// against the reference chain ptp + host-local + bandwidth from
// containernetworking/plugins, both driven through libcni as containerd
// drives a plugin, with the same pods, the same share of shaped pods and the
// same concurrency, in one run. BenchmarkCNIAddDel and `terwayctl bench`
// both run it.
//
// Both chains are driven from inside a node namespace the benchmark makes,
// never from the machine's own: ptp makes its host veth, address and routes
// in the namespace it is executed in, and a plugin inherits the namespace
// of the process that runs it. So the benchmark re-executes a program under
// `ip netns exec NODE` as a driver (Options.Driver; DriverEnv names the job
// file); the driver refuses to start unless it is in the node namespace,
// runs the timed calls and writes the latencies back. The machine's links,
// addresses, routes, rules, forwarding sysctls and nftables ruleset are
// compared byte for byte before and after every round.
package cnibench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/terway-reconciler/terway/render"
)

// The chains a round can drive.
const (
	ChainTerway = "terway"
	ChainRef    = "ref" // ptp + host-local + bandwidth
)

// CPUProfileEnv, when set to a path, makes the agent serve pprof and each
// terway round write a CPU profile of the agent's first profileSeconds to
// path.<round>: for finding where an ADD's time goes.
const CPUProfileEnv = "TERWAY_BENCH_CPUPROFILE"

const profileSeconds = 8

// Chains lists them in the order the comparison runs them.
var Chains = []string{ChainTerway, ChainRef}

const (
	defaultPods = 200
	// Every shapedEvery-th pod gets an ingress and an egress limit, so
	// that both chains also pay for shaping some pods, as on a real node.
	shapedEvery = 4
	shapedRate  = "10M"
	nodeName    = "node-1"
	nodeIP      = "198.19.0.1"
	podCIDR     = "198.18.0.0/22"
	refSubnet   = "198.18.8.0/22" // apart from the terway node's podCIDR
	// agentResync is the DaemonSet's default (agent.DefaultResyncInterval),
	// so that no more full resyncs fall into the timed calls than in
	// production. Not imported: terwayctl needs the binary, not the package.
	agentResync = "30s"
)

// RefPlugins are the reference chain's plugins.
var RefPlugins = []string{"ptp", "host-local", "bandwidth"}

// Options for Setup.
type Options struct {
	// BinDir holds terwayd and the terway CNI plugin.
	BinDir string
	// RefPlugins is the folder with ptp, host-local and bandwidth
	// (hack/cni-plugins.sh builds them).
	RefPlugins string
	// Driver is the command that, started with DriverEnv in its
	// environment, calls DriverMain: the test binary itself, or
	// `terwayctl bench cni-driver`.
	Driver []string
	// Pods per round (default 200).
	Pods int
	// WorkDir holds the agent's files and the rounds' jobs; a temporary
	// folder, removed by Close, when empty.
	WorkDir string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// Resident pods are set up through CNI before the rounds, untimed,
	// and stay: the node the timed pods join already holds them.
	Resident int
	// Policies puts that many NetworkPolicies (internal/synth's shapes:
	// selectors over app and tier labels, namespaces by label, ipBlocks,
	// named ports, egress) in the inputs, over synthNamespaces namespaces
	// with synthRemote pods on other nodes as peers; the resident and
	// timed pods then spread over those namespaces with synth's labels.
	Policies int
}

// Bench is a node namespace running terwayd with the benchmark's pods in
// its inputs, and a namespace per pod, ready for rounds.
type Bench struct {
	o         Options
	root      string // the machine's namespace before anything was made
	rootNS    uint64
	ownDir    bool
	nodeNS    string
	podNS     []string // the timed pods' namespaces (paths)
	timed     []benchPod
	resident  []benchPod
	agent     *agentProc
	nodeLinks []string
	refData   string
	round     int
}

// CheckRefPlugins reports whether dir holds the reference chain.
func CheckRefPlugins(dir string) error {
	for _, p := range RefPlugins {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			return fmt.Errorf("reference plugin %s: %w (run hack/cni-plugins.sh)", p, err)
		}
	}
	return nil
}

// Setup makes the node and the pods' namespaces and starts the agent. On
// failure it removes what it made.
func Setup(ctx context.Context, o Options) (b *Bench, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the CNI benchmark needs root to make network namespaces")
	}
	if len(o.Driver) == 0 {
		return nil, errors.New("no driver command")
	}
	if o.Pods == 0 {
		o.Pods = defaultPods
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := CheckRefPlugins(o.RefPlugins); err != nil {
		return nil, err
	}
	for _, bin := range []string{"terwayd", "terway"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, bin)); err != nil {
			return nil, fmt.Errorf("binary %s: %w", bin, err)
		}
	}
	sweepLeftovers()
	b = &Bench{o: o}
	if b.root, err = rootSnapshot(); err != nil {
		return nil, err
	}
	if b.rootNS, err = inode("/proc/self/ns/net"); err != nil {
		return nil, err
	}
	if b.o.WorkDir == "" {
		if b.o.WorkDir, err = os.MkdirTemp("", "terway-cnibench-"); err != nil {
			return nil, err
		}
		b.ownDir = true
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
			b = nil
		}
	}()

	b.planPods()
	b.nodeNS = netnsName("node")
	if err := addNetns(b.nodeNS); err != nil {
		return b, err
	}
	if _, err := inNetns(b.nodeNS, "ip", "addr", "add", nodeIP+"/32", "dev", "lo"); err != nil {
		return b, err
	}
	if err := b.writeInputs(); err != nil {
		return b, err
	}
	start := time.Now()
	if b.agent, err = startAgent(ctx, o.BinDir, b.nodeNS, b.o.WorkDir, agentResync); err != nil {
		return b, err
	}
	o.Logf("cnibench: terwayd ready in %s with %d pods (%d resident) and %d policies in its inputs",
		time.Since(start).Round(time.Millisecond), o.Pods+o.Resident, o.Resident, o.Policies)
	// The pods' namespaces are made once, untimed, and reused: DEL leaves
	// them as ADD found them.
	for i := range b.timed {
		name := netnsName("p" + strconv.Itoa(i))
		if err := addNetns(name); err != nil {
			return b, err
		}
		b.timed[i].netns = netnsPath(name)
		b.podNS = append(b.podNS, netnsPath(name))
	}
	for i := range b.resident {
		name := netnsName("r" + strconv.Itoa(i))
		if err := addNetns(name); err != nil {
			return b, err
		}
		b.resident[i].netns = netnsPath(name)
	}
	if err := b.setUpResident(ctx); err != nil {
		return b, err
	}
	links, err := inNetns(b.nodeNS, "ip", "-o", "link")
	if err != nil {
		return b, err
	}
	b.nodeLinks = linkNames(links)
	b.refData = filepath.Join(b.o.WorkDir, "ref-ipam")
	return b, nil
}

// Close stops the agent, removes every namespace and the work folder, and
// checks that the machine's namespace is as Setup found it.
func (b *Bench) Close() error {
	if b == nil {
		return nil
	}
	var errs []error
	b.agent.stop()
	for _, p := range slices.Concat(b.timed, b.resident) {
		if p.netns == "" {
			continue
		}
		if err := ipCmd("netns", "del", filepath.Base(p.netns)); err != nil {
			errs = append(errs, err)
		}
	}
	b.podNS, b.timed, b.resident = nil, nil, nil
	if b.nodeNS != "" {
		if err := ipCmd("netns", "del", b.nodeNS); err != nil {
			errs = append(errs, err)
		}
		b.nodeNS = ""
	}
	if b.ownDir {
		errs = append(errs, os.RemoveAll(b.o.WorkDir))
	}
	if b.root != "" {
		msg, err := rootUnchanged(b.root, "after the benchmark and its cleanup")
		errs = append(errs, err)
		if err == nil {
			b.o.Logf("cnibench: %s", msg)
		}
	}
	return errors.Join(errs...)
}

// Round is one chain's ADD of every pod then DEL of every pod.
type Round struct {
	Chain       string          `json:"chain"`
	Concurrency int             `json:"concurrency"`
	Add         []time.Duration `json:"add"`
	Del         []time.Duration `json:"del"`
	AddWall     time.Duration   `json:"addWall"`
	DelWall     time.Duration   `json:"delWall"`
	// AgentAdd and AgentDel are terway's mean latency at the agent: the
	// rest of a call is exec of the plugin and libcni.
	AgentAdd time.Duration `json:"agentAdd,omitempty"`
	AgentDel time.Duration `json:"agentDel,omitempty"`
	// AgentAdmit is the mean time from an ADD to its pod's admission as
	// its local peers' policy peer (agent/admission.go).
	AgentAdmit time.Duration `json:"agentAdmit,omitempty"`
	// AddCPU is the CPU the ADD phase used, machine-wide and by part
	// (summed over pooled rounds).
	AddCPU CPUAccount `json:"addCPU"`
	// What ADD left on the node, to show the work was done.
	NewLinks, IFBs, TBFs, Shaped int
	// Root says the machine's namespace was left byte-identical.
	Root string `json:"root"`
	// DriverLog is what the driver and the plugins wrote on stderr.
	DriverLog string `json:"driverLog,omitempty"`
}

// Percentile is the nearest-rank percentile of the ADD (add) or DEL
// latencies.
func (r *Round) Percentile(add bool, p float64) time.Duration {
	if add {
		return Percentile(r.Add, p)
	}
	return Percentile(r.Del, p)
}

// Summary is the round's log lines.
func (r *Round) Summary() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s conc=%d: after ADD the node had %d new links (%d ifb) and %d tbf qdiscs; %d pods shaped\n",
		r.Chain, r.Concurrency, r.NewLinks, r.IFBs, r.TBFs, r.Shaped)
	if r.Chain == ChainTerway {
		fmt.Fprintf(&sb, "agent-side mean: ADD %.2f ms, DEL %.2f ms (the rest of a call is exec and libcni); from ADD to admission as a peer %.2f ms\n",
			Ms(r.AgentAdd), Ms(r.AgentDel), Ms(r.AgentAdmit))
	}
	if n := time.Duration(len(r.Add)); n > 0 {
		c := r.AddCPU
		fmt.Fprintf(&sb, "CPU per ADD: %.2f ms busy machine-wide: agent %.2f, plugins %.2f, driver %.2f, the rest %.2f\n",
			Ms(c.Busy/n), Ms(c.Agent/n), Ms(c.Plugins/n), Ms(c.Driver/n), Ms((c.Busy-c.Agent-c.Plugins-c.Driver)/n))
	}
	sb.WriteString(r.Root)
	if r.DriverLog != "" {
		sb.WriteString("\ndriver stderr:\n" + r.DriverLog)
	}
	return sb.String()
}

// Round runs one round of chain with conc workers. It fails unless every
// call succeeded, every pod got its own address, the shaped pods were
// shaped, DEL left the node as the round found it and the machine's
// namespace is unchanged.
func (b *Bench) Round(ctx context.Context, chain string, conc int) (*Round, error) {
	b.round++
	dir := filepath.Join(b.o.WorkDir, fmt.Sprintf("round-%d", b.round))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	j := &job{
		NodeNetns: netnsPath(b.nodeNS), Forbidden: b.rootNS, CacheDir: filepath.Join(dir, "cni-cache"),
		Concurrency: conc, Out: filepath.Join(dir, "result.json"), AgentPID: b.agent.cmd.Process.Pid,
	}
	shaped := false // as runtimeConfig (ref) rather than annotations (terway)
	switch chain {
	case ChainTerway:
		j.PluginDirs = []string{b.o.BinDir}
		j.Conflist = terwayConflist(b.o.WorkDir)
	case ChainRef:
		j.PluginDirs = []string{b.o.RefPlugins}
		j.Conflist = fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ref","plugins":[`+
			`{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},`+
			`{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`, refSubnet, b.refData)
		shaped = true
	default:
		return nil, fmt.Errorf("chain %q: want %s or %s", chain, ChainTerway, ChainRef)
	}
	// The same rate as the annotations, with containerd's burst.
	rate, err := render.ParseKubeBandwidth(shapedRate)
	if err != nil {
		return nil, err
	}
	bw := map[string]any{"ingressRate": rate, "ingressBurst": math.MaxUint32, "egressRate": rate, "egressBurst": math.MaxUint32}
	rt := func(i int, label string) *libcni.RuntimeConf {
		p := b.timed[i]
		r := runtimeConf(p, containerID(fmt.Sprintf("%s/%d/%s", chain, b.round, label)))
		if shaped && p.shaped {
			r.CapabilityArgs = map[string]any{"bandwidth": bw}
		}
		return r
	}
	j.Warmup = rt(0, "warmup")
	for i := range b.timed {
		j.Pods = append(j.Pods, rt(i, strconv.Itoa(i)))
	}

	// The resident pods' ADDs leave their admission as policy peers
	// to come, and an earlier round's DELs their addresses' withdrawal
	// (with 1,000 policies, the admission of 250 pods set up four at a
	// time ends seconds after their last ADD, and timed ADDs that ran
	// into it were slower by up to half): this round times its own
	// calls, not that work. A reference round waits too: it shares
	// the node's CPU with the agent, and the work terway's last round
	// left would slow the reference chain.
	settling := time.Now()
	if err := b.agent.waitSettled(ctx, 2*time.Minute); err != nil {
		return nil, err
	}
	b.o.Logf("cnibench: agent settled in %s", time.Since(settling).Round(time.Millisecond))
	before, err := b.agent.metrics(ctx)
	if err != nil {
		return nil, err
	}
	if path := os.Getenv(CPUProfileEnv); path != "" && chain == ChainTerway {
		profiled := b.agent.profile(ctx, path+"."+strconv.Itoa(b.round), b.o.Logf)
		defer func() { <-profiled }()
	}
	res, stderr, err := b.runDriver(ctx, j, dir)
	if err != nil {
		return nil, err
	}
	r := &Round{Chain: chain, Concurrency: conc, Add: res.Add, Del: res.Del, AddWall: res.AddWall, DelWall: res.DelWall,
		AddCPU: res.AddCPU, DriverLog: stderr}
	if r.Root, err = rootUnchanged(b.root, fmt.Sprintf("after chain=%s conc=%d", chain, conc)); err != nil {
		return r, err
	}
	after, err := b.agent.metrics(ctx)
	if err != nil {
		return r, err
	}
	if chain == ChainTerway {
		r.AgentAdd, r.AgentDel = after.mean("add", before), after.mean("del", before)
		r.AgentAdmit = after.admission(before)
		b.o.Logf("cnibench: %d resident pods, %d workers: the agent's ADD phases (means): %s", len(b.resident), conc, after.addPhases(before))
		b.o.Logf("cnibench: %d resident pods, %d workers: admission steps (means): %s", len(b.resident), conc, after.admissionSteps(before))
	}
	return r, b.check(r, res, after)
}

func (b *Bench) runDriver(ctx context.Context, j *job, dir string) (*result, string, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return nil, "", err
	}
	jobPath := filepath.Join(dir, "job.json")
	if err := os.WriteFile(jobPath, data, 0o600); err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", b.nodeNS}, b.o.Driver...)...)
	cmd.Env = append(os.Environ(), DriverEnv+"="+jobPath)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		return nil, stderr.String(), fmt.Errorf("driver: %v\n%s", err, stderr.String())
	}
	out, err := os.ReadFile(j.Out)
	if err != nil {
		return nil, stderr.String(), err
	}
	res := &result{}
	if err := json.Unmarshal(out, res); err != nil {
		return nil, stderr.String(), err
	}
	if len(res.Add) != len(j.Pods) || !j.AddOnly && len(res.Del) != len(j.Pods) {
		return nil, stderr.String(), fmt.Errorf("driver measured %d ADDs and %d DELs for %d pods", len(res.Add), len(res.Del), len(j.Pods))
	}
	return res, stderr.String(), nil
}

// check verifies what the round did to the node and fills in its counts.
func (b *Bench) check(r *Round, res *result, agent agentMetrics) error {
	var errs []error
	for _, e := range res.Errors {
		errs = append(errs, errors.New(e))
	}
	seen := map[string]bool{}
	for _, ip := range res.IPs {
		if ip == "" || seen[ip] {
			errs = append(errs, fmt.Errorf("%s: address %q missing or given twice", r.Chain, ip))
		}
		seen[ip] = true
	}
	for _, l := range linkNames(res.LinksAfterAdd) {
		if !slices.Contains(b.nodeLinks, l) {
			r.NewLinks++
		}
		if strings.HasPrefix(l, "bwp") {
			r.IFBs++
		}
	}
	r.TBFs = strings.Count(res.QdiscsAfterAdd, "qdisc tbf ")
	r.Shaped = (len(b.podNS) + shapedEvery - 1) / shapedEvery
	if r.NewLinks < len(b.podNS) || r.TBFs < r.Shaped {
		errs = append(errs, fmt.Errorf("%s: %d new links and %d tbf qdiscs on the node after %d ADDs (%d shaped)", r.Chain, r.NewLinks, r.TBFs, len(b.podNS), r.Shaped))
	}
	links, err := inNetns(b.nodeNS, "ip", "-o", "link")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if now := linkNames(links); !slices.Equal(now, b.nodeLinks) {
		errs = append(errs, fmt.Errorf("%s: node links after DEL of every pod: %v, want %v", r.Chain, now, b.nodeLinks))
	}
	if r.Chain == ChainRef {
		leases, _ := filepath.Glob(filepath.Join(b.refData, "ref", "198.*"))
		if len(leases) != 0 {
			errs = append(errs, fmt.Errorf("ref: host-local still holds %d leases after DEL", len(leases)))
		}
	} else if n := agent["terway_allocations"]; n != float64(len(b.resident)) {
		errs = append(errs, fmt.Errorf("terway: %v allocations after DEL, want the %d resident pods'", n, len(b.resident)))
	}
	return errors.Join(errs...)
}

// Run sets up, runs passes rounds (at least one) of o.Pods pods per chain
// and concurrency (1 and 8 when concs is empty), and cleans up. It returns
// one round per chain and concurrency, its passes pooled (Pool).
//
// The passes alternate the chains, each concurrency's rounds of both
// chains side by side and the chain that goes first swapped from one pass
// to the next: the shared machine's speed drifts over a run, and one round
// of each chain, one after the other, measured each at another speed.
func Run(ctx context.Context, o Options, passes int, concs ...int) (rounds []*Round, err error) {
	if len(concs) == 0 {
		concs = []int{1, 8}
	}
	b, err := Setup(ctx, o)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.Close()) }()
	type run struct {
		chain string
		conc  int
	}
	done := map[run][]*Round{}
	for pass := range max(passes, 1) {
		order := slices.Clone(Chains)
		if pass%2 == 1 {
			slices.Reverse(order)
		}
		for _, conc := range concs {
			for _, chain := range order {
				r, err := b.Round(ctx, chain, conc)
				if r != nil {
					b.o.Logf("cnibench: pass %d: %s conc=%d: ADD p50 %.2f ms, DEL p50 %.2f ms; %s", pass+1, chain, conc,
						Ms(r.Percentile(true, 50)), Ms(r.Percentile(false, 50)), r.Summary())
				}
				if err != nil {
					return nil, fmt.Errorf("chain %s, %d workers: %w", chain, conc, err)
				}
				done[run{chain, conc}] = append(done[run{chain, conc}], r)
			}
		}
	}
	for _, chain := range Chains {
		for _, conc := range concs {
			rounds = append(rounds, Pool(done[run{chain, conc}]))
		}
	}
	return rounds, nil
}

// Pool is rounds of one chain and concurrency as one: their calls
// together, the mean of their agent-side means (each round makes the same
// number of calls), their wall times added, and what the last one left
// and found.
func Pool(rounds []*Round) *Round {
	last := rounds[len(rounds)-1]
	out := &Round{Chain: last.Chain, Concurrency: last.Concurrency, NewLinks: last.NewLinks, IFBs: last.IFBs,
		TBFs: last.TBFs, Shaped: last.Shaped, Root: last.Root}
	for _, r := range rounds {
		out.Add = append(out.Add, r.Add...)
		out.Del = append(out.Del, r.Del...)
		out.AddWall += r.AddWall
		out.AddCPU = out.AddCPU.plus(r.AddCPU, 1)
		out.DelWall += r.DelWall
		out.AgentAdd += r.AgentAdd / time.Duration(len(rounds))
		out.AgentDel += r.AgentDel / time.Duration(len(rounds))
		out.AgentAdmit += r.AgentAdmit / time.Duration(len(rounds))
		out.DriverLog += r.DriverLog
	}
	return out
}

// containerID makes a 64-hex-digit ID, as containerd's, from a label.
func containerID(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

// Percentile is the nearest-rank percentile.
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

// Ms is d in milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
