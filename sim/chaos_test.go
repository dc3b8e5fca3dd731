package sim_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/chaos"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/sim"
	"github.com/terway-reconciler/terway/spec"
)

// Chaos: the agent in ENI multi-IP mode against the emulator with faults
// on (throttling, 5xx, dropped answers, slow attach), pods churning, and
// the agent killed with SIGKILL again and again, at named points of its
// work (internal/chaos) and at random times. After each restart the node
// must converge with nothing leaked anywhere: no duplicate pod IP; the
// emulator's ENIs and IPs, the store's allocations and the node
// namespace's veths, routes, rules, neighbours, qdiscs and nft set
// elements all match the running pods; and the plan is empty.
//
// TERWAY_CHAOS_SEED (default 1) and TERWAY_CHAOS_KILLS (default 50) vary
// the run; the seed is logged so that a failure can be replayed.

const (
	chaosMaxPool = 3
	chaosLow     = 2  // churn shrinks down to this many pods
	chaosHigh    = 16 // and grows up to this many (past one ENI's IPs)
	chaosENIHigh = 26 // or this many while an ENI point is armed
)

// Kills not at a named point: at a random time during churn, and at a
// random time while the agent starts after a kill.
const (
	randomTime = "random-time"
	startup    = "random-time-while-starting"
)

