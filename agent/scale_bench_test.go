package agent

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/synth"
)

// BenchmarkAgentAddAtScale is the agent's part of a CNI ADD (Agent.Add:
// allocate, render, scoped apply) on a node that already runs many pods
// under many policies, in process, so that a profile shows where an ADD's
// time goes (`terwayctl bench --only scale` measures the same through the
// plugin binary). The node's pods and the cluster around it are those of
// that benchmark: synth's 1,000 policies over 20 namespaces, 250 pods on
// other nodes, and 250 resident pods here with synth's labels, listed to
// the agent as its real sources list them (sorted, one list while nothing
// changes). Each timed pod is ADDed, then DELed (untimed). The baseline,
// in the same run, is 10 resident pods and no policies. The third size,
// status-written, is the second in a cluster whose pods' status keeps
// being written: before each ADD, the status of a pod on another node
// (writeStatus). The timed ADDs carry the pprof label
// phase=timed, so that a profile of them alone is -tagfocus=phase=timed.
// With TERWAY_SCALE_PROFILE=FILE (and no -cpuprofile) the CPU profile
// covers only the timed ADDs at scale and the admission of their pods,
// whose loop is labelled work=admission. cpu-ms/add is the process's CPU
// (rusage) over the timed ADDs, divided by their number, and alloc-KiB/add
// the heap they allocated (runtime.MemStats), with
// TERWAY_SCALE_HEAP=PREFIX profiled (heapProfiles). With
// TERWAY_SCALE_PERF=PREFIX each size's timed ADDs are also recorded by
// `perf record -g` into PREFIX.<resident pods>[-status] (perf must be installed):
// it samples the kernel's side too, and faster than Go's profile can here
// (its per-thread timers fire at most once a kernel tick, 250 Hz on these
// VMs; BENCHMARKS.md, "Stop 43").
// Run:
//
//	go test -run '^$' -bench AgentAddAtScale -benchtime 1x ./agent/
func BenchmarkAgentAddAtScale(b *testing.B) {
	var base time.Duration
	for _, size := range []struct {
		resident, policies int
		statusWritten      bool
	}{{10, 0, false}, {250, 1000, false}, {250, 1000, true}} {
		name := fmt.Sprintf("pods=%d,policies=%d", size.resident, size.policies)
		if size.statusWritten {
			name += ",status-written"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				p50 := addAtScale(b, size.resident, size.policies, size.statusWritten)
				if size.policies == 0 {
					base = p50
				} else if base > 0 {
					b.ReportMetric(float64(p50)/float64(base), "add-p50/baseline")
				}
			}
		})
	}
}

// scaleTimed is how many pods each size ADDs and DELs, one at a time:
// 50, or $TERWAY_SCALE_TIMED (200 gives profiles and medians that move
// less between runs).
var scaleTimed = func() int {
	if n, err := strconv.Atoi(os.Getenv("TERWAY_SCALE_TIMED")); err == nil && n > 0 {
		return n
	}
	return 50
}()

// scaleNode is an agent whose node runs resident pods, set up and
// admitted, in synth's cluster of policies (none: no cluster around it),
// with timed pods (their objects only) for the caller to ADD.
type scaleNode struct {
	a      *Agent
	src    *podSource
	remote []int // places in src.listed of pods on other nodes
	timed  []*corev1.Pod
	req    func(cmd wire.Command, p *corev1.Pod) *wire.Request
}

