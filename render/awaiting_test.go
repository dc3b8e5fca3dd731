package render

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// TestAwaitingPodsGroupRenders: a pod scheduled here whose ADD has not
// come has its policy groups in the document (chain and sets) and its
// dispatch entries, keyed by its host veth, but no hairpin element (that
// one needs its address); its ADD adds only that, through a patch whose
// group is the one already there, and no jump to any chain. A pod that is being
// deleted, has finished, or wants an exclusive ENI awaits nothing. Rule
// problems show only once a pod is set up, as before.
func TestAwaitingPodsGroupRenders(t *testing.T) {
	pod := func(name, app string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name), Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}
	}
	alloc := func(name, ip string) *spec.Allocation {
		return &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: name},
			Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + name, ContainerID: "c" + name, IfName: "eth0"}}
	}
	policy := func(name, app string, from map[string]string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: &metav1.LabelSelector{MatchLabels: from}}}}}}}
	}
	peer := pod("peer", "peer")
	waiting := pod("w", "web")
	broken := policy("broken", "web", map[string]string{"bad key!": "x"})
	in := Inputs{
		Node:        nodeWithPodCIDR("198.18.0.0/24"),
		Namespaces:  []*corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "x"}}},
		Pods:        []*corev1.Pod{peer, waiting},
		Policies:    []*networkingv1.NetworkPolicy{policy("web", "web", map[string]string{"app": "peer"}), broken},
		Allocations: []*spec.Allocation{alloc("peer", "198.18.0.10")},
	}
	groupChains := func(s *spec.NodeState) []string {
		var out []string
		for _, c := range s.NFTables.Chains {
			if strings.HasPrefix(c.Name, "in_") || strings.HasPrefix(c.Name, "eg_") {
				out = append(out, c.Name)
			}
		}
		return out
	}
	dispatch := func(s *spec.NodeState) []spec.NFTElement {
		return slices.Concat(s.NFTables.Set(mapIngressPods).Elements, s.NFTables.Set(setHairpin).Elements)
	}
	ruleProblem := func(s *spec.NodeState) bool {
		return slices.ContainsFunc(s.Problems, func(p spec.Problem) bool { return p.Kind == "NetworkPolicy" && p.Name == "broken" })
	}
	before, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	chains := groupChains(before)
	wantDispatch := []spec.NFTElement{{Key: []string{spec.HostVethName("x/w")}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: "?"}}}
	if len(chains) == 1 {
		wantDispatch[0].Verdict.Chain = chains[0]
	}
	if len(chains) != 1 || !slices.EqualFunc(dispatch(before), wantDispatch, sameElement) {
		t.Fatalf("awaiting pod w: group chains %v, dispatch and hairpin elements %v; want one chain and %v", chains, dispatch(before), wantDispatch)
	}
	ports := before.NFTables.Set(chains[0] + "-all")
	if ports == nil || len(ports.Elements) != 1 || ports.Elements[0].Key[0] != "198.18.0.10" {
		t.Fatalf("awaiting pod w's group set %s-all: %+v; want the peer 198.18.0.10", chains[0], ports)
	}
	if ruleProblem(before) {
		t.Errorf("policy broken's rule problem shows while it selects only a pod awaiting its ADD: %v", before.Problems)
	}

	// The ADD: w's allocation, w held back as a peer as the agent's ADD
	// holds it. A cache primed on the document before patches it, and
	// its group is the one rendered for the awaiting pod.
	k := NewCache()
	primed, err := k.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	added := in
	added.Allocations = append(slices.Clone(in.Allocations), alloc("w", "198.18.0.11"))
	added.PeersHeldBack = map[string]bool{"x/w": true}
	patched, err := k.Render(added)
	if err != nil {
		t.Fatal(err)
	}
	st := k.Stats()
	if !st.Patched || st.GroupsRendered != 0 {
		t.Errorf("the ADD's render: %+v; want a patch that renders no group", st)
	}
	// The jump is w's entry as it was while w awaited: the patch hands
	// on the dispatch map's very list, which the nft side knows by
	// identity rather than by comparing it.
	if a, b := primed.NFTables.Set(mapIngressPods).Elements, patched.NFTables.Set(mapIngressPods).Elements; &a[0] != &b[0] {
		t.Errorf("the ADD's patch built a new list for %s, whose elements it did not change", mapIngressPods)
	}
	full, err := Render(added)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := mustJSON(t, patched), mustJSON(t, full); string(got) != string(want) {
		t.Fatalf("the patched ADD differs from a render from scratch:\n%s\nfrom scratch:\n%s", got, want)
	}
	hairpin := spec.NFTElement{Key: []string{spec.HostVethName("x/w"), "198.18.0.11"}}
	if got := groupChains(full); !slices.Equal(got, chains) || !slices.EqualFunc(dispatch(full), append(wantDispatch, hairpin), sameElement) {
		t.Fatalf("after w's ADD: chains %v (before %v), dispatch and hairpin %v; want the same chain, w's dispatch entry as before and its hairpin element", got, chains, dispatch(full))
	}
	if !ruleProblem(full) {
		t.Errorf("policy broken's rule problem is missing once w is set up: %v", full.Problems)
	}

	// Pods that await no ADD render no group.
	now := metav1.NewTime(time.Unix(1, 0))
	for name, change := range map[string]func(*corev1.Pod){
		"being deleted":   func(p *corev1.Pod) { p.DeletionTimestamp = &now },
		"finished":        func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
		"host network":    func(p *corev1.Pod) { p.Spec.HostNetwork = true },
		"on another node": func(p *corev1.Pod) { p.Spec.NodeName = "n2" },
		"exclusive ENI": func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Limits = corev1.ResourceList{ExclusiveENIResource: resource.MustParse("1")}
		},
	} {
		w := waiting.DeepCopy()
		change(w)
		other := in
		other.Pods = []*corev1.Pod{peer, w}
		s, err := Render(other)
		if err != nil {
			t.Fatal(err)
		}
		if got := groupChains(s); len(got) != 0 {
			t.Errorf("pod w %s: group chains %v; want none", name, got)
		}
	}
}