func TestChaosKills(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos run: minutes")
	}
	nstest.RequireRoot(t)
	seed, kills := envInt(t, "TERWAY_CHAOS_SEED", 1), envInt(t, "TERWAY_CHAOS_KILLS", 50)
	rng := rand.New(rand.NewPCG(uint64(seed), 0x7e77a4))
	t.Logf("chaos: seed %d, %d kills", seed, kills)

	name := simName(t, "chaos")
	killFile := filepath.Join(sim.Dir(name), "chaos-kill")
	dir := t.TempDir()
	var cluster strings.Builder
	fmt.Fprintf(&cluster, "apiVersion: terway/v1\nkind: Config\nmaxPoolSize: %d\n", chaosMaxPool)
	cluster.WriteString("---\napiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n")
	// A policy whose sets hold the pods' addresses: churn is set elements.
	cluster.WriteString("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: app, name: web}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 80}]}]\n")
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(cluster.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"terwayd.log", "supervisor.log"} {
				if data, err := os.ReadFile(filepath.Join(sim.Dir(name), "logs", f)); err == nil {
					t.Logf("%s (tail):\n%s", f, tail(string(data), 40))
				}
			}
		}
		if err := sim.Down(name); err != nil {
			t.Errorf("sim down %s: %v", name, err)
		}
	})
	ctx := context.Background()
	// Of the 3 secondary ENIs, 2 are kept for multi-IP pods, 1 serves the
	// pods that take a whole ENI.
	reserved := 2
	st, err := sim.Up(ctx, sim.Options{Cluster: dir, Name: name, BinDir: binaries(t), Mode: "eni-multi-ip", ReservedENIsForMultiIP: &reserved,
		Resync: 2 * time.Second, RestartBackoff: 100 * time.Millisecond, RestartBackoffMax: time.Second,
		AgentEnv: []string{chaos.EnvKillFile + "=" + killFile},
		EmulatorArgs: []string{"--fault", "*=Throttling:" + faultRate("THROTTLING", "0.1"), "--fault", "*=InternalError:" + faultRate("5XX", "0.03"),
			"--fault", "*=drop:" + faultRate("DROP", "0.03"), "--attach-delay", faultRate("ATTACH_DELAY", "1s")}})
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}

	// The checks see an orphan (a veth of ours that no pod has), and the
	// agent's resync removes it.
	const stray = "198.19.255.250"
	for _, cmd := range [][]string{
		{"ip", "link", "add", "twchaos0", "type", "veth", "peer", "name", "twchaos1"},
		{"ip", "link", "set", "twchaos0", "up"},
		{"ip", "route", "add", stray + "/32", "dev", "twchaos0", "proto", strconv.Itoa(spec.RouteProtocol)},
		{"ip", "rule", "add", "from", stray, "lookup", "main", "priority", strconv.Itoa(spec.RulePriorityFromPod)},
		{"ip", "neigh", "add", stray, "lladdr", "02:00:00:00:00:01", "dev", "twchaos0", "nud", "permanent"},
	} {
		nstest.Run(t, st.NodeNetns, cmd...)
	}
	p := strings.Join(leaks(st), "\n")
	for _, want := range []string{"orphan veth twchaos0", "orphan route " + stray, "orphan rule", "orphan neighbour " + stray} {
		if !strings.Contains(p, want) {
			t.Fatalf("%q is not reported: %q", want, p)
		}
	}
	if problems := converge(t, st, 30*time.Second); len(problems) > 0 {
		t.Fatalf("after up:\n%s", strings.Join(problems, "\n"))
	}

	c := &churner{t: t, st: st, rng: rand.New(rand.NewPCG(uint64(seed), 0xc4a05)), exclusiveEvery: envInt(t, "TERWAY_CHAOS_EXCLUSIVE_EVERY", 7)}
	perPoint := map[string]int{}
	notReached := map[string]int{}
	start := time.Now()
	for k := 0; k < kills; k++ {
		point := randomTime
		switch {
		case k%2 == 0:
			point = chaos.Points[rng.IntN(len(chaos.Points))]
		case k%6 == 1 && k+1 < kills: // two kills
			point = startup
		}
		agent, err := st.Agent()
		if err != nil {
			t.Fatal(err)
		}
		if point != randomTime {
			if err := os.WriteFile(killFile, []byte(point), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c.eniPoint.Store(strings.HasPrefix(point, "eni-"))
		stopChurn := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.run(stopChurn) }()
		switch {
		case point == randomTime:
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
			kill(t, agent.PID)
		case point == startup:
			// A crash loop: the agent restarted after a first kill dies
			// again while it starts (reading the cloud, first resync).
			kill(t, agent.PID)
			perPoint[randomTime]++
			k++
			again := waitNewAgent(t, st, agent.PID, 30*time.Second)
			time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
			agent = again
			kill(t, agent.PID)
		case !waitDead(agent.PID, 12*time.Second):
			// Not reached in time (an ENI point needs the pool to grow):
			// disarm and kill at a random time instead.
			if os.Remove(killFile) == nil {
				notReached[point]++
				point = randomTime
				kill(t, agent.PID)
			} // else the point was reached just now
		}
		perPoint[point]++
		close(stopChurn)
		wg.Wait()
		if _, err := st.WaitAgentRestarted(ctx, agent.PID, 60*time.Second); err != nil {
			t.Fatalf("kill %d (%s): %v", k+1, point, err)
		}
		c.reload()
		if problems := converge(t, st, 60*time.Second); len(problems) > 0 {
			t.Fatalf("kill %d (%s), %d pods: not converged after the restart:\n%s", k+1, point, len(c.st.Pods), strings.Join(problems, "\n"))
		}
	}
	// At the end every pod goes: the cloud gets its IPs back.
	c.shrinkTo(0)
	c.reload()
	if problems := converge(t, st, 60*time.Second); len(problems) > 0 {
		t.Fatalf("after deleting every pod:\n%s", strings.Join(problems, "\n"))
	}
	var lines []string
	total := 0
	for p, n := range perPoint {
		lines = append(lines, fmt.Sprintf("%s=%d", p, n))
		total += n
	}
	sort.Strings(lines)
	t.Logf("chaos: %d kills in %s (%s; named points not reached in time: %v); pods churned: %d added, %d deleted, %d ADDs failed by a kill, %d otherwise; leaks 0, duplicate IPs 0",
		total, time.Since(start).Round(time.Second), strings.Join(lines, " "), notReached, c.added, c.deleted, c.addKilled, c.addOther)
}

// faultRate is TERWAY_CHAOS_<what> or def: a harsher run is one variable
// away.
func faultRate(what, def string) string {
	if v := os.Getenv("TERWAY_CHAOS_" + what); v != "" {
		return v
	}
	return def
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, v)
	}
	return n
}

// waitNewAgent waits until the supervisor runs an agent other than old,
// ready or not.
func waitNewAgent(t *testing.T, st *sim.State, old int, timeout time.Duration) sim.AgentProcess {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if p, err := st.Agent(); err == nil && p.PID != old {
			return p
		}
	}
	t.Fatalf("agent pid %d not restarted within %s", old, timeout)
	return sim.AgentProcess{}
}

// waitDead waits until pid has exited (a zombie counts as exited).
func waitDead(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return true
		}
	}
	return false
}

