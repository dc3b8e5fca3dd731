package agent

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestCNIRendersPinnedPolicies: a CNI ADD does not compile a policy edit
// the resync has not planned yet (renderviews.go), unless the edit
// involves the ADD's pod (selects it as a target, or names it as a peer),
// which then starts as the newest policies say, and later ADDs render
// those too. After the resync, ADDs render the edits without compiling
// them again.
func TestCNIRendersPinnedPolicies(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.7.0/24", "198.19.7.1")
	port := func(n int32) []networkingv1.NetworkPolicyPort {
		tcp, p := corev1.ProtocolTCP, intstr.FromInt32(n)
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}}
	}
	web := func(p int32) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "web", UID: "web"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}}, Ports: port(p)}},
			}}
	}
	denyDB := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "db", UID: "db"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		}}
	src.policies = []*networkingv1.NetworkPolicy{web(80)}
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v", out)
	}
	ips := map[string]string{}
	add := func(name, app string) {
		t.Helper()
		src.mu.Lock()
		src.pods["x/"+name] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name),
			Labels: map[string]string{"app": app}}, Spec: corev1.PodSpec{NodeName: "node-1"}}
		src.mu.Unlock()
		res, err := a.Add(ctx, &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-" + name, Netns: nstest.Netns(t, name),
			IfName: "eth0", Args: wire.PodArgs{Namespace: "x", Name: name, UID: "uid-" + name}})
		if err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		ips[name] = res.IPs[0].Address.IP.String()
	}
	// inKernel tells whether the kernel's set or map holds key.
	inKernel := func(set, key string) bool {
		_, err := nstest.Exec(node, "nft", "get", "element", "inet", "terway", set, "{", key, "}")
		return err == nil
	}
	// compilesNothing: the ADD just made parsed no policy (why says why
	// it must not have).
	compilesNothing := func(after, why string) {
		t.Helper()
		st := a.views.main.Stats()
		t.Logf("after %s, the CNI's cache parsed %d and resolved %d of %d policies", after, st.PoliciesParsed, st.PoliciesResolved, st.Policies)
		if st.PoliciesParsed != 0 {
			t.Errorf("%s parsed %d policies; want 0: %s", after, st.PoliciesParsed, why)
		}
	}
	add("w1", "web")
	st, _, err := a.renderSettled()
	if err != nil {
		t.Fatal(err)
	}
	peers := st.PodEntry("x/w1").IngressChain + "-ports"

	admittedOn := func(name, port string) {
		t.Helper()
		// An ADD answers before its pod is admitted as a peer
		// (admission.go): what the admission wrote is what is checked.
		a.waitAdmitted(t)
		for _, p := range []string{"80", "81", "82"} {
			if got := inKernel(peers, ips[name]+" . tcp . "+p); got != (p == port) {
				t.Errorf("%s (%s) admitted to web on port %s: %v, want %v", name, ips[name], p, got, p == port)
			}
		}
	}
	edit := func(policies ...*networkingv1.NetworkPolicy) {
		src.mu.Lock()
		src.policies = policies
		src.mu.Unlock()
	}

	// The edit: db is isolated, and web admits clients on port 81.
	edit(denyDB, web(81))
	add("o1", "other")
	compilesNothing("ADD o1", "the edit does not involve o1 and is the resync's to compile")
	add("d1", "db")
	if !inKernel("ingress-pods", spec.HostVethName("x/d1")) {
		t.Errorf("d1 (%s) started without the isolation of policy db, created before it", ips["d1"])
	}
	// d1's ADD moved the pin to the edit: no CNI request renders the
	// policies before it again (one would take web's group back to port
	// 80 once a request wrote it on port 81), and none compiles it again.
	add("c1", "client")
	compilesNothing("ADD c1", "d1's ADD compiled the edit")
	admittedOn("c1", "81")

	// A second edit that involves a new pod as a peer only: web on port
	// 82. A client that starts after it is not admitted as the rule
	// before it said.
	edit(denyDB, web(82))
	add("o2", "other")
	compilesNothing("ADD o2", "the second edit does not involve o2")
	add("c2", "client")
	admittedOn("c2", "82")

	if out := a.sync(ctx, false); out.Again {
		t.Fatalf("sync after the edits: %+v", out)
	}
	admittedOn("c1", "82")
	add("c3", "client")
	compilesNothing("ADD c3", "the edits were compiled")
	admittedOn("c3", "82")
	if !inKernel("ingress-pods", spec.HostVethName("x/d1")) {
		t.Errorf("d1 (%s) lost the isolation of policy db", ips["d1"])
	}
}

// TestPolicyPinOnlyMovesForward: the pin follows the documents resyncs
// plan and the CNI requests that must render an edit, and a resync that
// read its inputs before the pin last moved does not move it back; the
// cache that compiled the pinned policies is the one CNI requests get.
func TestPolicyPinOnlyMovesForward(t *testing.T) {
	policy := func(name, app string) *networkingv1.NetworkPolicy {
		return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}
	}
	web, db := policy("web", "web"), policy("db", "db")
	v1 := []*networkingv1.NetworkPolicy{web}
	v2 := []*networkingv1.NetworkPolicy{db, web}
	pod := func(app string) func() []podRef {
		return func() []podRef {
			return []podRef{{pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p", Labels: map[string]string{"app": app}}}}}
		}
	}
	v := newRenderViews()
	if c, ps := v.forCNI(v1, pod("web")); c != v.main || !samePolicies(ps, v1) {
		t.Fatal("before any resync, a CNI request does not render the newest policies with the main cache")
	}
	v.planned(v1, v.forResync(v1), v.pinSeq())

	// A resync reads v2 and renders it with the spare.
	seq := v.pinSeq()
	spare := v.forResync(v2)
	if spare != v.spare {
		t.Fatal("a resync of policies other than the pinned ones does not render with the spare")
	}
	if _, ps := v.forCNI(v2, pod("client")); !samePolicies(ps, v1) {
		t.Error("a CNI request no edited policy selects does not render the pinned policies")
	}
	v.planned(v2, spare, seq)
	if c, ps := v.forCNI(v2, pod("client")); c != spare || !samePolicies(ps, v2) {
		t.Error("after the resync planned v2, CNI requests do not render v2 with the cache that compiled it")
	}

	// A resync reads v1 back (an edit undone), then a CNI request for a
	// pod the undoing selects moves the pin first: that resync's plan
	// must not move it back to what it read before.
	v3 := []*networkingv1.NetworkPolicy{web}
	seq = v.pinSeq()
	if c, ps := v.forCNI(v3, pod("db")); !samePolicies(ps, v3) || c != v.main {
		t.Fatal("a CNI request for a pod an edit selects does not render that edit with the main cache")
	}
	v.planned(v2, v.main, seq)
	if _, ps := v.forCNI(v3, pod("client")); !samePolicies(ps, v3) {
		t.Error("a resync that read its inputs before the pin moved moved it back")
	}
}
