package sim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/emulator/simlink"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/sim"
	"github.com/terway-reconciler/terway/spec"
)

// ENI multi-IP and exclusive ENI end to end: the real terwayd and terway on
// a simulated node, the real SDK against the emulator, which plugs every
// ENI it attaches into the node namespace with its other end on a vswitch
// bridge in the vpc namespace.

const primaryENI = "eni-emu000000000000001" // the default world's, never ours

// eniCluster is n pods in namespace app, and a Config with the pool bounds.
func eniCluster(n, maxPool int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: terway/v1\nkind: Config\nmaxPoolSize: %d\n", maxPool)
	b.WriteString("---\napiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n")
	b.WriteString("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n")
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: p%02d}\nspec:\n  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]\n", i)
	}
	return b.String()
}

func upENI(t *testing.T, short, yaml string, emulatorArgs ...string) *sim.State {
	t.Helper()
	return upCloud(t, short, yaml, sim.Options{Mode: "eni-multi-ip", EmulatorArgs: emulatorArgs})
}

// upCloud starts a sim with the emulator (o sets the mode and the cloud
// options) and removes it when the test ends.
func upCloud(t *testing.T, short, yaml string, o sim.Options) *sim.State {
	t.Helper()
	nstest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	name := simName(t, short)
	t.Cleanup(func() {
		if t.Failed() {
			if data, err := os.ReadFile(filepath.Join(sim.Dir(name), "logs", "terwayd.log")); err == nil {
				t.Logf("terwayd log (tail):\n%s", tail(string(data), 30))
			}
		}
		if err := sim.Down(name); err != nil {
			t.Errorf("sim down %s: %v", name, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	o.Cluster, o.Name, o.BinDir, o.Resync, o.KeepOnFailure = dir, name, binaries(t), 2*time.Second, true
	st, err := sim.Up(ctx, o)
	if err != nil {
		t.Fatalf("sim up (%s): %v", o.Mode, err)
	}
	return st
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func dump(t *testing.T, st *sim.State) *emulator.Dump {
	t.Helper()
	d, err := st.EmulatorDump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// ours lists the ENIs the agent created (everything but the primary).
func ours(d *emulator.Dump) []emulator.DumpENI {
	var out []emulator.DumpENI
	for _, e := range d.ENIs {
		if e.ID != primaryENI {
			out = append(out, e)
		}
	}
	return out
}

// checkPodsOnENIs asserts every pod's IP is on exactly one of our InUse
// ENIs and no IP is used twice; it returns pod -> ENI.
func checkPodsOnENIs(t *testing.T, st *sim.State, d *emulator.Dump) map[string]emulator.DumpENI {
	t.Helper()
	owner := map[string]emulator.DumpENI{}
	for _, e := range ours(d) {
		for _, ip := range append([]string{e.PrimaryIP}, e.IPs...) {
			if _, dup := owner[ip]; dup {
				t.Fatalf("IP %s on two ENIs", ip)
			}
			owner[ip] = e
		}
	}
	seen := map[string]string{}
	out := map[string]emulator.DumpENI{}
	for _, p := range st.Pods {
		if other, dup := seen[p.IP]; dup {
			t.Fatalf("pods %s and %s share IP %s", other, p.Key(), p.IP)
		}
		seen[p.IP] = p.Key()
		e, ok := owner[p.IP]
		if !ok || e.Status != "InUse" {
			t.Fatalf("pod %s: IP %s is on no InUse ENI of ours (%+v)", p.Key(), p.IP, e)
		}
		out[p.Key()] = e
	}
	return out
}

func rxPackets(t *testing.T, netnsPath, dev string) uint64 {
	t.Helper()
	out := nstest.Run(t, netnsPath, "ip", "-j", "-s", "link", "show", "dev", dev)
	var links []struct {
		Stats64 struct {
			RX struct{ Packets uint64 } `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j -s link show %s: %v: %s", dev, err, out)
	}
	return links[0].Stats64.RX.Packets
}

func TestENIMultiIP(t *testing.T) {
	st := upENI(t, "eni", eniCluster(30, 2))
	d := dump(t, st)
	enis := checkPodsOnENIs(t, st, d)
	byENI := map[string][]string{}
	for pod, e := range enis {
		byENI[e.ID] = append(byENI[e.ID], pod)
	}
	// 4 ENIs x 10 IPs, the primary ENI not for pods: exactly 3 ENIs of ours.
	if got := len(ours(d)); got != 3 || len(byENI) != 3 {
		t.Fatalf("30 pods on %d ENIs of ours (%d used), want 3", got, len(byENI))
	}

	// Pods reach the vswitch gateway through their own ENI: the vpc-side
	// end of that ENI counts the packets.
	gw := "198.18.64.1"
	srv, err := traffic.Serve(st.VPCNetns, gw+":80", "tcp", "udp")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for id, pods := range byENI {
		var mac string
		for _, e := range ours(d) {
			if e.ID == id {
				mac = e.MAC
			}
		}
		dev := simlink.VPCLinkName(mac)
		p := st.Pod(pods[0])
		before := rxPackets(t, st.VPCNetns, dev)
		for _, proto := range []string{"tcp", "udp"} {
			if !traffic.Probe(p.Netns, proto, gw+":80", 2*time.Second) {
				t.Fatalf("pod %s (ENI %s) cannot reach the vswitch gateway over %s", p.Key(), id, proto)
			}
		}
		if after := rxPackets(t, st.VPCNetns, dev); after < before+4 {
			t.Fatalf("pod %s: its ENI %s's vpc end %s counted %d packets, want its traffic", p.Key(), id, dev, after-before)
		}
	}
	// And the vpc reaches the pods (the vswitch knows which ENI holds
	// which secondary IP).
	for _, key := range []string{"app/p00", "app/p15", "app/p29"} {
		if !traffic.Probe(st.VPCNetns, "tcp", st.Pod(key).IP+":80", 2*time.Second) {
			t.Fatalf("vpc cannot reach pod %s", key)
		}
	}

	// A 31st pod does not fit: a clear error.
	extra := filepath.Join(t.TempDir(), "extra.yaml")
	os.WriteFile(extra, []byte("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: p30}\nspec:\n  containers: [{name: c, image: i}]\n"), 0o600)
	var out strings.Builder
	err = sim.Apply(context.Background(), st.Name, &out, extra)
	if err == nil || !strings.Contains(err.Error(), "app/p30") || !strings.Contains(strings.ToLower(err.Error()), "capacity") {
		t.Fatalf("31st pod: %v, want an error naming the pod and the lack of capacity", err)
	}

	// DEL of every pod: IPs above the pool's max (2) are unassigned, empty
	// ENIs detached and deleted; nothing leaks.
	all := filepath.Join(t.TempDir(), "all.yaml")
	var pods []string
	for _, doc := range strings.Split(eniCluster(31, 2), "---\n") {
		if strings.Contains(doc, "kind: Pod") {
			pods = append(pods, doc)
		}
	}
	os.WriteFile(all, []byte(strings.Join(pods, "---\n")), 0o600)
	if err := sim.Delete(context.Background(), st.Name, &out, all); err != nil {
		t.Fatal(err)
	}
	// Each DEL took its pod's routing rules (which name its address, not
	// a link) with it: no rule of ours is left for a next holder of the
	// address to trip over.
	for _, l := range strings.Split(nstest.Run(t, st.NodeNetns, "ip", "rule", "show"), "\n") {
		if prio, _, _ := strings.Cut(l, ":"); prio == strconv.Itoa(spec.RulePriorityToPod) || prio == strconv.Itoa(spec.RulePriorityFromPod) {
			t.Errorf("after every pod's DEL, a pod rule is left: %s", l)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		d = dump(t, st)
		left, ips := ours(d), 0
		for _, e := range left {
			ips += len(e.IPs)
		}
		// One ENI may stay for the idle pool (its primary IP plus up to 2).
		if len(left) <= 1 && ips <= 2 {
			for _, e := range left {
				if e.Status != "InUse" {
					t.Fatalf("ENI %s left %s", e.ID, e.Status)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s after deleting every pod: %d ENIs of ours with %d secondary IPs remain: %+v", len(left), ips, left)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("API calls: %v", d.Calls)
}

func TestExclusiveENI(t *testing.T) {
	// Of the 3 secondary ENIs of ecs.emu.xlarge, 2 are kept for multi-IP
	// pods and 1 is for exclusive pods.
	two := 2
	st := upCloud(t, "excl", `apiVersion: v1
kind: Node
metadata: {name: eni-node}
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: own}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}], resources: {limits: {aliyun/eni: "1"}}}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: shared}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}]}]
`, sim.Options{Mode: "eni-multi-ip", ReservedENIsForMultiIP: &two})
	d := dump(t, st)
	own := st.Pod("app/own")
	var eni emulator.DumpENI
	for _, e := range ours(d) {
		if e.PrimaryIP == own.IP {
			eni = e
		}
	}
	if eni.ID == "" {
		t.Fatalf("pod app/own's IP %s is the primary IP of no ENI of ours: %+v", own.IP, ours(d))
	}
	// The ENI itself is the pod's eth0.
	link := nstest.Run(t, own.Netns, "ip", "-o", "link", "show", "dev", "eth0")
	if !strings.Contains(link, eni.MAC) {
		t.Fatalf("pod app/own's eth0 is not ENI %s (MAC %s): %s", eni.ID, eni.MAC, link)
	}
	// The vpc reaches it directly; the Service CIDR goes by the second veth.
	if !traffic.Probe(st.VPCNetns, "tcp", own.IP+":80", 2*time.Second) {
		t.Fatal("vpc cannot reach the exclusive-ENI pod")
	}
	if r := nstest.Run(t, own.Netns, "ip", "route", "show", "10.96.0.0/12"); !strings.Contains(r, "veth1") {
		t.Fatalf("Service CIDR route in app/own: %q, want via veth1", r)
	}
	// The shared pod is on another ENI of ours.
	if enis := checkPodsOnENIs(t, st, d); enis["app/shared"].ID == eni.ID {
		t.Fatal("the shared pod got an IP of the exclusive ENI")
	}

	// DEL moves the ENI back to the node, then the cloud gets it back:
	// detached and deleted.
	var out strings.Builder
	f := filepath.Join(t.TempDir(), "own.yaml")
	os.WriteFile(f, []byte("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: own}\n"), 0o600)
	if err := sim.Delete(context.Background(), st.Name, &out, f); err != nil {
		t.Fatal(err)
	}
	_, applied, err := st.AgentGet(context.Background(), "/applied")
	if err != nil {
		t.Fatal(err)
	}
	if del := applied[strings.Index(applied, "DEL app/own"):]; !strings.Contains(del, eni.MAC) {
		t.Fatalf("DEL app/own did not move ENI %s back:\n%s", eni.MAC, del)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		gone := true
		for _, e := range dump(t, st).ENIs {
			gone = gone && e.ID != eni.ID
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exclusive ENI %s still exists 30s after its pod's DEL", eni.ID)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestENIFaults(t *testing.T) {
	st := upENI(t, "faults", eniCluster(30, 2),
		"--fault", "*=Throttling:0.3", "--fault", "*=InternalError:0.05", "--fault", "*=drop:0.05", "--attach-delay", "2s")
	d := dump(t, st)
	checkPodsOnENIs(t, st, d)
	if n := len(ours(d)); n != 3 {
		t.Fatalf("%d ENIs of ours for 30 pods under faults, want 3 (a leaked one?): %+v", n, ours(d))
	}
	t.Logf("API calls %v; faults injected %v", d.Calls, d.Faults)
	// The agent counts its API calls too, by action and error code.
	_, metrics, err := st.AgentGet(context.Background(), "/metrics")
	if err != nil || !strings.Contains(metrics, `terway_cloud_api_calls_total{action="AssignPrivateIpAddresses"}`) ||
		!strings.Contains(metrics, `terway_cloud_api_errors_total{action=`) {
		t.Fatalf("agent metrics lack the cloud API counters: %v", err)
	}

}

func TestENIExhaustedVSwitch(t *testing.T) {
	st := upENI(t, "exhaust", eniCluster(1, 2))
	if err := st.EmulatorPost(context.Background(), "vswitch?id=vsw-emu000000000000000h&available=0"); err != nil {
		t.Fatal(err)
	}
	// The warm pool still serves a couple of pods; beyond it the ENI needs
	// more IPs from the exhausted vswitch.
	var extra []string
	for i := 1; i < 8; i++ {
		extra = append(extra, fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: p%02d}\nspec:\n  containers: [{name: c, image: i}]\n", i))
	}
	f := filepath.Join(t.TempDir(), "extra.yaml")
	os.WriteFile(f, []byte(strings.Join(extra, "---\n")), 0o600)
	var out strings.Builder
	err := sim.Apply(context.Background(), st.Name, &out, f)
	if err == nil || !strings.Contains(err.Error(), "vsw-emu000000000000000h") {
		t.Fatalf("ADD with the only vswitch exhausted: %v, want an error naming vsw-emu000000000000000h", err)
	}
	t.Logf("ADD error: %v", err)
	st = reload(t, st)
	checkPodsOnENIs(t, st, dump(t, st))
}

// BenchmarkENIAdd measures a pod's setup in ENI multi-IP mode (namespace,
// CNI ADD through the real plugin, agent, cloud) with a warm pool (idle IPs
// ready: no API call) and a cold one (pool bounds 0: every ADD waits for an
// AssignPrivateIpAddresses), one pod at a time, and the API calls per pod.
// Run: go test -run '^$' -bench ENIAdd -benchtime 20x ./sim/
func BenchmarkENIAdd(b *testing.B) {
	for _, c := range []struct {
		name     string
		min, max int
	}{{"warm", 10, 20}, {"cold", 0, 0}} {
		b.Run(c.name, func(b *testing.B) {
			cluster := fmt.Sprintf("apiVersion: terway/v1\nkind: Config\nminPoolSize: %d\nmaxPoolSize: %d\n---\napiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n", c.min, c.max)
			st := upENIBench(b, "b"+c.name, cluster)
			// The pods' objects reach the agent before the timed ADDs, as a
			// kubelet's ADD follows the API server's watch; and the warm pool
			// fills.
			dir := b.TempDir()
			podFile := func(i int) string { return filepath.Join(dir, fmt.Sprintf("p%03d.yaml", i)) }
			const staged = 30 // all the instance holds: run with -benchtime 20x
			for i := range staged {
				body := fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: p%03d}\nspec:\n  nodeName: eni-node\n  containers: [{name: c, image: i}]\n", i)
				os.WriteFile(podFile(i), []byte(body), 0o600)
				os.WriteFile(filepath.Join(st.Dir, "inputs", fmt.Sprintf("pod_app_p%03d.yaml", i)), []byte(body), 0o600)
			}
			time.Sleep(3 * time.Second)
			before := dumpCalls(b, st)
			i := 0
			for b.Loop() {
				if i == staged {
					b.Fatalf("more than %d ADDs: run with -benchtime 20x", staged)
				}
				f := podFile(i)
				i++
				var out strings.Builder
				if err := sim.Apply(context.Background(), st.Name, &out, f); err != nil {
					b.Fatal(err)
				}
				if c.min > 0 && i%c.min == 0 {
					b.StopTimer()
					time.Sleep(2 * time.Second) // the pool refills between bursts, as between pod waves
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(dumpCalls(b, st)-before)/float64(i), "apicalls/pod")
		})
	}
}

func upENIBench(b *testing.B, short, yaml string) *sim.State {
	b.Helper()
	nstest.RequireRoot(b)
	dir := b.TempDir()
	os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(yaml), 0o600)
	name := simName(b, short)
	b.Cleanup(func() { _ = sim.Down(name) })
	st, err := sim.Up(context.Background(), sim.Options{Cluster: dir, Name: name, BinDir: binaries(b), Mode: "eni-multi-ip"})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

func dumpCalls(b *testing.B, st *sim.State) int {
	d, err := st.EmulatorDump(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, c := range d.Calls {
		n += c
	}
	return n
}

// TestENIPoolWaitsForFirstReconcile: the ENI reconciler's pool passes
// (here the pre-warm of minPoolSize addresses) start only after the
// agent's first full reconcile. Until then an address a DEL freed before
// a restart may still be in other pods' peer sets, and a pass could give
// it back to the cloud as idle (agent/cni_cloud.go, startCloud).
func TestENIPoolWaitsForFirstReconcile(t *testing.T) {
	cluster := "apiVersion: terway/v1\nkind: Config\nminPoolSize: 4\nmaxPoolSize: 8\n---\napiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n"
	st := upENI(t, "enifirst", cluster)
	logPath := filepath.Join(st.Dir, "logs", "terwayd.log")
	const reconciled, passes = "first full reconcile done", "ENI pool passes start"
	poolActions := []string{"ENI created", "IPs assigned", "IPs unassigned", "ENI deleted"}
	var log string
	firstAction := -1
	for deadline := time.Now().Add(20 * time.Second); firstAction < 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		data, err := os.ReadFile(logPath)
		if err != nil {
			t.Fatal(err)
		}
		log = string(data)
		for _, a := range poolActions {
			if i := strings.Index(log, a); i >= 0 && (firstAction < 0 || i < firstAction) {
				firstAction = i
			}
		}
	}
	if firstAction < 0 {
		t.Fatalf("no pool pass pre-warmed the pool (minPoolSize 4) within 20 s; terwayd log:\n%s", tail(log, 30))
	}
	r, p := strings.Index(log, reconciled), strings.Index(log, passes)
	if r < 0 || p < r || firstAction < p {
		t.Fatalf("the pool's first action (offset %d) came before the first full reconcile (%d) or the start of the pool passes (%d); terwayd log:\n%s",
			firstAction, r, p, tail(log, 40))
	}
}
