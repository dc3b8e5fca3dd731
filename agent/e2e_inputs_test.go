package agent_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestAgentServesItsInputs: GET /inputs gives the objects the agent
// renders from. What explain says from them (terwayctl explain --agent)
// equals what it says from the same objects given as files (explain -f:
// the agent's input folder and the allocations the CNI results gave);
// the document rendered from them is the one the agent applied (a fresh
// engine plans nothing against the node); and the endpoint refuses writes.
func TestAgentServesItsInputs(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, resync)
	c.writeInput("namespaces.yaml", namespacesYAML("x", "y"))
	c.writeInput("pods.yaml", strings.Join([]string{
		c.podYAML("x", "web", map[string]string{"app": "web"}, nil),
		c.podYAML("x", "db", map[string]string{"app": "db"}, nil),
		c.podYAML("y", "client", map[string]string{"app": "client"}, nil),
	}, "---\n"))
	c.writeInput("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: x, name: db-from-web}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}]
`)
	pods := map[string]*podNS{}
	for _, key := range []string{"x/web", "x/db", "y/client"} {
		ns, name, _ := strings.Cut(key, "/")
		p, err := c.add(ns, name)
		if err != nil {
			t.Fatalf("ADD %s: %v", key, err)
		}
		pods[key] = p
		serveAll(t, p)
	}
	eventually(t, 3*resync, "the policy is enforced", func() bool { return !probe(pods["y/client"], pods["x/db"], "tcp") })
	reachable(t, pods["x/web"], pods["x/db"], "tcp", true)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.dialInNode, Proxy: nil}}
	live, err := load.FromAgent(context.Background(), client, c.health)
	if err != nil {
		t.Fatal(err)
	}
	files, err := load.Paths(c.inputs)
	if err != nil {
		t.Fatal(err)
	}
	for key, p := range pods {
		ns, name, _ := strings.Cut(key, "/")
		files.Allocations = append(files.Allocations, &spec.Allocation{
			Metadata: spec.ObjectMeta{Namespace: ns, Name: name},
			Spec:     spec.AllocationSpec{IP: p.ip, Netns: p.netns, ContainerID: p.containerID, IfName: "eth0", UID: "uid-" + ns + "-" + name},
		})
	}
	liveModel, liveDoc := model(t, live)
	fileModel, _ := model(t, files)

	// Every ordered pair of pods and the node, on the pods' ports and one
	// no pod serves.
	ends := []string{"x/web", "x/db", "y/client", "node"}
	verdicts := map[string]int{}
	n := 0
	for _, from := range ends {
		for _, to := range ends {
			for _, pk := range []explain.PortKey{{Protocol: "tcp", Port: 80}, {Protocol: "udp", Port: 53}, {Protocol: "tcp", Port: 5432}} {
				if from == to {
					continue
				}
				a, b := report(t, liveModel, from, to, pk), report(t, fileModel, from, to, pk)
				if a != b {
					t.Errorf("%s -> %s %s/%d: from /inputs:\n%s\nfrom files:\n%s", from, to, pk.Protocol, pk.Port, a, b)
				}
				first, _, _ := strings.Cut(a, "\n")
				verdicts[first]++
				n++
			}
		}
	}
	t.Logf("%d questions compared between /inputs and files; verdicts %v", n, verdicts)
	if verdicts["allowed"] == 0 || verdicts["denied"] == 0 {
		t.Errorf("verdicts %v: want both allowed and denied answers", verdicts)
	}
	// The answers agree with the traffic sent above.
	if first(report(t, liveModel, "y/client", "x/db", explain.PortKey{Protocol: "tcp", Port: 80})) != "denied" ||
		first(report(t, liveModel, "x/web", "x/db", explain.PortKey{Protocol: "tcp", Port: 80})) != "allowed" {
		t.Error("explain from /inputs disagrees with the traffic probed")
	}

	// What /inputs renders is what the agent applied: a fresh engine,
	// reading the node's kernel state (nftables included), plans nothing.
	reg := netns.NewRegistry(c.node)
	defer reg.Close()
	eventually(t, 3*resync, "the document from /inputs is the node's", func() bool {
		p, err := engine.New(reg).Plan(context.Background(), liveDoc, engine.PlanOptions{Full: true})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Empty() {
			t.Logf("plan of the document from /inputs:\n%s", p.String())
		}
		return p.Empty()
	})

	// Writes are refused, and change nothing.
	_, before := c.get(load.AgentInputsPath)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		req, _ := http.NewRequest(method, "http://"+c.health+load.AgentInputsPath, strings.NewReader("apiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: evil}\n"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: HTTP %d %q, want 405", method, load.AgentInputsPath, resp.StatusCode, body)
		}
	}
	if _, after := c.get(load.AgentInputsPath); after != before || strings.Contains(after, "evil") {
		t.Errorf("/inputs changed after refused writes")
	}
}

func model(t *testing.T, objs *load.Objects) (*explain.Model, *spec.NodeState) {
	t.Helper()
	in, err := objs.Inputs("", nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := explain.New(in, doc)
	if err != nil {
		t.Fatal(err)
	}
	return m, doc
}

func report(t *testing.T, m *explain.Model, from, to string, pk explain.PortKey) string {
	t.Helper()
	src, err := m.Resolve(from)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := m.Resolve(to)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m.Explain(src, dst, pk.Protocol, pk.Port)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	return b.String()
}

func first(s string) string { f, _, _ := strings.Cut(s, "\n"); return f }
