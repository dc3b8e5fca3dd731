package agent_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/internal/nstest"
)

// foreignOwner replaces table inet terway in the node namespace with an
// empty one created with `flags owner` by another process (nft -i, which
// keeps its netlink socket for the session): only that process may change
// the table, and the kernel removes it when the process exits. It returns
// the function that ends the process.
func foreignOwner(t *testing.T, node string) func() {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", nstest.Name(node), "nft", "-i")
	stdin, err := cmd.StdinPipe()
	must(t, err)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	ended := false
	end := func() {
		if ended {
			return
		}
		ended = true
		_ = stdin.Close() // nft -i ends at the end of its input
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(end)
	_, err = io.WriteString(stdin, "delete table inet terway\nadd table inet terway { flags owner; }\n")
	must(t, err)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := nstest.Exec(node, "nft", "list", "table", "inet", "terway")
		if strings.Contains(out, "flags owner") {
			return end
		}
		if time.Now().After(deadline) {
			t.Fatalf("the foreign owner table did not appear:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentReadyzFollowsEnforcement is defect 4 of issue 12: another
// process takes table inet terway with `flags owner`, so the agent cannot
// write it and a deny-all ingress policy is not enforced. /readyz must say
// so (503, naming the nftables table) within one sync interval, /status
// lists the failing item, and once the process exits (its table goes with
// it) the agent writes its table again: /readyz is 200 and the policy
// blocks traffic again.
func TestAgentReadyzFollowsEnforcement(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, resync)
	c.writeInput("namespaces.yaml", namespacesYAML("x", "y"))
	c.writeInput("pods.yaml", c.podYAML("x", "target", map[string]string{"app": "target"}, nil)+"---\n"+
		c.podYAML("y", "client", map[string]string{"app": "client"}, nil))
	target, err := c.add("x", "target")
	must(t, err)
	client, err := c.add("y", "client")
	must(t, err)
	serveAll(t, target)
	reachable(t, client, target, "tcp", true)
	c.writeInput("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress]}
`)
	eventually(t, 2*resync, "deny-all blocks the client", func() bool { return !probe(client, target, "tcp") })
	if code, body := c.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before the loss: %d %s", code, body)
	}

	release := foreignOwner(t, c.node)
	lost := time.Now()
	// One sync interval: the next full resync reads the table back, fails
	// to write it, and says so. (The allowance covers that sync's own
	// plan and the poll.)
	var body string
	took := eventually(t, resync+time.Second, "/readyz 503 after losing the nftables table", func() bool {
		var code int
		code, body = c.get("/readyz")
		return code == http.StatusServiceUnavailable
	})
	t.Logf("/readyz 503 %s after the table was taken (sync interval %s):\n%s", took.Round(time.Millisecond), resync, body)
	if !strings.Contains(body, "nft") || !strings.Contains(body, "not permitted") {
		t.Errorf("/readyz body does not name the failing nftables table and its error:\n%s", body)
	}
	if !probe(client, target, "tcp") {
		t.Errorf("the client is blocked while the foreign table replaces ours; the test does not show the loss")
	}
	code, raw := c.get("/status")
	var st agent.Status
	if code != http.StatusOK || json.Unmarshal([]byte(raw), &st) != nil {
		t.Fatalf("/status: HTTP %d %s", code, raw)
	}
	found := false
	for _, it := range st.Failing {
		if it.Kind == "nft" && it.Key == "table inet terway" && it.Attempts >= 1 && strings.Contains(it.Error, "not permitted") &&
			!it.Since.Before(lost.Add(-time.Second)) {
			found = true
		}
	}
	if st.Ready || !found {
		t.Errorf("/status while the table is taken: ready=%v, failing %+v; want not ready and the nft table item", st.Ready, st.Failing)
	}

	release()
	took = eventually(t, 3*resync, "/readyz 200 after the foreign process exits", func() bool {
		code, _ := c.get("/readyz")
		return code == http.StatusOK
	})
	t.Logf("/readyz 200 %s after the foreign owner exited", took.Round(time.Millisecond))
	reachable(t, client, target, "tcp", false)
	out := nstest.Run(t, c.node, "nft", "list", "table", "inet", "terway")
	if strings.Contains(out, "flags owner") || !strings.Contains(out, target.ip) {
		t.Errorf("after recovery the table is not the agent's or lacks the target %s:\n%s", target.ip, out)
	}
	if code, raw := c.get("/status"); code != http.StatusOK || strings.Contains(raw, `"kind": "nft"`) {
		t.Errorf("/status after recovery still lists the nft item:\n%s", raw)
	}
	// Standalone, the Node's Events go to the log: one loss, one recovery.
	data, err := os.ReadFile(c.agentLog.Name())
	must(t, err)
	logText := string(data)
	if n, m := strings.Count(logText, `"reason":"`+agent.ReasonEnforcementLost+`"`), strings.Count(logText, `"reason":"`+agent.ReasonEnforcementRestored+`"`); n != 1 || m != 1 {
		t.Errorf("node events in the log: %d %s, %d %s; want one each", n, agent.ReasonEnforcementLost, m, agent.ReasonEnforcementRestored)
	}
}
