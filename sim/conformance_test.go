package sim_test

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/sim"
)

// The NetworkPolicy conformance suite, after the model of the upstream
// Kubernetes e2e tests: namespaces x, y, z with pods a, b, c, each serving
// ports 80 and 81 over TCP and UDP. Each case applies policies (and label
// changes) to a running simulated node and checks the full 9x9 matrix on
// all four port/protocol pairs with real traffic.
//
// The expected matrices are written by hand from the NetworkPolicy API
// semantics, not produced by the implementation. Rows are the source pod,
// columns the destination, in the order x/a x/b x/c y/a y/b y/c z/a z/b z/c;
// "." reachable, "X" not. A pod reaching its own address never leaves its
// namespace, so the diagonal is always reachable (as upstream's
// AllowLoopback).

var xyzCluster = `
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x, kubernetes.io/metadata.name: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y, kubernetes.io/metadata.name: y}}
---
apiVersion: v1
kind: Namespace
metadata: {name: z, labels: {ns: z, kubernetes.io/metadata.name: z}}
` + xyzPods

var xyzPods = func() string {
	var b strings.Builder
	for _, ns := range []string{"x", "y", "z"} {
		for _, p := range []string{"a", "b", "c"} {
			b.WriteString(podYAML(ns, p, p))
		}
	}
	return b.String()
}()

