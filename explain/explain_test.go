package explain_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/internal/synth"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

func demoModel(t testing.TB, withPolicy bool) *explain.Model {
	paths := []string{"../examples/cluster", "../examples/allocations.yaml"}
	if withPolicy {
		paths = append(paths, "../examples/policy.yaml")
	}
	objs, err := load.Paths(paths...)
	if err != nil {
		t.Fatal(err)
	}
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
	return m
}

// TestExplainDemo checks verdicts and reasons on the demo: the database
// takes SQL from the backend namespace only, the API gRPC from web pods.
func TestExplainDemo(t *testing.T) {
	m := demoModel(t, true)
	for _, c := range []struct {
		from, to string
		port     uint16
		verdict  string
		want     []string
	}{
		{"frontend/web", "data/db", 5432, "denied", []string{"isolated by data/db-from-backend", "requires team=api, and namespace frontend has team=web", "ends in drop"}},
		{"backend/api", "data/db", 5432, "allowed", []string{`names port "sql" = TCP/5432 on data/db`, "-ports element"}},
		{"frontend/web", "backend/api", 9000, "allowed", []string{"podSelector matches pod frontend/web"}},
		{"frontend/web", "backend/api", 9100, "denied", []string{`names port "grpc", which is 9000 on backend/api, not 9100`}},
		{"frontend/web", "backend/worker", 8080, "allowed", []string{"ingress of backend/worker: not isolated"}},
	} {
		src, err := m.Resolve(c.from)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := m.Resolve(c.to)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := m.Explain(src, dst, "tcp", c.port)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		rep.WriteText(&b)
		out := b.String()
		if first, _, _ := strings.Cut(out, "\n"); first != c.verdict {
			t.Errorf("%s -> %s:%d: first line %q, want %q\n%s", c.from, c.to, c.port, first, c.verdict, out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s -> %s:%d: output lacks %q:\n%s", c.from, c.to, c.port, w, out)
			}
		}
	}
	for _, bad := range []string{"nope/pod", "nonsense", "2001:db8::1"} {
		if _, err := m.Resolve(bad); err == nil {
			t.Errorf("Resolve(%q): no error", bad)
		}
	}
}

// BenchmarkExplain explains one connection against a 250-pod, 1,000-policy
// document (rendering excluded), next to the bare kernel walk (Check) and
// the table's preparation (Compile) as baselines.
func BenchmarkExplain(b *testing.B) {
	in := synth.Cluster(synth.Params{LocalPods: 250, RemotePods: 250, Policies: 1000, Namespaces: 20, Seed: 1})
	doc, err := render.Render(in)
	if err != nil {
		b.Fatal(err)
	}
	m, err := explain.New(in, doc)
	if err != nil {
		b.Fatal(err)
	}
	src, _ := m.Resolve(doc.Pods[3].Key)
	dst, _ := m.Resolve(doc.Pods[200].Key)
	b.Run("explain", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Explain(src, dst, "tcp", 8080); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if _, err := m.Check(src, dst, "tcp", 8080); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("compile+explain", func(b *testing.B) {
		for b.Loop() {
			m2, err := explain.New(in, doc)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m2.Explain(src, dst, "tcp", 8080); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Logf("%s", fmt.Sprint(len(doc.Pods), " pods, ", len(in.Policies), " policies, ", len(doc.NFTables.Sets), " sets"))
}
