package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/sim"
)

// TestWhatIfMatchesDemo: before examples/policy.yaml is applied to the
// demo's simulated node, terwayctl what-if lists exactly the pairs, ports
// and protocols that the demo's matrices (real traffic between the pods)
// then show flipping: asked offline (-f examples/cluster with the demo's
// allocations, the README's command) and asked of the running agent
// (--agent, its live inputs). The ports probed are every container port of
// the cluster: the ports what-if considers for these policies, which name
// only container ports.
func TestWhatIfMatchesDemo(t *testing.T) {
	nstest.RequireRoot(t)
	bin := binaries(t)
	cluster, _ := filepath.Abs("../examples/cluster")
	policy, _ := filepath.Abs("../examples/policy.yaml")
	allocs, _ := filepath.Abs("../examples/allocations.yaml")
	st := upPath(t, "whatif", cluster)

	offline := whatIf(t, exec.Command(bin+"/terwayctl", "what-if", "-f", cluster, "-f", allocs, "--apply", policy, "-o", "json"))
	live := whatIf(t, exec.Command("ip", "netns", "exec", filepath.Base(st.NodeNetns),
		bin+"/terwayctl", "what-if", "--agent", "127.0.0.1:9482", "--apply", policy, "-o", "json"))

	ports := []struct {
		port  int
		proto string
	}{{8080, "tcp"}, {9000, "tcp"}, {9100, "tcp"}, {5432, "tcp"}, {53, "udp"}}
	matrices := func() []*sim.Matrix {
		var out []*sim.Matrix
		for _, p := range ports {
			m, err := st.Matrix(p.port, p.proto, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}
	before := matrices()
	var applyOut bytes.Buffer
	if err := sim.Apply(context.Background(), st.Name, &applyOut, policy); err != nil {
		t.Fatalf("sim apply: %v\n%s", err, applyOut.String())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := st.Probe("frontend/web", "data/db", 8080, "tcp", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the policy was not enforced within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	after := matrices()

	var probed []string
	cells := 0
	for k, mb := range before {
		ma := after[k]
		if !slices.Equal(mb.Pods, ma.Pods) {
			t.Fatalf("pods changed: %v, %v", mb.Pods, ma.Pods)
		}
		for i, from := range mb.Pods {
			for j, to := range mb.Pods {
				cells++
				if mb.Reachable[i][j] != ma.Reachable[i][j] {
					probed = append(probed, fmt.Sprintf("%s -> %s %s/%d: %s -> %s", from, to, mb.Protocol, mb.Port, word(mb.Reachable[i][j]), word(ma.Reachable[i][j])))
				}
			}
		}
	}
	slices.Sort(probed)
	t.Logf("%d cells probed before and after; %d flipped", cells, len(probed))
	for what, got := range map[string][]string{"what-if -f": offline, "what-if --agent": live} {
		if !slices.Equal(got, probed) {
			t.Errorf("%s lists\n%s\nthe matrices show flipping\n%s", what, strings.Join(got, "\n"), strings.Join(probed, "\n"))
		}
	}
	if len(probed) == 0 {
		t.Error("nothing flipped")
	}
}

func word(ok bool) string {
	if ok {
		return "allowed"
	}
	return "denied"
}

// whatIf runs a what-if command and returns its flips as sorted lines; each
// flip must name a cause.
func whatIf(t *testing.T, cmd *exec.Cmd) []string {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
	}
	var res struct {
		Flips []struct {
			From, To, Protocol string
			Port               int
			Before, After      bool
			Causes             []string
		}
		Plan []string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	var lines []string
	for _, f := range res.Flips {
		if len(f.Causes) == 0 {
			t.Errorf("%v: flip %+v names no cause", cmd.Args, f)
		}
		lines = append(lines, fmt.Sprintf("%s -> %s %s/%d: %s -> %s", f.From, f.To, f.Protocol, f.Port, word(f.Before), word(f.After)))
	}
	if len(res.Plan) == 0 {
		t.Errorf("%v: no kernel plan", cmd.Args)
	}
	slices.Sort(lines)
	return lines
}
