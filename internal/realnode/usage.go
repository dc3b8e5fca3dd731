package realnode

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agentProcess is the command name (/proc/PID/comm) of the agent the
// DaemonSet runs.
const agentProcess = "terwayd"

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux,
// whatever the kernel's HZ).
const clockTicks = 100

// RunUsage is what the node spent during an e2e run: the agent's memory
// and CPU, the CNI plugin runs (counted through the container runtime,
// which forks them), and the kubelet's pod start latency.
type RunUsage struct {
	WallSeconds float64 `json:"wallSeconds"`
	// Samples is how many one-second samples were taken.
	Samples int `json:"samples"`
	// Agent is nil when no terwayd ran on the node (the ptp node).
	Agent *AgentUsage `json:"agent,omitempty"`
	// RuntimeChildrenCPUSeconds is the CPU time of containerd's children it
	// waited for during the run (the CNI plugin binaries: terway, or ptp,
	// host-local and bandwidth; and the `containerd-shim-runc-v2 start`
	// runs, one per pod sandbox, the same count under either CNI): the
	// growth of containerd's cutime+cstime. The short-lived CNI runs are
	// counted there, not sampled.
	RuntimeChildrenCPUSeconds float64 `json:"runtimeChildrenCPUSeconds"`
	// PodStart is the kubelet's pod start SLI histogram over the run (the
	// scrape after minus the scrape before), with its bucket estimates.
	PodStart *PodStartUsage `json:"podStart,omitempty"`
	// Problems lists what could not be measured, and why.
	Problems []string `json:"problems,omitempty"`
}

// AgentUsage is terwayd's usage, sampled every second.
type AgentUsage struct {
	// PIDs are the terwayd processes seen (more than one: it restarted).
	PIDs           []int `json:"pids"`
	RSSMaxBytes    int64 `json:"rssMaxBytes"`
	RSSMedianBytes int64 `json:"rssMedianBytes"`
	// CPUSeconds is the growth of the agent pod's cpuacct.usage (all its
	// containers, pause included; the CNI binary runs are not in the pod:
	// see RuntimeChildrenCPUSeconds).
	CPUSeconds float64 `json:"cpuSeconds"`
	MeanCores  float64 `json:"meanCores"`
	// Cgroup is the agent pod's cpuacct cgroup.
	Cgroup string `json:"cgroup"`
}

// PodStartUsage is the SLI histogram and its bucket estimates.
type PodStartUsage struct {
	Count float64 `json:"count"`
	Sum   float64 `json:"sumSeconds"`
	// P50, P90, P99 are bucket estimates (Histogram.Quantile), in seconds.
	P50     float64  `json:"p50Seconds"`
	P90     float64  `json:"p90Seconds"`
	P99     float64  `json:"p99Seconds"`
	Buckets []Bucket `json:"buckets"`
}

// sampler collects RunUsage while e2e.test runs.
type sampler struct {
	c  *Config
	t0 time.Time
	// dir receives the kubelet's two /metrics scrapes, as served.
	dir string

	mu          sync.Mutex
	rss         []int64
	pids        map[int]bool
	cgroup      string
	cpu0, cpu1  uint64 // cpuacct.usage, ns, first and last seen
	runtimePID  int
	rt0         uint64 // containerd's cutime+cstime at start, ticks
	samples     int
	problems    []string
	podStartPre *Histogram
}

// startSampling scrapes the kubelet's histogram and containerd's counters,
// then samples the agent every second until ctx ends.
func startSampling(ctx context.Context, c *Config, dir string) (*sampler, <-chan struct{}) {
	s := &sampler{c: c, t0: time.Now(), dir: dir, pids: map[int]bool{}}
	if h, err := s.scrapePodStart(ctx, "before"); err != nil {
		s.problem("pod start, scrape before the run: %v", err)
	} else {
		s.podStartPre = h
	}
	if pid, err := c.daemonPID("containerd"); err != nil {
		s.problem("runtime children: %v", err)
	} else if t, err := childTicks(pid); err != nil {
		s.problem("runtime children: %v", err)
	} else {
		s.runtimePID, s.rt0 = pid, t
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return s, done
}

func (s *sampler) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
}

