package agent_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
)

// The CNI benchmark compares terway with the reference chain ptp +
// host-local + bandwidth from containernetworking/plugins, both driven
// through libcni as containerd drives a plugin, with the same pods, the
// same share of shaped pods and the same concurrency, in one run.
//
// Both chains are driven from inside the node namespace, never from the
// machine's own: ptp makes its host veth, address and routes in the
// namespace it is executed in, and a plugin inherits the namespace of the
// process that runs it. So the benchmark re-executes its own binary under
// `ip netns exec NODE` as a driver (benchDriverEnv names the job file); the
// driver refuses to start unless it is in the node namespace, runs the
// timed calls and writes the latencies back. The machine's links,
// addresses, routes, rules, forwarding sysctls and nftables ruleset are
// compared byte for byte before and after every round.
const (
	benchDriverEnv = "TERWAY_BENCH_DRIVER"
	// refPluginsEnv names the directory with the reference plugins; unset,
	// the benchmark asks hack/cni-plugins.sh (which builds them once).
	refPluginsEnv = "TERWAY_CNI_PLUGINS"
	benchPods     = 200
	// Every shapedEvery-th pod gets an ingress and an egress limit.
	shapedEvery = 4
	shapedRate  = "10M"
	refSubnet   = "198.18.8.0/22" // apart from the terway node's 198.18.0.0/22
)

// benchJob is one round for the driver: ADD every pod, then DEL every pod,
// with Concurrency workers.
type benchJob struct {
	NodeNetns   string // the driver must run in this namespace ...
	Forbidden   uint64 // ... and not in this one (the machine's, by inode)
	PluginDirs  []string
	CacheDir    string
	Conflist    string
	Concurrency int
	Warmup      *libcni.RuntimeConf // ADDed and DELed before the timed calls
	Pods        []*libcni.RuntimeConf
	Out         string // where the driver writes its benchResult
}

// benchResult is what the driver measured, per pod in job order.
type benchResult struct {
	Add, Del         []time.Duration
	AddWall, DelWall time.Duration
	IPs              []string
	Errors           []string
	// The node namespace between the two phases, to prove the work was done.
	LinksAfterAdd, QdiscsAfterAdd string
}

