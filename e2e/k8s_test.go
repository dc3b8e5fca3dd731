package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/internal/kubelet"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// resync is the agent's full-resync period here: every API write must reach
// the kernel within it (in practice the watch does it at once).
const resync = 3 * time.Second

// TestKubernetes drives one node through a real API server: 20 pods in 3
// namespaces, NetworkPolicy and label changes made with kubectl, a
// bandwidth change, a pod deletion, Events for a bad annotation, an API
// server restart and an agent restart. Each change's latency from the API
// write to the kernel is logged (LATENCY lines and a summary).
func TestKubernetes(t *testing.T) {
	e := newEnv(t, resync)
	ctx := context.Background()
	admin := e.cp.Admin
	nsA := e.createNamespace("a", map[string]string{"e2e": "a"})
	nsB := e.createNamespace("b", map[string]string{"e2e": "b"})
	nsC := e.createNamespace("c", map[string]string{"e2e": "c"})
	nss := []string{nsA, nsB, nsC}
	key := func(i int) (string, string) { return nss[i%3], fmt.Sprintf("p%d", i) }

	// 20 pods, round robin over the namespaces: a holds p0 p3 p6 p9 ...
	start := time.Now()
	for i := 0; i < 20; i++ {
		ns, name := key(i)
		var ann map[string]string
		if name == "p9" {
			ann = map[string]string{"kubernetes.io/ingress-bandwidth": "10M"}
		}
		_, err := admin.CoreV1().Pods(ns).Create(ctx, podSpec(ns, name, map[string]string{"app": name}, ann), metav1.CreateOptions{})
		must(t, err)
	}
	pods := map[string]kubelet.Sandbox{}
	ips := map[string]string{}
	cidr := netip.MustParsePrefix(podCIDR)
	for i := 0; i < 20; i++ {
		ns, name := key(i)
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		sb, err := e.kubelet.WaitRunning(wctx, ns, name)
		cancel()
		must(t, err)
		if other, dup := ips[sb.IP]; dup {
			t.Fatalf("pods %s and %s/%s both got %s", other, ns, name, sb.IP)
		}
		if ip, err := netip.ParseAddr(sb.IP); err != nil || !cidr.Contains(ip) {
			t.Fatalf("pod %s/%s got %q, outside the node's podCIDR %s", ns, name, sb.IP, podCIDR)
		}
		ips[sb.IP] = ns + "/" + name
		pods[ns+"/"+name] = sb
	}
	t.Logf("20 pods created through the API server and Running with their network in %s", time.Since(start).Round(time.Millisecond))
	for k, sb := range pods {
		ns, name, _ := strings.Cut(k, "/")
		p, err := admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		must(t, err)
		if p.Status.PodIP != sb.IP || p.Status.Phase != "Running" {
			t.Errorf("pod %s: status podIP %q phase %s; want %s Running", k, p.Status.PodIP, p.Status.Phase, sb.IP)
		}
	}
	pod := func(ns, name string) kubelet.Sandbox { return pods[ns+"/"+name] }
	for i := 0; i < 5; i++ {
		from := pod(key(i))
		for j := 0; j < 20; j++ {
			if i != j {
				e.reachable(from, pod(key(j)), "tcp", true)
				e.reachable(from, pod(key(j)), "udp", true)
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	e.waitPlanEmpty(2 * resync)

	var lats []latency
	target, friend, stranger, other := pod(nsA, "p0"), pod(nsA, "p3"), pod(nsB, "p1"), pod(nsC, "p2")
	policyYAML := func(from string) string {
		return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: %s, name: p0-ingress}
spec:
  podSelector: {matchLabels: {app: p0}}
  ingress:
  - from: %s
    ports: [{protocol: TCP, port: 80}]
`, nsA, from)
	}
	// nftChanged is a kernel check for policy changes: the agent's table
	// differs from what it was before the write.
	nftChanged := func() func() bool {
		before := e.nftRuleset()
		return func() bool { return e.nftRuleset() != before }
	}

	t.Run("NetworkPolicy created with kubectl", func(t *testing.T) {
		defer e.as(t)()
		lats = append(lats, e.measure(change{
			what: "NetworkPolicy created (kubectl apply)", watch: watchPolicy(admin, nsA, "p0-ingress"),
			write:  func() { e.kubectlStdin(policyYAML("[{podSelector: {matchLabels: {app: p3}}}]"), "apply", "-f", "-") },
			kernel: nftChanged(),
		}))
		e.reachable(stranger, target, "tcp", false)
		e.reachable(friend, target, "tcp", true)
		e.reachable(friend, target, "udp", false) // only TCP 80 is allowed
		e.reachable(target, stranger, "tcp", true)
	})

	t.Run("NetworkPolicy edited with kubectl", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		lats = append(lats, e.measure(change{
			what: "NetworkPolicy edited (kubectl apply)", watch: watchPolicy(admin, nsA, "p0-ingress"),
			write: func() {
				e.kubectlStdin(policyYAML("[{podSelector: {matchLabels: {role: friend}}}, {namespaceSelector: {matchLabels: {team: blue}}}]"), "apply", "-f", "-")
			},
			kernel: nftChanged(),
		}))
		e.reachable(friend, target, "tcp", false) // p3 is no longer named
		e.reachable(stranger, target, "tcp", false)
	})

	t.Run("namespace relabelled", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		lats = append(lats, e.measure(change{
			what: "namespace relabelled (kubectl label ns)", watch: watchNamespace(admin, nsB),
			write:  func() { e.kubectl("label", "namespace", nsB, "team=blue") },
			kernel: nftChanged(),
		}))
		e.reachable(stranger, target, "tcp", true) // every pod of b now
		e.reachable(pod(nsB, "p7"), target, "tcp", true)
		e.reachable(other, target, "tcp", false)
	})

	t.Run("pod relabelled", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		lats = append(lats, e.measure(change{
			what: "pod relabelled (kubectl label pod)", watch: watchPod(admin, nsA, "p6"),
			write:  func() { e.kubectl("label", "pod", "-n", nsA, "p6", "role=friend") },
			kernel: nftChanged(),
		}))
		e.reachable(pod(nsA, "p6"), target, "tcp", true)
		e.reachable(friend, target, "tcp", false)
	})

	t.Run("bandwidth annotation changed", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		veth := spec.HostVethName(nsA + "/p9")
		qdisc := func() string {
			out, _ := nstest.Exec(e.node, "tc", "qdisc", "show", "dev", veth)
			return out
		}
		if q := qdisc(); !strings.Contains(q, "tbf") || !strings.Contains(q, "rate 10Mbit") {
			t.Fatalf("pod %s/p9 created with ingress-bandwidth 10M: qdiscs on %s:\n%s", nsA, veth, q)
		}
		lats = append(lats, e.measure(change{
			what: "bandwidth annotation 10M -> 20M (kubectl annotate)", watch: watchPod(admin, nsA, "p9"),
			write: func() {
				e.kubectl("annotate", "pod", "-n", nsA, "p9", "--overwrite", "kubernetes.io/ingress-bandwidth=20M")
			},
			kernel: func() bool { return strings.Contains(qdisc(), "rate 20Mbit") },
		}))
	})

	t.Run("NetworkPolicy deleted with kubectl", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		lats = append(lats, e.measure(change{
			what: "NetworkPolicy deleted (kubectl delete)", watch: watchPolicy(admin, nsA, "p0-ingress"),
			write:  func() { e.kubectl("delete", "networkpolicy", "-n", nsA, "p0-ingress") },
			kernel: nftChanged(),
		}))
		e.reachable(other, target, "tcp", true)
		e.reachable(friend, target, "udp", true)
	})

	t.Run("pod deleted", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		gone := pod(nsB, "p4")
		veth := spec.HostVethName(nsB + "/p4")
		lats = append(lats, e.measure(change{
			what: "pod deleted (kubectl delete pod)", watch: watchPod(admin, nsB, "p4"),
			// --wait=false: the pod object goes only when the kubelet
			// stand-in has torn the sandbox down; the kernel is what counts.
			write: func() { e.kubectl("delete", "pod", "-n", nsB, "p4", "--wait=false") },
			kernel: func() bool {
				_, err := nstest.Exec(e.node, "ip", "link", "show", "dev", veth)
				return err != nil
			},
		}))
		if out := nstest.Run(t, e.node, "ip", "route", "show", "proto", "250"); strings.Contains(out, gone.IP+" ") {
			t.Errorf("route to deleted pod %s still there:\n%s", describe(gone), out)
		}
		eventually(t, 10*time.Second, "pod object removed after its sandbox", func() bool {
			_, err := admin.CoreV1().Pods(nsB).Get(ctx, "p4", metav1.GetOptions{})
			return err != nil
		})
		delete(pods, nsB+"/p4")
	})

	t.Run("Events for a bad annotation", func(t *testing.T) {
		defer e.as(t)()
		testEvents(t, e, nsA, pods)
	})

	t.Run("API server restart", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		// Traffic between two pods must not stop while the API server is
		// away: nothing may be pruned from a stale-but-synced cache.
		var stop atomic.Bool
		var ok, failed atomic.Int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if probe(other, target, "tcp", time.Second) {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		down := time.Now()
		e.cp.StopAPIServer()
		stopped := time.Since(down)
		// At least one full resync runs with the API server gone.
		time.Sleep(resync + time.Second)
		if n, body := e.planOps(); n != 0 {
			t.Errorf("plan while the API server is down: %d operations:\n%s", n, body)
		}
		if code, _, body := e.get("/readyz"); code != 200 {
			t.Errorf("/readyz while the API server is down: HTTP %d %s; the cache is still the truth", code, body)
		}
		if links := nstest.Run(t, e.node, "ip", "-o", "link"); strings.Count(links, ": "+spec.HostVethPrefix) != len(pods) {
			t.Errorf("host veths while the API server is down: want %d:\n%s", len(pods), links)
		}
		up := time.Now()
		must(t, e.cp.StartAPIServer())
		ready := time.Now()
		t.Logf("API server down for %s (stop %s, wait %s, start until /readyz %s)", ready.Sub(down).Round(time.Millisecond),
			stopped.Round(time.Millisecond), resync+time.Second, ready.Sub(up).Round(time.Millisecond))
		stop.Store(true)
		wg.Wait()
		if failed.Load() != 0 {
			t.Errorf("%d of %d probes %s -> %s failed across the API server restart", failed.Load(), ok.Load()+failed.Load(), describe(other), describe(target))
		}

		// The informers reconnect: a write after the restart reaches the
		// kernel. Allow for client-go's reconnect backoff.
		lats = append(lats, e.measure(change{
			what: "NetworkPolicy created after API restart", watch: watchPolicy(admin, nsA, "deny-p0"),
			write: func() {
				e.kubectlStdin(fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: %s, name: deny-p0}
spec: {podSelector: {matchLabels: {app: p0}}, policyTypes: [Ingress]}
`, nsA), "apply", "-f", "-")
			},
			kernel: nftChanged(), bound: 30 * time.Second,
		}))
		e.reachable(other, target, "tcp", false)
		e.kubectl("delete", "networkpolicy", "-n", nsA, "deny-p0")
		eventually(t, resync, "deny-p0 deleted: p0 open again", func() bool { return probe(other, target, "tcp", 500*time.Millisecond) })
		created := time.Now()
		_, err := admin.CoreV1().Pods(nsC).Create(ctx, podSpec(nsC, "late", map[string]string{"app": "late"}, nil), metav1.CreateOptions{})
		must(t, err)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		late, err := e.kubelet.WaitRunning(wctx, nsC, "late")
		must(t, err)
		// Includes the stand-in's own informer reconnecting (client-go
		// backs off up to ~30 s while the API server is away).
		t.Logf("pod created %s after the API server came back: Running %s later",
			created.Sub(ready).Round(time.Millisecond), time.Since(created).Round(time.Millisecond))
		pods[nsC+"/late"] = late
		e.reachable(late, target, "tcp", true)
	})

	t.Run("agent restart", func(t *testing.T) {
		defer e.as(t)()
		e.waitPlanEmpty(2 * resync)
		before := map[string]string{}
		for k, sb := range pods {
			before[k] = sb.IP
		}
		e.killAgent()
		took := e.startAgent()
		t.Logf("agent killed (SIGKILL) and restarted: ready in %s", took.Round(time.Millisecond))
		if n, body := e.planOps(); n != 0 {
			t.Errorf("plan after the restart: %d operations, want none:\n%s", n, body)
		}
		for k, ip := range before {
			if got := podIPInNetns(t, pods[k]); got != ip {
				t.Errorf("pod %s: eth0 has %s after the agent restart, had %s", k, got, ip)
			}
		}
		_, _, metrics := e.get("/metrics")
		if want := fmt.Sprintf("terway_allocations %d\n", len(before)); !strings.Contains(metrics, want) {
			t.Errorf("/metrics after the restart lacks %q: an allocation was lost or doubled", strings.TrimSpace(want))
		}
		_, err := admin.CoreV1().Pods(nsB).Create(ctx, podSpec(nsB, "after", map[string]string{"app": "after"}, nil), metav1.CreateOptions{})
		must(t, err)
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		after, err := e.kubelet.WaitRunning(wctx, nsB, "after")
		must(t, err)
		for k, ip := range before {
			if ip == after.IP {
				t.Errorf("new pod after the restart got %s, still held by %s", ip, k)
			}
		}
		e.reachable(after, target, "tcp", true)
		e.reachable(friend, target, "udp", true)
	})

	t.Logf("summary (agent resync interval %s):\n%s", resync, summary(lats))
}
