package sim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/sim"
)

// exclusivePods own an exclusive ENI each in TestExclusiveENIConformance:
// x/a is the server of the ingress cases and the client of the egress
// ones; y/b is a client of x/a's ingress cases.
var exclusivePods = map[string]bool{"x/a": true, "y/b": true}

// xyzENICluster is the conformance cluster on an ENI node where the pods
// of exclusivePods request aliyun/eni.
func xyzENICluster() string {
	var b strings.Builder
	b.WriteString("apiVersion: terway/v1\nkind: Config\nmaxPoolSize: 2\n---\napiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n")
	for _, ns := range []string{"x", "y", "z"} {
		b.WriteString("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + ", labels: {ns: " + ns + ", kubernetes.io/metadata.name: " + ns + "}}\n")
	}
	for _, ns := range []string{"x", "y", "z"} {
		for _, p := range []string{"a", "b", "c"} {
			b.WriteString(podYAML(ns, p, p))
			if exclusivePods[ns+"/"+p] {
				b.WriteString("    resources: {limits: {aliyun/eni: \"1\"}}\n")
			}
		}
	}
	return b.String()
}

// TestExclusiveENIConformance runs the conformance suite's deny-all,
// allow-from-namespace and named-port cases on an ENI node where x/a and
// y/b own their ENI: their traffic on it goes straight into the VPC and is
// judged by table inet terway in their own namespace. Then the table of
// x/a is tampered with, and the agent's next resync repairs it.
func TestExclusiveENIConformance(t *testing.T) {
	one := 1 // one shared ENI holds the seven others; two slots for x/a and y/b
	st := upCloud(t, "exconf", xyzENICluster(), sim.Options{Mode: "eni-multi-ip", ReservedENIsForMultiIP: &one})
	var pods []string
	ip := map[string]string{}
	for _, p := range st.Pods {
		pods = append(pods, p.Key())
		ip[p.Key()] = p.IP
	}
	for key := range exclusivePods {
		p := st.Pod(key)
		// Only an exclusive-ENI pod has the Service veth next to its eth0,
		// and a table of its own.
		nstest.Run(t, p.Netns, "ip", "link", "show", "dev", "veth1")
		nstest.Run(t, p.Netns, "nft", "list", "table", "inet", "terway")
	}
	var cases []policyCase
	for _, c := range conformanceCases(ip) {
		switch c.name {
		case "deny-all-ingress-then-allow-all", "deny-all-egress-then-allow-all", "namespace-selector",
			"named-port-ingress", "named-port-egress":
			cases = append(cases, c)
		}
	}
	if len(cases) != 5 {
		t.Fatalf("found %d of the 5 conformance cases by name", len(cases))
	}
	runCases(t, st, pods, cases)
	if t.Failed() {
		return
	}

	t.Run("tampered table repaired by the resync", func(t *testing.T) {
		deny := cases[0].steps[0]
		applyYAML(t, st, deny.apply, false)
		want := deny.expect.grids(t, pods)
		waitFor(t, st, want, deny.what)
		xa := st.Pod("x/a")
		nstest.Run(t, xa.Netns, "nft", "flush", "table", "inet", "terway")
		if out := nstest.Run(t, xa.Netns, "nft", "list", "table", "inet", "terway"); strings.Contains(out, "jump") {
			t.Fatalf("the flush left rules in x/a's table:\n%s", out)
		}
		// The sim's agent resyncs every 2s, in full: the table must hold
		// again within a few.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := nstest.Run(t, xa.Netns, "nft", "list", "table", "inet", "terway")
			if strings.Contains(out, "jump in_x_") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("x/a's table not repaired 20s after the flush:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		waitFor(t, st, want, "after the repair")
		applyYAML(t, st, onlyPolicies(deny.apply), true)
	})
}