func newScaleNode(b *testing.B, resident, policies, timedPods int) *scaleNode {
	nstest.RequireRoot(b)
	a, src, node := podSourceAgent(b, "198.18.0.0/20", "198.19.255.1")
	// The node's address, as on a real node and in internal/cnibench: a
	// route to a pod's veth (which has none) takes its source from the
	// first link that has one. Without it the kernel looks through every
	// link of the node for each pod's route.
	nstest.Run(b, node, "ip", "addr", "add", "198.19.255.1/32", "dev", "lo")
	const namespaces = 20
	if policies > 0 {
		world := synth.Cluster(synth.Params{RemotePods: 250, Policies: policies, Namespaces: namespaces, Seed: 1})
		src.policies, src.namespaces = world.Policies, world.Namespaces
		for _, p := range world.Pods {
			src.pods[p.Namespace+"/"+p.Name] = p
		}
	}
	// Timed pods are t<i> with synth's labels of i, resident ones r<i>
	// with those of scaleTimed+i, as in internal/cnibench.
	pod := func(prefix string, i, n int) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", n%namespaces), Name: fmt.Sprintf("%s%d", prefix, i),
				UID: types.UID(fmt.Sprintf("uid-%s%d", prefix, i)), Labels: synth.PodLabels(n, namespaces)},
			Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c", Image: "i",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}}}}},
		}
	}
	var residents, timed []*corev1.Pod
	for i := range resident {
		residents = append(residents, pod("r", i, scaleTimed+i))
	}
	for i := range timedPods {
		timed = append(timed, pod("t", i, i))
	}
	for _, p := range slices.Concat(residents, timed) {
		src.pods[p.Namespace+"/"+p.Name] = p
	}
	// Listed as the agent's sources list pods: sorted by key, one list
	// while nothing changes.
	for _, p := range src.pods {
		src.listed = append(src.listed, p)
	}
	slices.SortFunc(src.listed, func(x, y *corev1.Pod) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	var remote []int // places in src.listed of pods on other nodes
	for i, p := range src.listed {
		if p.Spec.NodeName != "node-1" {
			remote = append(remote, i)
		}
	}
	netns := map[string]string{}
	req := func(cmd wire.Command, p *corev1.Pod) *wire.Request {
		return &wire.Request{Command: cmd, ContainerID: "ctr-" + p.Name, Netns: netns[p.Name], IfName: "eth0",
			Args: wire.PodArgs{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)}}
	}
	ctx := context.Background()
	if out := a.sync(ctx, true); !a.Ready() {
		b.Fatalf("first sync: %+v", out)
	}
	for _, p := range slices.Concat(residents, timed) {
		netns[p.Name] = nstest.Netns(b, p.Name)
	}
	for _, p := range residents {
		if _, err := a.Add(ctx, req(wire.CmdAdd, p)); err != nil {
			b.Fatal(err)
		}
	}
	a.waitAdmitted(b)
	if out := a.sync(ctx, true); out.Again {
		b.Fatalf("sync after the resident pods: %+v", out)
	}
	return &scaleNode{a: a, src: src, remote: remote, timed: timed, req: req}
}

// writeStatus writes the status of the node's n-th pod on another node, as
// the kubelet there does: a new object in the inputs, the same to every
// policy.
func (n *scaleNode) writeStatus(i int) {
	s := n.src
	s.mu.Lock()
	defer s.mu.Unlock()
	at := n.remote[i%len(n.remote)]
	p := s.listed[at].DeepCopy()
	ready := []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse}[i/len(n.remote)%2]
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
	s.listed = slices.Clone(s.listed)
	s.listed[at] = p
	s.pods[p.Namespace+"/"+p.Name] = p
}

func addAtScale(b *testing.B, resident, policies int, statusWritten bool) time.Duration {
	label := strconv.Itoa(resident) // of the profiles' files
	if statusWritten {
		label += "-status"
	}
	writeHeap := heapProfiles(b, label)
	n := newScaleNode(b, resident, policies, scaleTimed)
	a, timed, req, ctx := n.a, n.timed, n.req, context.Background()
	before := a.addPhaseSums(b)
	profile := os.Getenv("TERWAY_SCALE_PROFILE")
	if profile != "" && policies > 0 {
		f, err := os.Create(profile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
	} else {
		profile = ""
	}
	var adds, dels []time.Duration
	writeHeap("before")
	stopPerf := recordPerf(b, label)
	defer stopPerf() // also when an ADD fails
	var memBefore runtime.MemStats
	runtime.ReadMemStats(&memBefore)
	cpuBefore := processCPU(b)
	pprof.Do(ctx, pprof.Labels("phase", "timed"), func(ctx context.Context) {
		for i, p := range timed {
			if statusWritten {
				n.writeStatus(i)
			}
			start := time.Now()
			if _, err := a.Add(ctx, req(wire.CmdAdd, p)); err != nil {
				b.Fatal(err)
			}
			adds = append(adds, time.Since(start))
		}
	})
	cpuPerAdd := (processCPU(b) - cpuBefore) / time.Duration(len(timed))
	var memAfter runtime.MemStats
	runtime.ReadMemStats(&memAfter)
	stopPerf()
	writeHeap("after")
	if profile != "" {
		a.waitAdmitted(b)
		pprof.StopCPUProfile()
	}
	for _, p := range timed {
		start := time.Now()
		if err := a.Del(ctx, req(wire.CmdDel, p)); err != nil {
			b.Fatal(err)
		}
		dels = append(dels, time.Since(start))
	}
	after := a.addPhaseSums(b)
	var phases []string
	for _, ph := range []string{"allocate", "lock", "render", "apply"} {
		if n := after[ph][1] - before[ph][1]; n > 0 {
			phases = append(phases, fmt.Sprintf("%s %.2f ms", ph, 1000*(after[ph][0]-before[ph][0])/n))
		}
	}
	for deadline := time.Now().Add(30 * time.Second); a.departing.snapshot() != nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	steps := a.phaseSums(b, "terway_peer_withdrawal_step_seconds")
	for _, ph := range []string{"render", "apply", "check"} {
		if n := steps[ph][1]; n > 0 {
			phases = append(phases, fmt.Sprintf("withdrawal %s %.2f ms (%.0f steps)", ph, 1000*steps[ph][0]/n, n))
		}
	}
	slices.Sort(adds)
	slices.Sort(dels)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(adds[len(adds)/2]), "add-p50-ms")
	b.ReportMetric(ms(adds[len(adds)*99/100]), "add-p99-ms")
	b.ReportMetric(ms(dels[len(dels)/2]), "del-p50-ms")
	b.ReportMetric(ms(cpuPerAdd), "cpu-ms/add")
	b.ReportMetric(float64(memAfter.TotalAlloc-memBefore.TotalAlloc)/1024/float64(len(timed)), "alloc-KiB/add")
	b.Logf("%d resident pods, %d policies: ADD p50 %v; mean phases: %s", resident, policies,
		adds[len(adds)/2].Round(10*time.Microsecond), strings.Join(phases, ", "))
	return adds[len(adds)/2]
}