// sample adds one RSS sample (all terwayd processes of the node together)
// and reads the agent pod's CPU counter.
func (s *sampler) sample() {
	var rss int64
	var found []int
	for _, pid := range s.c.nodePIDs() {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil || strings.TrimSpace(string(comm)) != agentProcess {
			continue
		}
		kb, err := procStatusKB(pid, "VmRSS")
		if err != nil {
			continue // it exited between the listing and the read
		}
		rss += kb * 1024
		found = append(found, pid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples++
	if len(found) == 0 {
		return
	}
	s.rss = append(s.rss, rss)
	for _, pid := range found {
		s.pids[pid] = true
	}
	if s.cgroup == "" {
		if cg, err := podCgroup(found[0], "cpuacct"); err == nil {
			s.cgroup = cg
		} else {
			s.problems = append(s.problems, fmt.Sprintf("agent CPU: %v", err))
			s.cgroup = "-"
		}
	}
	if s.cgroup == "-" {
		return
	}
	if v, err := readUint(filepath.Join(cgroupRoot, "cpuacct", s.cgroup, "cpuacct.usage")); err == nil {
		if s.cpu0 == 0 {
			s.cpu0 = v
		}
		s.cpu1 = v
	}
}

// finish stops reading and returns the figures (call after the sampling
// goroutine ended).
func (s *sampler) finish(ctx context.Context) *RunUsage {
	u := &RunUsage{WallSeconds: time.Since(s.t0).Seconds()}
	if post, err := s.scrapePodStart(ctx, "after"); err != nil {
		s.problem("pod start, scrape after the run: %v", err)
	} else if d, err := post.Sub(s.podStartPre); err != nil {
		s.problem("pod start: %v", err)
	} else if d.Count > 0 {
		ps := &PodStartUsage{Count: d.Count, Sum: d.Sum, Buckets: d.Buckets}
		ps.P50, _ = d.Quantile(0.5)
		ps.P90, _ = d.Quantile(0.9)
		ps.P99, _ = d.Quantile(0.99)
		u.PodStart = ps
	}
	if s.runtimePID != 0 {
		if t, err := childTicks(s.runtimePID); err != nil {
			s.problem("runtime children: %v", err)
		} else {
			u.RuntimeChildrenCPUSeconds = float64(t-s.rt0) / clockTicks
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u.Samples = s.samples
	u.Problems = s.problems
	if len(s.rss) > 0 {
		a := &AgentUsage{Cgroup: s.cgroup}
		for pid := range s.pids {
			a.PIDs = append(a.PIDs, pid)
		}
		sort.Ints(a.PIDs)
		a.RSSMaxBytes, a.RSSMedianBytes = maxMedian(s.rss)
		a.CPUSeconds = float64(s.cpu1-s.cpu0) / 1e9
		if u.WallSeconds > 0 {
			a.MeanCores = a.CPUSeconds / u.WallSeconds
		}
		u.Agent = a
	}
	return u
}

// maxMedian of samples (the median of an even count is the lower middle:
// a value that was really seen).
func maxMedian(v []int64) (maxV, median int64) {
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)-1], s[(len(s)-1)/2]
}

// scrapePodStart reads the kubelet's /metrics through the API server's
// node proxy (the kubelet's port is inside the node only) and keeps the
// text as kubelet-metrics-<when>.txt.
func (s *sampler) scrapePodStart(ctx context.Context, when string) (*Histogram, error) {
	text, err := s.c.Kubectl(ctx, "", "get", "--raw", "/api/v1/nodes/"+s.c.Name+"/proxy/metrics")
	if err != nil {
		return nil, err
	}
	if s.dir != "" {
		if err := os.WriteFile(filepath.Join(s.dir, "kubelet-metrics-"+when+".txt"), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	h, err := ParseHistogram(text, PodStartSLIMetric)
	if errors.Is(err, ErrNoHistogram) {
		// No pod has started on the node yet: an empty histogram.
		return &Histogram{Name: PodStartSLIMetric, Buckets: []Bucket{{UpperBound: math.Inf(1)}}}, nil
	}
	return h, err
}

// daemonPID is the PID of one of the node's daemons, checked against its
// executable in case the PID was reused.
func (c *Config) daemonPID(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir(), "pids", name))
	if err != nil {
		return 0, fmt.Errorf("node %s has no %s: %w", c.Name, name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s pid file %q: %w", name, b, err)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); filepath.Base(exe) != name {
		return 0, fmt.Errorf("pid %d is %q, not %s", pid, exe, name)
	}
	return pid, nil
}

// childTicks is cutime+cstime of /proc/PID/stat: the CPU of the children
// the process waited for.
func childTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return statChildTicks(string(b))
}

// statChildTicks parses fields 16 and 17 (cutime, cstime) of a stat line;
// the command name in parentheses may hold spaces, so count after it.
func statChildTicks(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat %q: no command name", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state): cutime is field 16, cstime 17.
	if len(f) < 15 {
		return 0, fmt.Errorf("stat %q: %d fields after the name", stat, len(f))
	}
	var sum uint64
	for _, s := range f[13:15] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat %q: %w", stat, err)
		}
		sum += v
	}
	return sum, nil
}

// procStatusKB reads a "Key:   N kB" line of /proc/PID/status.
func procStatusKB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// podCgroup is the pod-level cgroup of a container's process in a v1
// hierarchy: the parent of its container's cgroup (kubelet's cgroupfs
// layout .../pod<UID>/<container ID>).
func podCgroup(pid int, controller string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			if ctl == controller {
				pod := filepath.Dir(f[2])
				if !strings.HasPrefix(filepath.Base(pod), "pod") {
					return "", fmt.Errorf("pid %d: %s cgroup %s is not in a pod's", pid, controller, f[2])
				}
				return pod, nil
			}
		}
	}
	return "", fmt.Errorf("pid %d: no %s cgroup", pid, controller)
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// String is the figures as the e2e summary prints them.
func (u *RunUsage) String() string {
	var b strings.Builder
	if a := u.Agent; a != nil {
		fmt.Fprintf(&b, "agent terwayd: RSS max %.1f MiB, median %.1f MiB; CPU %.1f s over %.0f s (%.3f cores mean, pod cgroup)\n",
			float64(a.RSSMaxBytes)/(1<<20), float64(a.RSSMedianBytes)/(1<<20), a.CPUSeconds, u.WallSeconds, a.MeanCores)
	} else {
		fmt.Fprintf(&b, "agent terwayd: not running on the node (%d samples)\n", u.Samples)
	}
	fmt.Fprintf(&b, "containerd's children (CNI plugin runs + shim starts): CPU %.2f s\n", u.RuntimeChildrenCPUSeconds)
	if p := u.PodStart; p != nil {
		fmt.Fprintf(&b, "%s over the run: count %.0f, sum %.1f s, mean %.3f s; bucket estimates p50 %.3f s, p90 %.3f s, p99 %.3f s",
			PodStartSLIMetric, p.Count, p.Sum, p.Sum/p.Count, p.P50, p.P90, p.P99)
	} else {
		fmt.Fprintf(&b, "%s over the run: no pods started", PodStartSLIMetric)
	}
	for _, p := range u.Problems {
		b.WriteString("\nnot measured: " + p)
	}
	return b.String()
}
