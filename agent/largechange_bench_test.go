package agent

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
)

// largePolicy admits peers (spread /32s from 198.18.16.1 on, none adjacent,
// so that render merges none) on ports ports (none adjacent) into the pods
// of app=p0: peers × ports (address, protocol, port) triples. Render keeps
// them in one concatenated set when ports is 1 (50,000 peers: 50,000
// elements) and splits them when there are many ports (500 peers on 100
// ports: 500 addresses and 100 ports, render/profiles.go).
func largePolicy(peers, ports int) *networkingv1.NetworkPolicy {
	rule := networkingv1.NetworkPolicyIngressRule{}
	for i := range peers {
		n := 198<<24 | 18<<16 | 16<<8 + 2*i + 1 // below 198.19.160.0 for 50,000 peers
		rule.From = append(rule.From, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{
			CIDR: fmt.Sprintf("%d.%d.%d.%d/32", n>>24, n>>16&255, n>>8&255, n&255)}})
	}
	tcp := corev1.ProtocolTCP
	for i := range ports {
		port := intstr.FromInt32(int32(1000 + 2*i))
		rule.Ports = append(rule.Ports, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "large", UID: "large"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "p0"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{rule},
		}}
}

// BenchmarkAgentAddDuringLargePolicyChange measures CNI ADDs through the
// agent (Agent.Add: allocate, render, scoped apply) on a node of 20 pods
// with a policy of 50,000 set elements: idle, then while the agent's
// resyncs keep applying that policy changed to 42,000 elements and back.
// Each ADD is followed by the pod's DEL, untimed; the busy phase has at
// least as many ADDs as the idle one and two whole changes. "unlocked" is the
// agent as it runs, committing a resync's nftables plan without its
// lock; "locked" (the baseline, in the same run) commits it under the
// lock, as before, so that ADDs wait for the whole staged change. Each
// reports the ADDs' p50 and p99 idle and during the changes, and the
// p99 ratio. Run:
//
//	go test -run '^$' -bench AgentAddDuringLargePolicyChange -benchtime 1x ./agent/
func BenchmarkAgentAddDuringLargePolicyChange(b *testing.B) {
	for _, mode := range []string{"unlocked", "locked"} {
		b.Run("commit="+mode, func(b *testing.B) {
			for b.Loop() {
				largeChange(b, mode == "locked")
			}
		})
	}
}

var (
	largeChangeAdds  = flag.Int("largechange.adds", 40, "BenchmarkAgentAddDuringLargePolicyChange: ADDs per phase")
	largeChangePeers = flag.Int("largechange.peers", 500, "BenchmarkAgentAddDuringLargePolicyChange: the policy's peers; the change takes 16% of them away")
	largeChangePorts = flag.Int("largechange.ports", 100, "BenchmarkAgentAddDuringLargePolicyChange: the policy's ports (peers x ports triples; 50,000 peers on 1 port stay one 50,000-element set)")
	largeChangeGap   = flag.Duration("largechange.gap", DefaultMinSyncInterval, "BenchmarkAgentAddDuringLargePolicyChange: the pause after a change is enforced before the next edit (the runner spaces syncs by the same); 0 runs changes back to back")
	largeChangeSplit = flag.Bool("largechange.split", false, "BenchmarkAgentAddDuringLargePolicyChange: render every group in the split form (render.SplitEveryGroupForTest)")
)