// addPhaseSums returns the sums and counts of the ADD phase histograms
// (metrics.addPhases) by phase.
func (a *Agent) addPhaseSums(b *testing.B) map[string][2]float64 {
	return a.phaseSums(b, "terway_cni_add_phase_seconds")
}

// phaseSums returns the sum and count of each phase of a histogram by
// phase.
func (a *Agent) phaseSums(b testing.TB, name string) map[string][2]float64 {
	out := map[string][2]float64{}
	mfs, err := a.m.reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = [2]float64{m.GetHistogram().GetSampleSum(), float64(m.GetHistogram().GetSampleCount())}
		}
	}
	return out
}

// BenchmarkConvergedResyncAtScale is a converged full resync (Agent.sync,
// full) of the node of BenchmarkAgentAddAtScale: 250 resident pods in
// synth's 1,000 policies, against the same 250 pods and no policies, in
// one run: the row "converged full resync, 250 pods + 1000 policies" of
// terwayctl bench, which times a few resyncs of a sim's agent, with many
// samples and in process. It reports each size's median (resync-ms) and,
// for the policies, the ratio to the baseline's median.
//
//	go test -run '^$' -bench ConvergedResyncAtScale -benchtime 40x ./agent/
func BenchmarkConvergedResyncAtScale(b *testing.B) {
	var base float64
	for _, policies := range []int{0, 1000} {
		b.Run(fmt.Sprintf("pods=250,policies=%d", policies), func(b *testing.B) {
			b.StopTimer()
			n := newScaleNode(b, 250, policies, 0)
			ctx := context.Background()
			n.a.sync(ctx, true) // the first reads the nftables table whole
			var runs []float64
			b.StartTimer()
			for b.Loop() {
				began := time.Now()
				if out := n.a.sync(ctx, true); out.Again {
					b.Fatalf("converged resync: %+v", out)
				}
				runs = append(runs, float64(time.Since(began))/float64(time.Millisecond))
			}
			slices.Sort(runs)
			median := runs[len(runs)/2]
			b.ReportMetric(median, "resync-ms")
			if policies == 0 {
				base = median
			} else if base > 0 {
				b.ReportMetric(median/base, "resync/baseline")
			}
		})
	}
}

// processCPU is the CPU (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapProfiles returns what writes the heap profile, with
// TERWAY_SCALE_HEAP=PREFIX, into PREFIX.<label>.<when>; without it,
// nothing. The allocations of the timed ADDs alone are then
// `go tool pprof -sample_index=alloc_space -diff_base PREFIX.250.before PREFIX.250.after`.
// The sampling rate is one sample per 16 KiB from then on.
func heapProfiles(b *testing.B, label string) func(when string) {
	prefix := os.Getenv("TERWAY_SCALE_HEAP")
	if prefix == "" {
		return func(string) {}
	}
	runtime.MemProfileRate = 16 << 10
	return func(when string) {
		runtime.GC() // the profile shows allocations as of the last GC
		f, err := os.Create(fmt.Sprintf("%s.%s.%s", prefix, label, when))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// recordPerf starts `perf record -g` of this process into
// $TERWAY_SCALE_PERF.<label> when that is set, and returns what stops
// it (a no-op when it is not).
func recordPerf(b *testing.B, label string) (stop func()) {
	prefix := os.Getenv("TERWAY_SCALE_PERF")
	if prefix == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-F", "2999", "-g", "-p", strconv.Itoa(os.Getpid()),
		"-o", fmt.Sprintf("%s.%s", prefix, label))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("perf record: %v", err)
	}
	// perf attaches to the threads it finds; give it the time to.
	time.Sleep(time.Second)
	return sync.OnceFunc(func() {
		// perf writes the file and its summary on SIGINT, then ends by it.
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
}