// BenchmarkCNIAddDel reports ADD and DEL latency (p50, p99) of 200 pods,
// sequentially and with 8 workers, for terway and for the reference chain,
// and the ratio of their ADD p50s. Run with -benchtime 1x (make bench).
func BenchmarkCNIAddDel(b *testing.B) {
	nstest.RequireRoot(b)
	refDir := refPlugins(b)
	root := rootSnapshot(b)
	b.Cleanup(func() { requireRootUnchanged(b, root, "after the benchmark and its cleanup") })
	rootNS := netnsInode(b, "/proc/self/ns/net")

	c := newCluster(b, agent.DefaultResyncInterval)
	// Run the agent as the DaemonSet does: info logs, default resync.
	c.stopAgent()
	c.logLevel = "info"
	c.startAgent(agent.DefaultResyncInterval, true)
	c.writeInput("namespaces.yaml", namespacesYAML("x"))
	var yaml []string
	for i := range benchPods {
		var ann map[string]string
		if i%shapedEvery == 0 {
			ann = map[string]string{"kubernetes.io/ingress-bandwidth": shapedRate, "kubernetes.io/egress-bandwidth": shapedRate}
		}
		yaml = append(yaml, c.podYAML("x", fmt.Sprintf("b%d", i), map[string]string{"app": "bench"}, ann))
	}
	c.writeInput("pods.yaml", strings.Join(yaml, "---\n"))

	// The pods' namespaces are made once, untimed, and reused: DEL leaves
	// them as ADD found them.
	netns := make([]string, benchPods)
	for i := range netns {
		netns[i] = nstest.Netns(b, fmt.Sprintf("b%d", i))
	}
	nodeLinks := linkNames(nstest.Run(b, c.node, "ip", "-o", "link"))

	refData := b.TempDir()
	refConf := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ref","plugins":[`+
		`{"type":"ptp","ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"dataDir":%q}},`+
		`{"type":"bandwidth","capabilities":{"bandwidth":true}}]}`, refSubnet, refData)
	chains := []struct {
		name, conflist string
		dirs           []string
		bandwidth      bool // as runtimeConfig (ref) rather than annotations (terway)
	}{
		{"terway", string(c.netconf.Bytes), []string{binaries(b)}, false},
		{"ref", refConf, []string{refDir}, true},
	}
	// The same rate as the annotations, with containerd's burst.
	rate, err := render.ParseKubeBandwidth(shapedRate)
	must(b, err)
	bw := map[string]any{"ingressRate": rate, "ingressBurst": math.MaxUint32, "egressRate": rate, "egressBurst": math.MaxUint32}

	exe, err := os.Executable()
	must(b, err)
	type key struct {
		chain string
		conc  int
	}
	p50 := map[key][]time.Duration{} // one per row: -count repeats the rows
	round := 0
	for _, ch := range chains {
		b.Run("chain="+ch.name, func(b *testing.B) {
			for _, conc := range []int{1, 8} {
				b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
					var add, del []time.Duration
					var addWall time.Duration
					for b.Loop() {
						round++
						job := &benchJob{
							NodeNetns: c.node, Forbidden: rootNS, PluginDirs: ch.dirs, CacheDir: b.TempDir(),
							Conflist: ch.conflist, Concurrency: conc, Out: filepath.Join(b.TempDir(), "result.json"),
						}
						rt := func(i int, label string) *libcni.RuntimeConf {
							name := fmt.Sprintf("b%d", i)
							id := containerID(fmt.Sprintf("%s/%d/%s", ch.name, round, label))
							r := &libcni.RuntimeConf{
								ContainerID: id, NetNS: netns[i], IfName: "eth0",
								Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "x"}, {"K8S_POD_NAME", name},
									{"K8S_POD_UID", "uid-x-" + name}, {"K8S_POD_INFRA_CONTAINER_ID", id}},
							}
							if ch.bandwidth && i%shapedEvery == 0 {
								r.CapabilityArgs = map[string]any{"bandwidth": bw}
							}
							return r
						}
						job.Warmup = rt(0, "warmup")
						for i := range benchPods {
							job.Pods = append(job.Pods, rt(i, strconv.Itoa(i)))
						}
						before := agentMetricsOf(c)
						res := runDriver(b, exe, job)
						requireRootUnchanged(b, root, fmt.Sprintf("after chain=%s conc=%d", ch.name, conc))
						checkRound(b, c, ch.name, res, nodeLinks, refData)
						if ch.name == "terway" {
							after := agentMetricsOf(c)
							b.Logf("agent-side mean: ADD %.2f ms, DEL %.2f ms (the rest of a call is exec and libcni)",
								after.mean("add", before), after.mean("del", before))
						}
						add = append(add, res.Add...)
						del = append(del, res.Del...)
						addWall += res.AddWall
					}
					p50[key{ch.name, conc}] = append(p50[key{ch.name, conc}], percentile(add, 50))
					b.ReportMetric(ms(percentile(add, 50)), "add-p50-ms")
					b.ReportMetric(ms(percentile(add, 99)), "add-p99-ms")
					b.ReportMetric(ms(percentile(del, 50)), "del-p50-ms")
					b.ReportMetric(ms(percentile(del, 99)), "del-p99-ms")
					b.ReportMetric(float64(len(add))/addWall.Seconds(), "adds/s")
					// The comparison goes with the second chain's rows (the
					// parent benchmark's log is shown only with -v), against
					// the median of terway's rows.
					if t, r := percentile(p50[key{"terway", conc}], 50), percentile(add, 50); ch.name == "ref" && t > 0 && r > 0 {
						verdict := "met"
						if 2*t > r {
							verdict = "NOT met"
						}
						b.ReportMetric(float64(t)/float64(r), "terway/ref-add-p50")
						b.Logf("conc=%d: ADD p50 terway %.2f ms, ref %.2f ms, terway/ref %.2f (goal <= 0.50: %s)", conc, ms(t), ms(r), float64(t)/float64(r), verdict)
					}
				})
			}
		})
	}
}