func largeChange(b *testing.B, locked bool) {
	nstest.RequireRoot(b)
	adds := *largeChangeAdds
	began := time.Now()
	// Progress goes to stderr as it happens: a benchmark's own log is
	// printed only when it ends, and a phase here can take minutes.
	progress := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "largechange %s: "+format+"\n", append([]any{time.Since(began).Round(time.Millisecond)}, args...)...)
	}
	if *largeChangeSplit {
		defer render.SplitEveryGroupForTest()()
	}
	a, src, _ := podSourceAgent(b, "198.18.6.0/24", "198.19.255.1")
	src.policies = []*networkingv1.NetworkPolicy{largePolicy(*largeChangePeers, *largeChangePorts)}
	a.nftAlwaysLocked = locked
	ctx := context.Background()
	setPod := func(name string, present bool) {
		src.mu.Lock()
		defer src.mu.Unlock()
		if !present {
			delete(src.pods, "x/"+name)
			return
		}
		src.pods["x/"+name] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": name}}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	}
	req := func(cmd wire.Command, name, netns string) *wire.Request {
		return &wire.Request{Command: cmd, ContainerID: "ctr-" + name, Netns: netns, IfName: "eth0",
			Args: wire.PodArgs{Namespace: "x", Name: name, UID: "uid-" + name}}
	}
	progress("agent made (locked commit: %v)", locked)
	if out := a.sync(ctx, true); !a.Ready() {
		b.Fatalf("first sync: %+v", out)
	}
	progress("first sync done (the large policy selects no pod yet)")
	for i := range 20 {
		name := fmt.Sprintf("p%d", i)
		setPod(name, true)
		if _, err := a.Add(ctx, req(wire.CmdAdd, name, nstest.Netns(b, name))); err != nil {
			b.Fatal(err)
		}
	}
	if out := a.sync(ctx, true); out.Again {
		b.Fatalf("sync after the pods: %+v", out)
	}
	progress("20 pods added and synced")
	newNetns := nstest.Netns(b, "new")
	var failed atomic.Int64
	cycle := func() (start, end time.Time) {
		setPod("new", true)
		start = time.Now()
		_, err := a.Add(ctx, req(wire.CmdAdd, "new", newNetns))
		end = time.Now()
		if err != nil {
			failed.Add(1)
			b.Logf("ADD: %v", err)
		}
		if err := a.Del(ctx, req(wire.CmdDel, "new", newNetns)); err != nil {
			b.Logf("DEL: %v", err)
		}
		setPod("new", false)
		return start, end
	}
	// phases sums the ADD phase histograms (metrics.addPhases) so far.
	phases := func() map[string][2]float64 { return a.addPhaseSums(b) }
	phaseMeans := func(from, to map[string][2]float64) string {
		var parts []string
		for _, ph := range []string{"allocate", "lock", "render", "apply"} {
			n := to[ph][1] - from[ph][1]
			if n > 0 {
				parts = append(parts, fmt.Sprintf("%s %.2f ms", ph, 1000*(to[ph][0]-from[ph][0])/n))
			}
		}
		return strings.Join(parts, ", ")
	}
	// run cycles until it has atLeast ADDs that count and more says
	// enough; counts says whether an ADD from start to end counts. It
	// returns the counted ADDs' times, sorted, and their phase means.
	run := func(atLeast int, more func() bool, counts func(start, end time.Time) bool) ([]time.Duration, string) {
		var ds []time.Duration
		sum, none := map[string][2]float64{}, map[string][2]float64{}
		type slow struct {
			d      time.Duration
			phases string
		}
		var slowest []slow
		for len(ds) < atLeast || more() {
			before := phases()
			start, end := cycle()
			if !counts(start, end) {
				continue
			}
			ds = append(ds, end.Sub(start))
			after := phases()
			for ph, v := range after {
				sum[ph] = [2]float64{sum[ph][0] + v[0] - before[ph][0], sum[ph][1] + v[1] - before[ph][1]}
			}
			slowest = append(slowest, slow{end.Sub(start), phaseMeans(before, after)})
			slices.SortFunc(slowest, func(a, b slow) int { return int(b.d - a.d) })
			slowest = slowest[:min(len(slowest), 3)]
		}
		for _, s := range slowest {
			progress("a slowest ADD: %v (%s)", s.d.Round(10*time.Microsecond), s.phases)
		}
		slices.Sort(ds)
		return ds, phaseMeans(none, sum)
	}
	always := func(time.Time, time.Time) bool { return true }
	b.Logf("set up in %s", time.Since(began).Round(time.Millisecond))
	cycle() // warm
	began = time.Now()
	idle, idlePhases := run(adds, func() bool { return false }, always)
	b.Logf("%d idle ADDs in %s", len(idle), time.Since(began).Round(time.Millisecond))
	progress("%d idle ADDs, p50 %v; mean phases: %s", len(idle), idle[len(idle)/2], idlePhases)
	idleFailed := failed.Swap(0)

	// A change counts from the policy's edit to the first resync whose
	// nftables commit succeeds: the plan is made from a document rendered
	// after the edit, so that commit enforces it. Resyncs go on after that
	// while the CNI keeps writing (each one's render is cut short by the
	// ADDs and DELs meanwhile, see Agent.sync), but the change is in force.
	enforced := make(chan struct{}, 1)
	a.committed = func(rep *engine.Report) {
		for _, r := range rep.Results {
			if r.Err != nil {
				progress("resync's nftables commit refused: %v; op %s", r.Err, r.Op.String())
			}
		}
		if rep.Err() == nil {
			select {
			case enforced <- struct{}{}:
			default:
			}
		}
	}
	stop := make(chan struct{})
	var changes atomic.Int64
	var changeTime atomic.Int64
	// An ADD is during a change when it overlaps one: the changes' windows
	// from the edit to its enforcement, and the start of the one in flight.
	var windowMu sync.Mutex
	var windows [][2]time.Time
	var inFlight time.Time
	during := func(start, end time.Time) bool {
		windowMu.Lock()
		defer windowMu.Unlock()
		if !inFlight.IsZero() && inFlight.Before(end) {
			return true
		}
		for i := len(windows) - 1; i >= 0; i-- {
			if w := windows[i]; w[0].Before(end) && w[1].After(start) {
				return true
			}
		}
		return false
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		full, cut := *largeChangePeers, *largeChangePeers*84/100
		peers := full
		for {
			select {
			case <-stop:
				return
			default:
			}
			peers = full + cut - peers // 500 <-> 420 by default
			select {
			case <-enforced: // a resync's commit before this edit
			default:
			}
			start := time.Now()
			windowMu.Lock()
			inFlight = start
			windowMu.Unlock()
			src.mu.Lock()
			src.policies = []*networkingv1.NetworkPolicy{largePolicy(peers, *largeChangePorts)}
			src.mu.Unlock()
			syncs := 0
			for done := false; !done; {
				a.sync(ctx, false)
				syncs++
				select {
				case <-enforced:
					done = true
				default:
					// No commit of this sync enforced it: an earlier one
					// may have (a resync's second round). Done when the
					// kernel's table already is the document.
					done = nftConverged(ctx, a)
				}
			}
			end := time.Now()
			windowMu.Lock()
			windows, inFlight = append(windows, [2]time.Time{start, end}), time.Time{}
			windowMu.Unlock()
			changeTime.Add(int64(end.Sub(start)))
			changes.Add(1)
			progress("change to %d peers enforced in %s (%d resyncs)", peers, end.Sub(start).Round(time.Millisecond), syncs)
			select {
			case <-stop:
				return
			case <-time.After(*largeChangeGap):
			}
		}
	}()
	began = time.Now()
	busy, busyPhases := run(adds, func() bool { return changes.Load() < 2 }, during)
	close(stop)
	wg.Wait()
	b.Logf("%d ADDs during %d changes in %s", len(busy), changes.Load(), time.Since(began).Round(time.Millisecond))
	busyFailed := failed.Load()
	progress("%d ADDs during %d changes, p50 %v; mean phases: %s", len(busy), changes.Load(), busy[len(busy)/2], busyPhases)

	b.Logf("slowest ADDs idle %v, during changes %v", idle[len(idle)-5:], busy[len(busy)-5:])
	q := func(ds []time.Duration, p float64) float64 {
		return float64(ds[int(p*float64(len(ds)-1))]) / float64(time.Millisecond)
	}
	b.ReportMetric(q(idle, 0.5), "idle-p50-ms")
	b.ReportMetric(q(idle, 0.99), "idle-p99-ms")
	b.ReportMetric(q(busy, 0.5), "change-p50-ms")
	b.ReportMetric(q(busy, 0.99), "change-p99-ms")
	b.ReportMetric(q(busy, 0.99)/q(idle, 0.99), "p99-ratio")
	b.ReportMetric(float64(idleFailed+busyFailed), "add-failures")
	b.ReportMetric(float64(len(busy)), "change-adds")
	b.ReportMetric(float64(changes.Load()), "changes")
	b.ReportMetric(float64(changeTime.Load())/float64(max(changes.Load(), 1))/float64(time.Millisecond), "change-ms")
}

// nftConverged tells whether the node's nftables table is the agent's
// document: an nftables plan, made under the agent's lock as a resync
// makes it, is empty.
func nftConverged(ctx context.Context, a *Agent) bool {
	st, _, err := a.renderSettled()
	if err != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, err := a.eng.Plan(ctx, st, engine.PlanOptions{Kinds: []string{nft.Kind}})
	return err == nil && p.Empty()
}
