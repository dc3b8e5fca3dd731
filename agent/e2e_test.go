package agent_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/spec"
)

const resync = 2 * time.Second

func namespacesYAML(names ...string) string {
	var docs []string
	for _, n := range names {
		docs = append(docs, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {ns: %s}}\n", n, n))
	}
	return strings.Join(docs, "---\n")
}

// eventually polls cond until it holds or the bound passes.
func eventually(t *testing.T, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

func TestAgentEndToEnd(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, resync)
	c.writeInput("namespaces.yaml", namespacesYAML("x", "y", "z"))
	var pods []string
	var yaml []string
	for i := 0; i < 20; i++ {
		ns := []string{"x", "y", "z"}[i%3]
		name := fmt.Sprintf("p%d", i)
		pods = append(pods, ns+"/"+name)
		yaml = append(yaml, c.podYAML(ns, name, map[string]string{"app": name}, nil))
	}
	c.writeInput("pods.yaml", strings.Join(yaml, "---\n"))

	// ADD 20 pods through libcni, as containerd does.
	byKey := map[string]*podNS{}
	seen := map[string]string{}
	for _, key := range pods {
		ns, name, _ := strings.Cut(key, "/")
		p, err := c.add(ns, name)
		if err != nil {
			t.Fatalf("ADD %s: %v", key, err)
		}
		if other, dup := seen[p.ip]; dup {
			t.Fatalf("%s and %s both got %s", other, key, p.ip)
		}
		seen[p.ip] = key
		byKey[key] = p
		serveAll(t, p)
	}
	for _, from := range pods[:5] {
		for _, to := range pods {
			if from != to {
				reachable(t, byKey[from], byKey[to], "tcp", true)
				reachable(t, byKey[from], byKey[to], "udp", true)
			}
		}
	}
	if s, err := traffic.Serve(c.node, nodeIP+":80", "tcp"); err == nil {
		t.Cleanup(s.Close)
		if !traffic.Probe(byKey[pods[0]].netns, "tcp", nodeIP+":80", 2*time.Second) {
			t.Error("pod cannot reach the node")
		}
	} else {
		t.Fatal(err)
	}

	t.Run("metrics", func(t *testing.T) {
		code, body := c.get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("/metrics: HTTP %d", code)
		}
		for _, series := range []string{
			`terway_cni_request_duration_seconds_count{command="add",result="ok"} 20`,
			"terway_reconcile_duration_seconds_count", "terway_plan_operations", "terway_allocations 20",
			// Read from the kernel's rule counters: 20 well-behaved pods, nothing spoofed.
			"terway_pod_spoofed_packets_total 0",
			`terway_nft_full_checks_total{how="read"}`, `terway_nft_full_checks_total{how="generation"}`,
			"terway_pods_departing 0",
		} {
			if !strings.Contains(body, series) {
				t.Errorf("/metrics lacks %q", series)
			}
		}
	})

	t.Run("CHECK passes, fails after tampering, and the resync repairs", func(t *testing.T) {
		p := byKey["x/p0"]
		for _, key := range pods {
			if err := c.check(byKey[key]); err != nil {
				t.Fatalf("CHECK %s: %v", key, err)
			}
		}
		nstest.Run(t, c.node, "ip", "route", "del", p.ip+"/32")
		err := c.check(p)
		if err == nil || !strings.Contains(err.Error(), "+ route "+p.ip+"/32") {
			t.Fatalf("CHECK after deleting the pod's route: %v; want a difference naming the route", err)
		}
		took := eventually(t, 3*resync, "resync repairs the route", func() bool { return c.check(p) == nil })
		t.Logf("drift repaired %s after CHECK saw it (resync interval %s)", took.Round(time.Millisecond), resync)
	})

	t.Run("live NetworkPolicy: added, changed, deleted", func(t *testing.T) {
		target, friend, stranger := byKey["x/p0"], byKey["x/p3"], byKey["y/p1"]
		policy := func(from string) string {
			return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: p0-ingress}
spec:
  podSelector: {matchLabels: {app: p0}}
  ingress: [{from: [{podSelector: {matchLabels: {app: %s}}}], ports: [{port: 80}]}]
`, from)
		}
		c.writeInput("policy.yaml", policy("p3"))
		took := eventually(t, 2*resync, "policy blocks the stranger", func() bool { return !probe(stranger, target, "tcp") })
		t.Logf("policy added: enforced after %s", took.Round(time.Millisecond))
		reachable(t, friend, target, "tcp", true)
		reachable(t, friend, target, "udp", false) // only TCP 80 is allowed
		c.writeInput("policy.yaml", policy("p6"))
		took = eventually(t, 2*resync, "changed policy blocks the old friend", func() bool { return !probe(friend, target, "tcp") })
		t.Logf("policy changed: enforced after %s", took.Round(time.Millisecond))
		reachable(t, byKey["x/p6"], target, "tcp", true)
		c.removeInput("policy.yaml")
		took = eventually(t, 2*resync, "deleted policy opens the pod", func() bool { return probe(stranger, target, "tcp") })
		t.Logf("policy deleted: open after %s", took.Round(time.Millisecond))
	})

	t.Run("invalid bandwidth annotation fails only that pod", func(t *testing.T) {
		c.writeInput("bad.yaml", c.podYAML("x", "bad", nil, map[string]string{"kubernetes.io/ingress-bandwidth": "10x"}))
		p, err := c.add("x", "bad")
		if err == nil || !strings.Contains(err.Error(), "kubernetes.io/ingress-bandwidth") || !strings.Contains(err.Error(), `"10x"`) {
			t.Fatalf("ADD of a pod with ingress-bandwidth 10x: %v; want an error naming the annotation and value", err)
		}
		if out := nstest.Run(t, p.netns, "ip", "-o", "link"); strings.Contains(out, "eth0") {
			t.Errorf("the failed pod got an eth0:\n%s", out)
		}
		for _, key := range pods {
			if err := c.check(byKey[key]); err != nil {
				t.Errorf("CHECK %s after the failed ADD: %v", key, err)
			}
		}
		c.removeInput("bad.yaml")
	})

	t.Run("DEL removes every object of the pod; GC the rest", func(t *testing.T) {
		p := byKey["z/p2"]
		veth := spec.HostVethName("z/p2")
		must(t, c.del(p))
		must(t, c.del(p)) // idempotent
		if out := nstest.Run(t, c.node, "ip", "-o", "link"); strings.Contains(out, veth) {
			t.Errorf("host veth %s still there after DEL", veth)
		}
		if out := nstest.Run(t, c.node, "ip", "route", "show", "table", "all", "proto", "250"); strings.Contains(out, p.ip+" ") {
			t.Errorf("route to %s still there after DEL:\n%s", p.ip, out)
		}
		if out := nstest.Run(t, c.node, "nft", "list", "table", "inet", "terway"); strings.Contains(out, p.ip+" ") {
			t.Errorf("nft still mentions %s after DEL", p.ip)
		}
		// GC: the runtime only knows x/p0 and x/p3; everything else goes.
		valid := []*podNS{byKey["x/p0"], byKey["x/p3"]}
		must(t, c.gc(valid))
		eventually(t, 3*resync, "GC removed the other pods' veths", func() bool {
			out := nstest.Run(t, c.node, "ip", "-o", "link")
			return strings.Count(out, ": "+spec.HostVethPrefix) == 2
		})
		for _, p := range valid {
			if err := c.check(p); err != nil {
				t.Errorf("CHECK %s/%s after GC: %v", p.ns, p.name, err)
			}
		}
		if err := c.status(); err != nil {
			t.Errorf("STATUS of a ready agent: %v", err)
		}
	})

	t.Run("kill -9 and restart: nothing re-allocated, empty plan, traffic flows", func(t *testing.T) {
		a, b := byKey["x/p0"], byKey["x/p3"]
		var stop atomic.Bool
		var maxGap atomic.Int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := time.Now()
			for !stop.Load() {
				if traffic.Probe(b.netns, "tcp", a.ip+":80", 500*time.Millisecond) {
					if gap := time.Since(last); gap > time.Duration(maxGap.Load()) {
						maxGap.Store(int64(gap))
					}
					last = time.Now()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
		c.killAgent()
		time.Sleep(500 * time.Millisecond)
		c.startAgent(resync, true)
		code, plan := c.get("/plan")
		if code != http.StatusOK || plan != "" {
			t.Errorf("plan after restart (HTTP %d):\n%s", code, plan)
		}
		again, err := c.readd(a)
		if err != nil || again != a.ip {
			t.Errorf("ADD retried after restart gave %q (%v), want the same %s", again, err, a.ip)
		}
		stop.Store(true)
		wg.Wait()
		t.Logf("longest gap between successful probes across kill -9 and restart: %s", time.Duration(maxGap.Load()).Round(time.Millisecond))
		if gap := time.Duration(maxGap.Load()); gap > 2*time.Second {
			t.Errorf("traffic stopped for %s while the agent restarted", gap)
		}
	})
}

func serveAll(t *testing.T, p *podNS) {
	t.Helper()
	s, err := traffic.Serve(p.netns, p.ip+":80", "tcp", "udp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
}

func probe(from, to *podNS, proto string) bool {
	return traffic.Probe(from.netns, proto, to.ip+":80", 600*time.Millisecond)
}

func reachable(t *testing.T, from, to *podNS, proto string, want bool) {
	t.Helper()
	if got := probe(from, to, proto); got != want {
		t.Errorf("%s %s/%s -> %s/%s (%s): reachable=%v, want %v", proto, from.ns, from.name, to.ns, to.name, to.ip, got, want)
	}
}

// TestAgentNotReadyWithoutNode: without its Node object the agent is not
// ready: STATUS says so with CNI code 50 and ADD asks to try again later;
// once the Node appears, both succeed.
func TestAgentNotReadyWithoutNode(t *testing.T) {
	nstest.RequireRoot(t)
	c := newClusterWith(t, resync, false)
	c.writeInput("pods.yaml", c.podYAML("x", "early", nil, nil))
	eventually(t, 20*time.Second, "agent answers on its socket", func() bool {
		err := c.status()
		return err != nil && strings.Contains(err.Error(), "not ready")
	})
	if code, _ := c.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz without a Node = %d, want 503", code)
	}
	err := c.status()
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 50 {
		t.Errorf("STATUS without a Node: %v; want CNI error 50", err)
	}
	c.writeNode()
	c.waitReady()
	if err := c.status(); err != nil {
		t.Errorf("STATUS once the Node exists: %v", err)
	}
	if _, err := c.add("x", "early"); err != nil {
		t.Errorf("ADD once ready: %v", err)
	}
}