// checkRound fails the benchmark unless every call succeeded, every pod got
// its own address, the shaped pods were shaped, and DEL left the node as the
// round found it.
func checkRound(b *testing.B, c *cluster, chain string, res *benchResult, nodeLinks []string, refData string) {
	b.Helper()
	for _, e := range res.Errors {
		b.Error(e)
	}
	seen := map[string]bool{}
	for _, ip := range res.IPs {
		if ip == "" || seen[ip] {
			b.Errorf("%s: address %q missing or given twice", chain, ip)
		}
		seen[ip] = true
	}
	added, ifbs := 0, 0
	for _, l := range linkNames(res.LinksAfterAdd) {
		if !slices.Contains(nodeLinks, l) {
			added++
		}
		if strings.HasPrefix(l, "bwp") {
			ifbs++
		}
	}
	tbfs := strings.Count(res.QdiscsAfterAdd, "qdisc tbf ")
	shaped := (benchPods + shapedEvery - 1) / shapedEvery
	b.Logf("%s: after ADD the node had %d new links (%d ifb) and %d tbf qdiscs; %d pods shaped", chain, added, ifbs, tbfs, shaped)
	if added < benchPods || tbfs < shaped {
		b.Errorf("%s: %d new links and %d tbf qdiscs on the node after %d ADDs (%d shaped)", chain, added, tbfs, benchPods, shaped)
	}
	if now := linkNames(nstest.Run(b, c.node, "ip", "-o", "link")); !slices.Equal(now, nodeLinks) {
		b.Errorf("%s: node links after DEL of every pod: %v, want %v", chain, now, nodeLinks)
	}
	if chain == "ref" {
		leases, _ := filepath.Glob(filepath.Join(refData, "ref", "198.*"))
		if len(leases) != 0 {
			b.Errorf("ref: host-local still holds %d leases after DEL", len(leases))
		}
	} else if n := agentMetricsOf(c)["terway_allocations"]; n != 0 {
		b.Errorf("terway: %v allocations left after DEL", n)
	}
}

// runDriver runs one job in a copy of this test binary inside the node
// namespace and returns what it measured.
func runDriver(b *testing.B, exe string, job *benchJob) *benchResult {
	b.Helper()
	data, err := json.Marshal(job)
	must(b, err)
	jobPath := filepath.Join(b.TempDir(), "job.json")
	must(b, os.WriteFile(jobPath, data, 0o600))
	cmd := exec.Command("ip", "netns", "exec", nstest.Name(job.NodeNetns), exe)
	cmd.Env = append(os.Environ(), benchDriverEnv+"="+jobPath)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		b.Fatalf("driver: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		b.Logf("driver stderr:\n%s", stderr.String())
	}
	out, err := os.ReadFile(job.Out)
	must(b, err)
	res := &benchResult{}
	must(b, json.Unmarshal(out, res))
	if len(res.Add) != len(job.Pods) || len(res.Del) != len(job.Pods) {
		b.Fatalf("driver measured %d ADDs and %d DELs for %d pods", len(res.Add), len(res.Del), len(job.Pods))
	}
	return res
}

// runBenchDriver is the driver's main: it runs the job named by the file
// and returns the exit code.
func runBenchDriver(jobPath string) int {
	if err := benchDrive(jobPath); err != nil {
		fmt.Fprintln(os.Stderr, "bench driver:", err)
		return 2
	}
	return 0
}

func benchDrive(jobPath string) error {
	data, err := os.ReadFile(jobPath)
	if err != nil {
		return err
	}
	job := &benchJob{}
	if err := json.Unmarshal(data, job); err != nil {
		return fmt.Errorf("job %s: %w", jobPath, err)
	}
	// Refuse to run a plugin anywhere but in the node namespace.
	self, err := inode("/proc/self/ns/net")
	if err != nil {
		return err
	}
	node, err := inode(job.NodeNetns)
	if err != nil {
		return err
	}
	if self != node || self == job.Forbidden {
		return fmt.Errorf("running in network namespace %d, want the node's %d (and never %d); refusing to run plugins", self, node, job.Forbidden)
	}

	conf, err := libcni.ConfListFromBytes([]byte(job.Conflist))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(job.PluginDirs, job.CacheDir, &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}})
	ctx := context.Background()
	add := func(rt *libcni.RuntimeConf) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := cni.AddNetworkList(ctx, conf, rt)
		if err != nil {
			return "", err
		}
		res, err := types100.NewResultFromResult(r)
		if err != nil {
			return "", err
		}
		if len(res.IPs) != 1 {
			return "", fmt.Errorf("%d addresses in the result, want 1", len(res.IPs))
		}
		return res.IPs[0].Address.IP.String(), nil
	}
	del := func(rt *libcni.RuntimeConf) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return "", cni.DelNetworkList(ctx, conf, rt)
	}

	if _, err := add(job.Warmup); err != nil {
		return fmt.Errorf("warm-up ADD: %w", err)
	}
	if _, err := del(job.Warmup); err != nil {
		return fmt.Errorf("warm-up DEL: %w", err)
	}
	res := &benchResult{}
	var addErrs, delErrs []error
	res.Add, res.IPs, addErrs, res.AddWall = drivePhase(job.Concurrency, job.Pods, add)
	links, _ := exec.Command("ip", "-o", "link").CombinedOutput()
	qdiscs, _ := exec.Command("tc", "qdisc", "show").CombinedOutput()
	res.LinksAfterAdd, res.QdiscsAfterAdd = string(links), string(qdiscs)
	res.Del, _, delErrs, res.DelWall = drivePhase(job.Concurrency, job.Pods, del)
	for i := range job.Pods {
		if addErrs[i] != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("ADD %s: %v", job.Pods[i].ContainerID[:12], addErrs[i]))
		}
		if delErrs[i] != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("DEL %s: %v", job.Pods[i].ContainerID[:12], delErrs[i]))
		}
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return os.WriteFile(job.Out, out, 0o600)
}

