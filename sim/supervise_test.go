package sim_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/sim"
	"github.com/terway-reconciler/terway/spec"
)

// The sim plays the kubelet: a killed agent is restarted (the DaemonSet's
// restart policy) and a DEL that fails while the agent is down is retried
// until it succeeds (the kubelet's pod teardown).
func TestAgentKilledIsRestarted(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(smallCluster), 0o600); err != nil {
		t.Fatal(err)
	}
	name := simName(t, "restart")
	t.Cleanup(func() {
		if err := sim.Down(name); err != nil {
			t.Errorf("sim down: %v", err)
		}
		if left := leftovers(name); len(left) != 0 {
			t.Errorf("left behind after sim down: %v", left)
		}
	})
	ctx := context.Background()
	// A back-off long enough that the DEL below surely meets the agent
	// down.
	st, err := sim.Up(ctx, sim.Options{Cluster: dir, Name: name, BinDir: binaries(t), Resync: 2 * time.Second,
		RestartBackoff: 2 * time.Second, RestartBackoffMax: 4 * time.Second})
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	first, err := st.Agent()
	if err != nil || first.PID != st.AgentPID {
		t.Fatalf("agent record %+v (%v), want pid %d", first, err, st.AgentPID)
	}

	// kill -9 the agent the sim recorded: the supervisor restarts it and a
	// new pod's ADD works.
	kill(t, first.PID)
	second, err := st.WaitAgentRestarted(ctx, first.PID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if second.Restarts != 1 {
		t.Fatalf("after one kill: %+v, want restart 1", second)
	}
	applyYAML(t, st, "apiVersion: v1\nkind: Pod\nmetadata: {namespace: shop, name: late}\nspec:\n  containers: [{name: c, image: i}]\n", false)
	st = reload(t, st)
	late := st.Pod("shop/late")
	if late == nil || late.IP == "" {
		t.Fatalf("ADD after the restart: pod shop/late not up: %+v", st.Pods)
	}
	hostVeth := spec.HostVethName("shop/late")
	if out := nstest.Run(t, st.NodeNetns, "ip", "-o", "link", "show"); !strings.Contains(out, hostVeth+"@") {
		t.Fatalf("after ADD, no host veth %s in the node namespace:\n%s", hostVeth, out)
	}

	// A DEL while the agent is down succeeds once it is back.
	kill(t, second.PID)
	start := time.Now()
	applyYAML(t, st, "apiVersion: v1\nkind: Pod\nmetadata: {namespace: shop, name: late}\n", true)
	third, err := st.Agent()
	if err != nil {
		t.Fatal(err)
	}
	if third.PID == second.PID || !third.Started.After(start) {
		t.Fatalf("the DEL did not meet the agent down (agent %+v, DEL started %s)", third, start)
	}
	st = reload(t, st)
	if st.Pod("shop/late") != nil {
		t.Fatal("pod shop/late still in the sim after its delete")
	}
	if out := nstest.Run(t, st.NodeNetns, "ip", "-o", "link", "show"); strings.Contains(out, hostVeth+"@") {
		t.Fatalf("after the retried DEL, host veth %s is still in the node namespace:\n%s", hostVeth, out)
	}
	if out := nstest.Run(t, st.NodeNetns, "ip", "route", "show", late.IP); strings.TrimSpace(out) != "" {
		t.Fatalf("after the retried DEL, a route to %s is left: %s", late.IP, out)
	}

	// down ends the supervisor first: nothing restarts the agent after it.
	if err := sim.Down(name); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // longer than a restart's back-off
	if left := leftovers(name); len(left) != 0 {
		t.Fatalf("after sim down: %v", left)
	}
}

// kill sends SIGKILL to pid and waits until it is gone.
func kill(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	for i := 0; i < 200; i++ {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d still alive 2s after SIGKILL", pid)
}

// An exclusive-ENI pod deleted while the agent is down: its object is gone
// when the agent starts again, its DEL comes after. The ENI must still go
// back to the cloud (the restarted agent used to hold it under the
// attachment's key, and the DEL's release by the pod's key was refused).
func TestExclusiveENIDeletedWhileAgentDown(t *testing.T) {
	nstest.RequireRoot(t)
	dir := t.TempDir()
	cluster := "apiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n---\n" +
		"apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: own}\nspec:\n  containers: [{name: c, image: i, resources: {limits: {aliyun/eni: \"1\"}}}]\n"
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(cluster), 0o600); err != nil {
		t.Fatal(err)
	}
	name := simName(t, "exdel")
	t.Cleanup(func() {
		if err := sim.Down(name); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	ctx := context.Background()
	reserved := 2 // the rest of the instance's ENIs for app/own
	st, err := sim.Up(ctx, sim.Options{Cluster: dir, Name: name, BinDir: binaries(t), Mode: "eni-multi-ip", ReservedENIsForMultiIP: &reserved,
		Resync: 2 * time.Second, RestartBackoff: 2 * time.Second, RestartBackoffMax: 4 * time.Second})
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	own := st.Pod("app/own")
	var eniID string
	for _, e := range ours(dump(t, st)) {
		if e.PrimaryIP == own.IP {
			eniID = e.ID
		}
	}
	if eniID == "" {
		t.Fatalf("pod app/own (%s) has no exclusive ENI", own.IP)
	}
	agent, err := st.Agent()
	if err != nil {
		t.Fatal(err)
	}
	kill(t, agent.PID)
	applyYAML(t, st, "apiVersion: v1\nkind: Pod\nmetadata: {namespace: app, name: own}\n", true)
	deadline := time.Now().Add(45 * time.Second)
	for {
		gone := true
		for _, e := range dump(t, st).ENIs {
			gone = gone && e.ID != eniID
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exclusive ENI %s of pod app/own still exists 45s after its DEL across an agent restart", eniID)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