func podYAML(ns, name, label string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {namespace: %s, name: %s, labels: {pod: %s}}
spec:
  containers:
  - name: c
    image: agnhost
    ports:
    - {name: serve-80-tcp, containerPort: 80}
    - {name: serve-80-udp, containerPort: 80, protocol: UDP}
    - {name: serve-81-tcp, containerPort: 81}
    - {name: serve-81-udp, containerPort: 81, protocol: UDP}
`, ns, name, label)
}

const allReachable = `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   .  .  .  .  .  .  .  .  .
x/c   .  .  .  .  .  .  .  .  .
y/a   .  .  .  .  .  .  .  .  .
y/b   .  .  .  .  .  .  .  .  .
y/c   .  .  .  .  .  .  .  .  .
z/a   .  .  .  .  .  .  .  .  .
z/b   .  .  .  .  .  .  .  .  .
z/c   .  .  .  .  .  .  .  .  .
`

// Only x/a itself reaches x/a.
const xaIsolated = `
     xa xb xc ya yb yc za zb zc
x/a   .  .  .  .  .  .  .  .  .
x/b   X  .  .  .  .  .  .  .  .
x/c   X  .  .  .  .  .  .  .  .
y/a   X  .  .  .  .  .  .  .  .
y/b   X  .  .  .  .  .  .  .  .
y/c   X  .  .  .  .  .  .  .  .
z/a   X  .  .  .  .  .  .  .  .
z/b   X  .  .  .  .  .  .  .  .
z/c   X  .  .  .  .  .  .  .  .
`

// probes names the four port/protocol pairs every case checks.
var probes = []struct {
	key      string
	port     int
	protocol string
}{{"tcp/80", 80, "tcp"}, {"tcp/81", 81, "tcp"}, {"udp/80", 80, "udp"}, {"udp/81", 81, "udp"}}

// expect is the expected grid per port/protocol; "all" covers the pairs
// not named.
type expect map[string]string

type step struct {
	what   string
	apply  string // YAML to apply (sim apply)
	delete string // YAML to delete (sim delete)
	expect expect
}

type policyCase struct {
	name  string
	steps []step
	// undo restores the baseline (labels) after the case; its policies are
	// deleted automatically.
	undo string
}

func policy(ns, name, spec string) string {
	return fmt.Sprintf("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: %s, name: %s}\nspec:\n%s\n", ns, name, spec)
}

// grid parses a hand-written matrix into rows of "."/"X".
func grid(t *testing.T, text string, pods []string) []string {
	t.Helper()
	var rows []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) != len(pods)+1 || f[0] != pods[len(rows)] {
			t.Fatalf("expected matrix row %q: want %s followed by %d cells", line, pods[len(rows)], len(pods))
		}
		rows = append(rows, strings.Join(f[1:], ""))
	}
	if len(rows) != len(pods) {
		t.Fatalf("expected matrix has %d rows, want %d", len(rows), len(pods))
	}
	return rows
}

func (e expect) grids(t *testing.T, pods []string) map[string][]string {
	out := map[string][]string{}
	for _, p := range probes {
		text, ok := e[p.key]
		if !ok {
			text, ok = e["all"]
		}
		if !ok {
			t.Fatalf("expectation has no %s and no all", p.key)
		}
		out[p.key] = grid(t, text, pods)
	}
	return out
}

// observe probes the four matrices concurrently.
func observe(t *testing.T, st *sim.State) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := st.Matrix(p.port, p.protocol, 300*time.Millisecond)
			if err != nil {
				t.Errorf("matrix %s: %v", p.key, err)
				return
			}
			mu.Lock()
			out[p.key] = m.Grid()
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// waitFor polls until the observed matrices equal the expected ones; the
// agent follows its inputs within a resync interval (2s here), so 20s is
// generous.
func waitFor(t *testing.T, st *sim.State, want map[string][]string, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got map[string][]string
	for time.Now().Before(deadline) {
		got = observe(t, st)
		if reflect.DeepEqual(got, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	var b strings.Builder
	names := []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}
	for _, p := range probes {
		if reflect.DeepEqual(got[p.key], want[p.key]) {
			continue
		}
		fmt.Fprintf(&b, "\n%s   want        got\n", p.key)
		for i := range want[p.key] {
			mark := ""
			if i < len(got[p.key]) && got[p.key][i] != want[p.key][i] {
				mark = "  <--"
			}
			g := ""
			if i < len(got[p.key]) {
				g = got[p.key][i]
			}
			fmt.Fprintf(&b, "%s  %s  %s%s\n", names[i], want[p.key][i], g, mark)
		}
	}
	t.Fatalf("%s: matrices differ after 20s:%s", what, b.String())
}

func TestNetworkPolicyConformance(t *testing.T) {
	st := up(t, "conf", xyzCluster)
	var pods []string
	for _, p := range st.Pods {
		pods = append(pods, p.Key())
	}
	if want := []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}; !reflect.DeepEqual(pods, want) {
		t.Fatalf("pods %v, want %v", pods, want)
	}
	ip := map[string]string{}
	for _, p := range st.Pods {
		ip[p.Key()] = p.IP
	}
	runCases(t, st, pods, conformanceCases(ip))
}

// runCases checks the baseline, then runs each case from it and back to
// it; a case that fails stops the run, as later ones would start from a
// wrong baseline.
func runCases(t *testing.T, st *sim.State, pods []string, cases []policyCase) {
	t.Helper()
	baseline := expect{"all": allReachable}.grids(t, pods)
	waitFor(t, st, baseline, "baseline")

	for _, c := range cases {
		ok := t.Run(c.name, func(t *testing.T) {
			previous := baseline
			var applied []string
			for _, s := range c.steps {
				want := s.expect.grids(t, pods)
				// A step must change what is observable, or a stale node
				// would pass it.
				if reflect.DeepEqual(want, previous) {
					t.Fatalf("step %q expects the same matrices as the step before", s.what)
				}
				if s.apply != "" {
					applyYAML(t, st, s.apply, false)
					applied = append(applied, s.apply)
				}
				if s.delete != "" {
					applyYAML(t, st, s.delete, true)
				}
				waitFor(t, st, want, s.what)
				previous = want
			}
			// Back to the baseline: delete the case's policies, undo labels.
			for _, a := range applied {
				if strings.Contains(a, "kind: NetworkPolicy") {
					applyYAML(t, st, onlyPolicies(a), true)
				}
			}
			if c.undo != "" {
				applyYAML(t, st, c.undo, false)
			}
			waitFor(t, st, baseline, "back to baseline")
		})
		if !ok {
			return // later cases would start from a wrong baseline
		}
	}
}

// onlyPolicies keeps the NetworkPolicy documents of a YAML stream.
func onlyPolicies(yaml string) string {
	var keep []string
	for _, doc := range strings.Split(yaml, "\n---") {
		if strings.Contains(doc, "kind: NetworkPolicy") {
			keep = append(keep, doc)
		}
	}
	return strings.Join(keep, "\n---")
}
