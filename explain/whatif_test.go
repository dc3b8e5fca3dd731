package explain_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

// demoWith is the demo cluster (every pod set up) with the policies given
// as YAML.
func demoWith(t *testing.T, policies ...string) *explain.Model {
	t.Helper()
	objs, err := load.Paths("../examples/cluster", "../examples/allocations.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range policies {
		if err := objs.Read(fmt.Sprintf("policy %d", i), strings.NewReader(p)); err != nil {
			t.Fatal(err)
		}
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

func dbPolicy(name, from, port string) string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: data, name: %s}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [%s], ports: [%s]}]
`, name, from, port)
}

func flipLines(t *testing.T, before, after *explain.Model) []string {
	t.Helper()
	flips, err := explain.Flips(before, after)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range flips {
		out = append(out, f.String()+" | "+f.Cause())
	}
	slices.Sort(out)
	return out
}

// TestFlipCauses: each flip names the policy that makes the difference for
// that connection, read from explain's reports before and after, not every
// changed policy that selects one of its ends. Here two changed policies
// select the same pod: data/db-access now admits the backend instead of
// the frontend on 8080, and the new data/db-dns admits the worker on
// udp/53; the frontend's 8080 and the worker's 53 flip for different
// reasons.
func TestFlipCauses(t *testing.T) {
	access := func(team string) string {
		return dbPolicy("db-access", "{namespaceSelector: {matchLabels: {team: "+team+"}}}", "{port: 8080}")
	}
	dns := dbPolicy("db-dns", "{namespaceSelector: {}, podSelector: {matchLabels: {app: worker}}}", "{port: dns, protocol: UDP}")
	before := demoWith(t, access("web"))
	after := demoWith(t, access("api"), dns)
	got := flipLines(t, before, after)
	want := []string{
		"backend/api -> data/db tcp/8080: denied -> allowed | data/db-access now admits it (ingress of data/db)",
		"backend/worker -> data/db tcp/8080: denied -> allowed | data/db-access now admits it (ingress of data/db)",
		"backend/worker -> data/db udp/53: denied -> allowed | data/db-dns now admits it (ingress of data/db)",
		"frontend/web -> data/db tcp/8080: allowed -> denied | data/db-access no longer admits it (ingress of data/db)",
		"frontend/web-canary -> data/db tcp/8080: allowed -> denied | data/db-access no longer admits it (ingress of data/db)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("flips:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Deleting one of two policies: what it admitted is no longer
	// admitted. Deleting a policy gives the pod back: the cause is that it no longer
	// selects the pod; adding one to an open pod: that it now does.
	got = flipLines(t, after, demoWith(t, access("api")))
	want = []string{"backend/worker -> data/db udp/53: allowed -> denied | data/db-dns no longer admits it (ingress of data/db)"}
	if !slices.Equal(got, want) {
		t.Errorf("db-dns deleted, db-access stays: flips\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = flipLines(t, demoWith(t, dns), demoWith(t))
	for _, l := range got {
		if !strings.HasSuffix(l, "| data/db-dns no longer selects data/db for ingress") {
			t.Errorf("policy deleted: %s", l)
		}
	}
	if len(got) == 0 {
		t.Error("deleting the only policy of data/db flips nothing")
	}
	got = flipLines(t, demoWith(t), demoWith(t, dns))
	for _, l := range got {
		if !strings.HasSuffix(l, "| data/db-dns now selects data/db for ingress") {
			t.Errorf("policy added: %s", l)
		}
	}
}