// churner adds and deletes pods as a busy node's kubelet does: growing to
// chaosHigh pods, then shrinking to chaosLow, round after round.
type churner struct {
	t       *testing.T
	st      *sim.State
	rng     *rand.Rand
	next    int
	growing bool
	// failed are pods whose ADD failed: their objects go with the next
	// delete, as a kubelet retries or the pod is deleted.
	failed              []string
	added, deleted      int
	addKilled, addOther int // failed ADDs
	// exclusiveEvery > 0 makes every so many pods ask for a whole ENI.
	exclusiveEvery int
	// eniPoint says an ENI point is armed: grow further, so that the
	// pool needs another ENI.
	eniPoint atomic.Bool
}

func (c *churner) reload() {
	st, err := sim.Load(c.st.Name)
	if err != nil {
		c.t.Fatal(err)
	}
	c.st = st
}

// run churns until stop is closed, at least one round.
func (c *churner) run(stop <-chan struct{}) {
	for {
		c.round()
		select {
		case <-stop:
			return
		default:
		}
	}
}

func (c *churner) round() {
	c.reload()
	n := len(c.st.Pods)
	high := chaosHigh
	if c.eniPoint.Load() {
		high = chaosENIHigh // past the ENIs there are: the pool grows
	}
	switch {
	case n <= chaosLow:
		c.growing = true
	case n >= high:
		c.growing = false
	}
	if c.growing {
		c.add(1 + c.rng.IntN(3))
		if c.rng.IntN(3) == 0 {
			c.del(1)
		}
	} else {
		c.del(2 + c.rng.IntN(3))
		if c.rng.IntN(3) == 0 {
			c.add(1)
		}
	}
}

func (c *churner) add(n int) {
	var docs, names []string
	for range n {
		name := fmt.Sprintf("c%04d", c.next)
		c.next++
		ann := ""
		if c.next%3 == 0 { // a third shaped: qdiscs churn too
			ann = ", annotations: {kubernetes.io/egress-bandwidth: 10M, kubernetes.io/ingress-bandwidth: 20M}"
		}
		limits := ""
		if c.exclusiveEvery > 0 && c.next%c.exclusiveEvery == 0 {
			limits = ", resources: {limits: {aliyun/eni: \"1\"}}" // a whole ENI
		}
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: %s, labels: {app: web}%s}\nspec:\n  containers: [{name: c, image: i%s}]\n", name, ann, limits))
		names = append(names, name)
	}
	err := c.apply(strings.Join(docs, "---\n"), false)
	c.reload()
	seen := map[string]string{}
	for _, p := range c.st.Pods {
		if other, dup := seen[p.IP]; dup {
			c.t.Errorf("churn: pods %s and %s run with the same IP %s", other, p.Key(), p.IP)
		}
		seen[p.IP] = p.Key()
	}
	for _, name := range names {
		if c.st.Pod("app/"+name) != nil {
			c.added++
		} else {
			c.failed = append(c.failed, name)
		}
	}
	if err != nil {
		// A kill breaks the ADDs in flight; other failures (the cloud's
		// faults outlasting the agent's retries) a kubelet would retry.
		for _, line := range strings.Split(err.Error(), "\n") {
			switch {
			case !strings.HasPrefix(line, "pod app/"):
			case strings.Contains(line, "terway agent unreachable"), strings.Contains(line, "connection broken"):
				c.addKilled++
			default:
				c.addOther++
			}
		}
		c.t.Logf("churn: ADD %s: %v", strings.Join(names, " "), firstLine(err))
	}
}

func (c *churner) del(n int) {
	pods := append([]*sim.Pod(nil), c.st.Pods...)
	c.rng.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	var docs []string
	for i := 0; i < n && i < len(pods); i++ {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: %s}\n", pods[i].Name))
	}
	for _, name := range c.failed {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: %s}\n", name))
	}
	c.failed = nil
	if len(docs) == 0 {
		return
	}
	before := len(c.st.Pods)
	// A DEL is retried until the agent answers: it must not fail.
	if err := c.apply(strings.Join(docs, "---\n"), true); err != nil {
		c.t.Errorf("churn: DEL: %v", err)
	}
	c.reload()
	c.deleted += before - len(c.st.Pods)
}

func (c *churner) shrinkTo(n int) {
	c.reload()
	for len(c.st.Pods) > n {
		c.del(len(c.st.Pods) - n)
	}
}

func (c *churner) apply(yaml string, del bool) error {
	f, err := os.CreateTemp(c.t.TempDir(), "churn-*.yaml")
	if err != nil {
		return err
	}
	f.WriteString(yaml)
	f.Close()
	var out strings.Builder
	if del {
		return sim.Delete(context.Background(), c.st.Name, &out, f.Name())
	}
	return sim.Apply(context.Background(), c.st.Name, &out, f.Name())
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