// drivePhase makes one call per pod with conc workers and times each call.
func drivePhase(conc int, pods []*libcni.RuntimeConf, call func(*libcni.RuntimeConf) (string, error)) ([]time.Duration, []string, []error, time.Duration) {
	lat := make([]time.Duration, len(pods))
	ips := make([]string, len(pods))
	errs := make([]error, len(pods))
	next := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for i := range next {
				t := time.Now()
				ips[i], errs[i] = call(pods[i])
				lat[i] = time.Since(t)
			}
		})
	}
	for i := range pods {
		next <- i
	}
	close(next)
	wg.Wait()
	return lat, ips, errs, time.Since(start)
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
	for _, p := range []string{"ptp", "host-local", "bandwidth"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			b.Fatalf("reference plugin %s: %v (run hack/cni-plugins.sh or set %s)", p, err, refPluginsEnv)
		}
	}
	return dir
}

// rootSnapshot records what the benchmark must leave alone in the
// namespace it runs in, which is the machine's own.
func rootSnapshot(b *testing.B) string {
	b.Helper()
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
			b.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		fmt.Fprintf(&sb, "$ %s\n%s", strings.Join(args, " "), out)
	}
	for _, f := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
		v, err := os.ReadFile(f)
		must(b, err)
		fmt.Fprintf(&sb, "$ cat %s\n%s", f, v)
	}
	return sb.String()
}

func requireRootUnchanged(b *testing.B, before, when string) {
	b.Helper()
	after := rootSnapshot(b)
	sum := sha256.Sum256([]byte(after))
	if after != before {
		b.Fatalf("the machine's network namespace changed %s:\nbefore:\n%s\nafter:\n%s", when, before, after)
	}
	b.Logf("machine's namespace byte-identical %s (%d bytes of link/addr/route/rule/nft/sysctl, sha256 %x)", when, len(after), sum[:8])
}

func netnsInode(b *testing.B, path string) uint64 {
	b.Helper()
	ino, err := inode(path)
	must(b, err)
	return ino
}

func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
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

// containerID makes a 64-hex-digit ID, as containerd's, from a label.
func containerID(label string) string {
	sum := sha256.Sum256([]byte(label))
	return hex.EncodeToString(sum[:])
}

// agentMetrics are the agent's CNI latency sums and counts, and its
// allocation gauge, from /metrics.
type agentMetrics map[string]float64

func agentMetricsOf(c *cluster) agentMetrics {
	m := agentMetrics{}
	_, body := c.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if strings.HasPrefix(name, "terway_cni_request_duration_seconds_sum{") ||
			strings.HasPrefix(name, "terway_cni_request_duration_seconds_count{") || name == "terway_allocations" {
			if v, err := strconv.ParseFloat(value, 64); err == nil {
				m[name] = v
			}
		}
	}
	return m
}

// mean is the agent-side mean latency in ms of successful calls of the
// command since before.
func (m agentMetrics) mean(command string, before agentMetrics) float64 {
	labels := `{command="` + command + `",result="ok"}`
	sum := m["terway_cni_request_duration_seconds_sum"+labels] - before["terway_cni_request_duration_seconds_sum"+labels]
	n := m["terway_cni_request_duration_seconds_count"+labels] - before["terway_cni_request_duration_seconds_count"+labels]
	if n == 0 {
		return 0
	}
	return 1000 * sum / n
}

// percentile is the nearest-rank percentile.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
