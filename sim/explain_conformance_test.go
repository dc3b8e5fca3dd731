package sim_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestExplainMatchesConformance replays every step of the conformance
// suite offline and checks that explain's matrices (from the rendered
// document's table) equal the step's expected matrices, which
// TestNetworkPolicyConformance checks against real traffic on a simulated
// node. It needs no root.
func TestExplainMatchesConformance(t *testing.T) {
	pods := []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"}
	ip := map[string]string{}
	for i, p := range pods {
		ip[p] = fmt.Sprintf("198.18.0.%d", 10+i)
	}
	base := readYAML(t, xyzCluster)
	cur := base
	comparisons := 0
	for _, c := range conformanceCases(ip) {
		var applied []string
		for _, s := range c.steps {
			if s.apply != "" {
				cur = merge(cur, readYAML(t, s.apply), false)
				applied = append(applied, s.apply)
			}
			if s.delete != "" {
				cur = merge(cur, readYAML(t, s.delete), true)
			}
			want := s.expect.grids(t, pods)
			got := explainGrids(t, cur, ip)
			for _, p := range probes {
				for i := range pods {
					for j := range pods {
						comparisons++
						if got[p.key][i][j] != want[p.key][i][j] {
							t.Errorf("%s, step %q, %s: %s -> %s: explain %c, expected (and probed) %c",
								c.name, s.what, p.key, pods[i], pods[j], got[p.key][i][j], want[p.key][i][j])
						}
					}
				}
			}
		}
		for _, a := range applied {
			if strings.Contains(a, "kind: NetworkPolicy") {
				cur = merge(cur, readYAML(t, onlyPolicies(a)), true)
			}
		}
		if c.undo != "" {
			cur = merge(cur, readYAML(t, c.undo), false)
		}
	}
	t.Logf("%d comparisons over the conformance steps", comparisons)
}

func readYAML(t *testing.T, y string) *load.Objects {
	t.Helper()
	o := &load.Objects{}
	if err := o.Read("case.yaml", strings.NewReader(y)); err != nil {
		t.Fatal(err)
	}
	return o
}

// merge applies (or, with del, deletes) the objects of change to cur by
// kind, namespace and name, as sim apply and sim delete do.
func merge(cur, change *load.Objects, del bool) *load.Objects {
	out := *cur
	out.Pods = mergeList(cur.Pods, change.Pods, del, func(p *corev1.Pod) metav1.Object { return p })
	out.Namespaces = mergeList(cur.Namespaces, change.Namespaces, del, func(p *corev1.Namespace) metav1.Object { return p })
	out.Policies = mergeList(cur.Policies, change.Policies, del, func(p *networkingv1.NetworkPolicy) metav1.Object { return p })
	return &out
}

func mergeList[T any](cur, change []*T, del bool, meta func(*T) metav1.Object) []*T {
	key := func(x *T) string { m := meta(x); return m.GetNamespace() + "/" + m.GetName() }
	out := slices.DeleteFunc(slices.Clone(cur), func(x *T) bool {
		return slices.ContainsFunc(change, func(c *T) bool { return key(c) == key(x) })
	})
	if !del {
		out = append(out, change...)
	}
	return out
}

// explainGrids renders the objects on one node (every pod local, with the
// given addresses) and returns explain's four matrices as grids.
func explainGrids(t *testing.T, objs *load.Objects, ip map[string]string) map[string][]string {
	t.Helper()
	in := render.Inputs{Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"}},
		Namespaces: objs.Namespaces, Policies: objs.Policies}
	for _, p := range objs.Pods {
		p = p.DeepCopy()
		p.Spec.NodeName = "node-1"
		key := p.Namespace + "/" + p.Name
		p.Status.PodIP = ip[key]
		in.Pods = append(in.Pods, p)
		in.Allocations = append(in.Allocations, &spec.Allocation{APIVersion: spec.APIVersion, Kind: spec.KindAllocation,
			Metadata: spec.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
			Spec:     spec.AllocationSpec{IP: ip[key], Netns: "/var/run/netns/conf-" + p.Namespace + "-" + p.Name, ContainerID: "c-" + key, IfName: "eth0"}})
	}
	doc, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := explain.New(in, doc)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, p := range probes {
		mxs, err := m.Matrices([]explain.PortKey{{Protocol: p.protocol, Port: uint16(p.port)}})
		if err != nil {
			t.Fatal(err)
		}
		var rows []string
		for _, r := range mxs[0].Reachable {
			var b strings.Builder
			for _, ok := range r {
				b.WriteByte(map[bool]byte{true: '.', false: 'X'}[ok])
			}
			rows = append(rows, b.String())
		}
		out[p.key] = rows
	}
	return out
}
