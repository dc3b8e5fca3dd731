package render

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// TestSelectingAgreesWithAScan: the policies selecting finds through the
// label index are those of the pod's namespace whose podSelector matches
// it, in name order, for random selectors of every operator and random
// pods.
func TestSelectingAgreesWithAScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 3))
	keys, values := []string{"app", "tier", "role"}, []string{"a", "b", "c"}
	pick := func(from []string) string { return from[rng.IntN(len(from))] }
	namespaces := []string{"ns-0", "ns-1"}
	k := &Cache{entries: map[string]*policyEntry{}}
	for i := range 300 {
		sel := metav1.LabelSelector{}
		for range rng.IntN(3) {
			if sel.MatchLabels == nil {
				sel.MatchLabels = map[string]string{}
			}
			sel.MatchLabels[pick(keys)] = pick(values)
		}
		ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn,
			metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist, "Near"}
		for range rng.IntN(3) {
			req := metav1.LabelSelectorRequirement{Key: pick(keys), Operator: ops[rng.IntN(len(ops))]}
			if req.Operator != metav1.LabelSelectorOpExists && req.Operator != metav1.LabelSelectorOpDoesNotExist {
				for range 1 + rng.IntN(3) {
					req.Values = append(req.Values, pick(values))
				}
			}
			sel.MatchExpressions = append(sel.MatchExpressions, req)
		}
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: pick(namespaces), Name: fmt.Sprintf("p%d", i)},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: sel}}
		k.entries[np.Namespace+"/"+np.Name] = newEntry(np)
	}
	k.rebuildIndex()
	found := 0
	for i := range 500 {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pick(namespaces), Name: fmt.Sprintf("pod%d", i), Labels: map[string]string{}}}
		for range rng.IntN(4) {
			pod.Labels[pick(keys)] = pick(values)
		}
		var want []*policyEntry
		for _, e := range k.byNS[pod.Namespace] {
			if e.parsed.podSel.Matches(labels.Set(pod.Labels)) {
				want = append(want, e)
			}
		}
		slices.SortFunc(want, func(a, b *policyEntry) int { return strings.Compare(a.parsed.key, b.parsed.key) })
		got := k.selecting(pod)
		if !slices.Equal(got, want) {
			t.Fatalf("pod %s %v: selecting found %s, a scan %s", pod.Name, pod.Labels, names(got), names(want))
		}
		found += len(got)
	}
	if found == 0 {
		t.Fatal("no pod was selected by any policy: the test shows nothing")
	}
	t.Logf("%d selections of 500 pods by 300 policies", found)
}

func names(es []*policyEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.parsed.key)
	}
	return out
}
