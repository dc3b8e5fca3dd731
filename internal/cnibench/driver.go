package cnibench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// DriverEnv names the job file of a driver. The benchmark starts its
// Options.Driver command under `ip netns exec NODE` with this variable set;
// the program there (a test binary's TestMain, `terwayctl bench
// cni-driver`) hands the value to DriverMain.
const DriverEnv = "TERWAY_BENCH_DRIVER"

// job is one round for the driver: ADD every pod, then DEL every pod, with
// Concurrency workers.
type job struct {
	NodeNetns   string // the driver must run in this namespace ...
	Forbidden   uint64 // ... and not in this one (the machine's, by inode)
	PluginDirs  []string
	CacheDir    string
	Conflist    string
	Concurrency int
	Warmup      *libcni.RuntimeConf // ADDed and DELed before the timed calls
	Pods        []*libcni.RuntimeConf
	Out         string // where the driver writes its result
	// AddOnly leaves the pods set up: no DEL phase (resident pods).
	AddOnly bool
	// AgentPID is terwayd's process, whose CPU the ADD phase's account
	// includes (0: none).
	AgentPID int
}

// result is what the driver measured, per pod in job order.
type result struct {
	Add, Del         []time.Duration
	AddWall, DelWall time.Duration
	IPs              []string
	Errors           []string
	// The node namespace between the two phases, to prove the work was done.
	LinksAfterAdd, QdiscsAfterAdd string
	// AddCPU is where the machine's CPU went during the ADD phase.
	AddCPU CPUAccount
}

// CPUAccount is the CPU time a phase used: the whole machine's (busy:
// neither idle nor waiting for I/O), and its parts that the benchmark can
// name. What the parts leave of Busy is the kernel's own threads (a
// namespace's teardown, RCU) and any other process on the machine.
type CPUAccount struct {
	Busy    time.Duration `json:"busy"`
	Agent   time.Duration `json:"agent"`   // terwayd
	Plugins time.Duration `json:"plugins"` // the plugin processes, reaped children of the driver
	Driver  time.Duration `json:"driver"`  // libcni and the driver itself
}

// userHZ is the unit of /proc/stat and /proc/PID/stat: 100 on Linux.
const userHZ = 100

func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// sampleCPU reads the cumulative counters a phase's CPUAccount is the
// difference of (since).
func sampleCPU(agentPID int) (CPUAccount, error) {
	var s CPUAccount
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return s, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/stat: field %d: %w", i+1, err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is counted in user already.
		if i != 3 && i != 4 && i < 8 {
			s.Busy += ticks(n)
		}
	}
	if agentPID > 0 {
		pstat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", agentPID))
		if err != nil {
			return s, err
		}
		// Fields after the command's closing parenthesis: utime and stime
		// are the 12th and 13th.
		_, rest, ok := strings.Cut(string(pstat), ") ")
		pf := strings.Fields(rest)
		if !ok || len(pf) < 13 {
			return s, fmt.Errorf("/proc/%d/stat: unexpected %q", agentPID, pstat)
		}
		for _, v := range pf[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return s, fmt.Errorf("/proc/%d/stat: %w", agentPID, err)
			}
			s.Agent += ticks(n)
		}
	}
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return s, err
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err != nil {
		return s, err
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	s.Driver = tv(self.Utime) + tv(self.Stime)
	s.Plugins = tv(children.Utime) + tv(children.Stime)
	return s, nil
}

// since is a's counters less b's.
func (a CPUAccount) since(b CPUAccount) CPUAccount { return a.plus(b, -1) }

// plus is a's counters plus sign times b's.
func (a CPUAccount) plus(b CPUAccount, sign time.Duration) CPUAccount {
	return CPUAccount{Busy: a.Busy + sign*b.Busy, Agent: a.Agent + sign*b.Agent,
		Plugins: a.Plugins + sign*b.Plugins, Driver: a.Driver + sign*b.Driver}
}

// DriverMain runs the job in the file and returns the process's exit code.
// It refuses to run a plugin unless the process is in the job's node
// namespace: a plugin acts on the namespace of the process that runs it,
// and ptp would otherwise add veths, addresses and routes to the machine.
func DriverMain(jobPath string) int {
	if err := drive(jobPath); err != nil {
		fmt.Fprintln(os.Stderr, "bench driver:", err)
		return 2
	}
	return 0
}

func drive(jobPath string) error {
	data, err := os.ReadFile(jobPath)
	if err != nil {
		return err
	}
	j := &job{}
	if err := json.Unmarshal(data, j); err != nil {
		return fmt.Errorf("job %s: %w", jobPath, err)
	}
	self, err := inode("/proc/self/ns/net")
	if err != nil {
		return err
	}
	node, err := inode(j.NodeNetns)
	if err != nil {
		return err
	}
	if self != node || self == j.Forbidden {
		return fmt.Errorf("running in network namespace %d, want the node's %d (and never %d); refusing to run plugins", self, node, j.Forbidden)
	}

	conf, err := libcni.ConfListFromBytes([]byte(j.Conflist))
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(j.PluginDirs, j.CacheDir, &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}})
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

	// The warm-up pays the first exec of each plugin (page cache, the
	// agent's first connection) outside the timed calls.
	if j.Warmup != nil {
		if _, err := add(j.Warmup); err != nil {
			return fmt.Errorf("warm-up ADD: %w", err)
		}
		if _, err := del(j.Warmup); err != nil {
			return fmt.Errorf("warm-up DEL: %w", err)
		}
	}
	res := &result{}
	var addErrs []error
	before, err := sampleCPU(j.AgentPID)
	if err != nil {
		return fmt.Errorf("CPU account: %w", err)
	}
	res.Add, res.IPs, addErrs, res.AddWall = drivePhase(j.Concurrency, j.Pods, add)
	after, err := sampleCPU(j.AgentPID)
	if err != nil {
		return fmt.Errorf("CPU account: %w", err)
	}
	res.AddCPU = after.since(before)
	links, _ := exec.Command("ip", "-o", "link").CombinedOutput()
	qdiscs, _ := exec.Command("tc", "qdisc", "show").CombinedOutput()
	res.LinksAfterAdd, res.QdiscsAfterAdd = string(links), string(qdiscs)
	delErrs := make([]error, len(j.Pods))
	if !j.AddOnly {
		res.Del, _, delErrs, res.DelWall = drivePhase(j.Concurrency, j.Pods, del)
	}
	for i := range j.Pods {
		if addErrs[i] != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("ADD %s: %v", j.Pods[i].ContainerID[:12], addErrs[i]))
		}
		if delErrs[i] != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("DEL %s: %v", j.Pods[i].ContainerID[:12], delErrs[i]))
		}
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return os.WriteFile(j.Out, out, 0o600)
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

// inode identifies a network namespace by its nsfs inode.
func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}
