package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// waitAdmitted waits until no pod is held back as a peer (admission.go).
func (a *Agent) waitAdmitted(tb testing.TB) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if keys, _ := a.held.keys(); len(keys) == 0 {
			// An admission under way has released its pods' holds
			// already: it writes under the agent's lock, and reads back
			// under held.checking, taken before the agent's lock goes.
			a.mu.Lock()
			a.mu.Unlock() //nolint:staticcheck // waiting for the holder, nothing to guard
			a.held.checking.Lock()
			a.held.checking.Unlock() //nolint:staticcheck // waiting for the holder, nothing to guard
			return
		}
		if time.Now().After(deadline) {
			keys, _ := a.held.keys()
			tb.Fatalf("pods still held back as peers after 30 s: %v", keys)
		}
	}
}

// stopAdmissionLoop ends the admission loop, and the withdrawal loop
// with it (withdrawal.go): the test admits and withdraws by hand.
func (a *Agent) stopAdmissionLoop() {
	a.closeOnce.Do(func() { close(a.admitStop) })
	<-a.admitDone
}

// admittedBy returns the count of admissions observed by who admitted.
func (a *Agent) admittedBy(t *testing.T, by string) uint64 {
	t.Helper()
	return a.observed(t, "terway_peer_admission_seconds", by)
}

// observed is the count of a histogram with one label, at value.
func (a *Agent) observed(t *testing.T, name, value string) uint64 {
	t.Helper()
	count, _, _ := a.seriesAt(t, name, value)
	return count // 0 when none
}

// seriesAt reads the series of a metric with one label, at value (with
// none, value ""): a histogram's sample count, a counter's value, and
// whether it exists.
func (a *Agent) seriesAt(t *testing.T, name, value string) (count uint64, counter float64, found bool) {
	t.Helper()
	mfs, err := a.m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if l := m.GetLabel(); len(l) == 0 && value == "" || len(l) > 0 && l[0].GetValue() == value {
				return m.GetHistogram().GetSampleCount(), m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, 0, false
}

// admissionNode is a node with a server pod whose policy admits pods
// labelled app=peer on TCP port 80, and serves there.
type admissionNode struct {
	t      *testing.T
	a      *Agent
	src    *podSource
	node   string
	netns  map[string]string
	ips    map[string]string
	server string // the server's ingress group chain
}

func newAdmissionNode(t *testing.T, cfg func(*Config)) *admissionNode {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.0.0/24", "198.19.255.1")
	if cfg != nil {
		cfg(&a.cfg)
	}
	tcp, port := corev1.ProtocolTCP, intstr.FromInt32(80)
	src.policies = []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "from-peers", UID: "from-peers"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "peer"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
		},
	}}
	n := &admissionNode{t: t, a: a, src: src, node: node, netns: map[string]string{}, ips: map[string]string{}}
	if out := a.sync(context.Background(), true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v", out)
	}
	n.add("server", "server")
	a.waitAdmitted(t)
	st, _, err := a.renderSettled()
	if err != nil {
		t.Fatal(err)
	}
	n.server = st.PodEntry("x/server").IngressChain + "-ports"
	s, err := traffic.Serve(n.netns["server"], n.ips["server"]+":80", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return n
}

func (n *admissionNode) req(cmd wire.Command, name string) *wire.Request {
	return &wire.Request{Command: cmd, ContainerID: "ctr-" + name, Netns: n.netns[name], IfName: "eth0",
		Args: wire.PodArgs{Namespace: "x", Name: name, UID: "uid-" + name}}
}

func (n *admissionNode) add(name, app string) {
	n.t.Helper()
	n.src.mu.Lock()
	n.src.pods["x/"+name] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name),
		Labels: map[string]string{"app": app}}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	n.src.mu.Unlock()
	if n.netns[name] == "" {
		n.netns[name] = nstest.Netns(n.t, name)
	}
	res, err := n.a.Add(context.Background(), n.req(wire.CmdAdd, name))
	if err != nil {
		n.t.Fatalf("ADD %s: %v", name, err)
	}
	n.ips[name] = res.IPs[0].Address.IP.String()
}

// admitted tells whether the server's peer set has the pod, read with nft(8).
func (n *admissionNode) admitted(name string) bool {
	_, err := nstest.Exec(n.node, "nft", "get", "element", "inet", "terway", n.server, "{", n.ips[name]+" . tcp . 80", "}")
	return err == nil
}

// admit runs the admission loop's step by hand.
func (n *admissionNode) admit() error {
	n.a.mu.Lock()
	defer n.a.mu.Unlock()
	return n.a.admitHeld(context.Background(), "admission", 0)
}

// reaches tells whether the pod opens a TCP connection to the server.
func (n *admissionNode) reaches(name string) bool {
	return traffic.Probe(n.netns[name], "tcp", n.ips["server"]+":80", 300*time.Millisecond)
}

// pendingAdmission returns what a full nftables plan of the document
// with no pod held back would still write: the admissions' part. The
// admission loop must be stopped.
func (n *admissionNode) pendingAdmission() []string {
	n.t.Helper()
	keys, _ := n.a.held.keys()
	held := n.a.held.release(keys...)
	st, _, err := n.a.renderSettled()
	n.a.held.restore(held)
	return n.nftPlanOf(st, err)
}

// nftPlanOf returns what a full nftables plan of st would write, one
// operation per line, the commit line aside; err is st's render's.
func (n *admissionNode) nftPlanOf(st *spec.NodeState, err error) []string {
	n.t.Helper()
	if err != nil {
		n.t.Fatal(err)
	}
	p, err := n.a.eng.Plan(context.Background(), st, engine.PlanOptions{Kinds: []string{nft.Kind}, Full: true})
	if err != nil {
		n.t.Fatal(err)
	}
	var out []string
	for _, o := range p.Ops {
		if o.Action != "~" { // the commit line
			out = append(out, string(o.Action)+" "+o.Text)
		}
	}
	return out
}

// TestAddAdmitsAsPeerAfterAnswering: an ADD sets up its pod held back as
// a peer: the pod's own part is there (its network, its source entry), the
// server's policy does not admit it yet, by nft(8) and by a real TCP
// connection, and what the node still lacks is exactly the pod's address
// in the server's peer set. The admission writes that, and the pod
// connects. A resync leaves a held pod held (only an admission, under the
// agent's lock, makes a pod a peer), a retried ADD leaves an admitted pod
// admitted, a CHECK admits before it compares, and a DEL of a held pod
// leaves nothing of it. The admission loop is stopped: each step admits
// by hand.
func TestAddAdmitsAsPeerAfterAnswering(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	ctx := context.Background()

	n.add("p1", "peer")
	if keys, _ := a.held.keys(); !slices.Equal(keys, []string{"x/p1"}) {
		t.Fatalf("after ADD p1, held back: %v; want x/p1", keys)
	}
	if out := nstest.Run(t, n.node, "nft", "list", "set", "inet", "terway", "pod-sources"); !strings.Contains(out, n.ips["p1"]) {
		t.Errorf("after ADD p1, its own source entry is missing:\n%s", out)
	}
	if n.admitted("p1") || n.reaches("p1") {
		t.Errorf("p1 held back, yet admitted by the server's policy (set %v, connects %v)", n.admitted("p1"), n.reaches("p1"))
	}
	want := []string{"+ nft element " + n.server + " { " + n.ips["p1"] + " . tcp . 80 }"}
	if got := n.pendingAdmission(); !slices.Equal(got, want) {
		t.Errorf("p1 held back: the node lacks %q; want only its admission %q", got, want)
	}
	if err := n.admit(); err != nil {
		t.Fatal(err)
	}
	if !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("p1 admitted: in the server's set %v, connects %v; want both", n.admitted("p1"), n.reaches("p1"))
	}
	if got := n.pendingAdmission(); len(got) != 0 {
		t.Errorf("after the admission, a full plan still has %q", got)
	}
	if keys, _ := a.held.keys(); len(keys) != 0 || a.admittedBy(t, "admission") != 2 { // the server's, then p1's
		t.Errorf("after the admission: held %v, admissions observed %d; want none held, 2", keys, a.admittedBy(t, "admission"))
	}

	// A retried ADD of p1's live sandbox: p1 stays admitted.
	n.add("p1", "peer")
	if keys, _ := a.held.keys(); len(keys) != 0 || !n.admitted("p1") {
		t.Errorf("after a retried ADD of p1: held %v, p1 admitted %v; want none held, admitted", keys, n.admitted("p1"))
	}

	// A resync neither admits a held pod nor undoes its own part.
	n.add("p2", "peer")
	for _, full := range []bool{false, true} {
		if out := a.sync(ctx, full); out.Again {
			t.Errorf("resync: %+v", out)
		}
		if keys, _ := a.held.keys(); n.admitted("p2") || !slices.Equal(keys, []string{"x/p2"}) {
			t.Errorf("after a resync (full %v): p2 admitted %v, held %v; want held, not admitted", full, n.admitted("p2"), keys)
		}
	}
	if out := nstest.Run(t, n.node, "nft", "list", "set", "inet", "terway", "pod-sources"); !strings.Contains(out, n.ips["p2"]) {
		t.Errorf("after the resyncs, p2's own source entry is missing:\n%s", out)
	}
	if err := n.admit(); err != nil || !n.admitted("p2") {
		t.Errorf("admitting p2 after the resyncs: %v, admitted %v", err, n.admitted("p2"))
	}

	// A CHECK admits, then compares.
	n.add("p3", "peer")
	if err := a.Check(ctx, n.req(wire.CmdCheck, "p3")); err != nil {
		t.Errorf("CHECK of a held pod: %v", err)
	}
	if !n.admitted("p3") || a.admittedBy(t, "check") != 1 {
		t.Errorf("after CHECK: p3 admitted %v, check admissions %d", n.admitted("p3"), a.admittedBy(t, "check"))
	}

	// A DEL of a held pod ends its hold and leaves nothing of it.
	n.add("p4", "peer")
	if err := a.Del(ctx, n.req(wire.CmdDel, "p4")); err != nil {
		t.Fatal(err)
	}
	if keys, _ := a.held.keys(); len(keys) != 0 {
		t.Errorf("after DEL of held p4: held %v", keys)
	}
	if out := nstest.Run(t, n.node, "nft", "list", "table", "inet", "terway"); strings.Contains(out, n.ips["p4"]+" ") || strings.Contains(out, n.ips["p4"]+"\n") {
		t.Errorf("after DEL of held p4, its address %s is still in the table:\n%s", n.ips["p4"], out)
	}
	if got := n.pendingAdmission(); len(got) != 0 {
		t.Errorf("after DEL of held p4, a full plan has %q", got)
	}
}

// TestAdmissionLoopAdmits: with the admission loop running, a pod ADDed is
// admitted soon after, without a resync. The step that writes its address
// into the server's peer set, which it keeps, reads that back after it
// has let go of the agent's lock (phase check).
func TestAdmissionLoopAdmits(t *testing.T) {
	n := newAdmissionNode(t, nil)
	n.a.waitAdmitted(t)
	checks := n.a.observed(t, "terway_peer_admission_step_seconds", "check")
	n.add("p1", "peer")
	n.a.waitAdmitted(t)
	if !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("after the admission loop: p1 in the server's set %v, connects %v; want both", n.admitted("p1"), n.reaches("p1"))
	}
	if got := n.a.admittedBy(t, "admission"); got != 2 {
		t.Errorf("admissions observed: %d, want 2 (the server, p1)", got)
	}
	if got := n.a.observed(t, "terway_peer_admission_step_seconds", "check") - checks; got != 1 {
		t.Errorf("read-backs after the step that admitted p1: %d, want 1", got)
	}
}

// TestAdmitBeforeAnswer: with AdmitBeforeAnswer, an ADD answers with its
// pod admitted already.
func TestAdmitBeforeAnswer(t *testing.T) {
	n := newAdmissionNode(t, func(c *Config) { c.AdmitBeforeAnswer = true })
	n.a.stopAdmissionLoop()
	n.add("p1", "peer")
	if keys, _ := n.a.held.keys(); len(keys) != 0 || !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("ADD answered: held %v, p1 in the server's set %v, connects %v; want none held, both", keys, n.admitted("p1"), n.reaches("p1"))
	}
	if got := n.a.admittedBy(t, "add"); got != 2 {
		t.Errorf("admissions by the ADD: %d, want 2 (the server, p1)", got)
	}
}

// TestAdmissionWaitsForQuiet: the loop's wait. While ADDs are under way
// or came less than admitQuiet ago it waits, never past the delay, less
// what its render ahead takes.
func TestAdmissionWaitsForQuiet(t *testing.T) {
	a := &Agent{cfg: Config{PeerAdmissionDelay: 200 * time.Millisecond}, held: newHeldPeers(func(float64) {})}
	now := time.Now()
	if w := a.admissionWait(now, now.Add(-time.Second)); w != 0 {
		t.Errorf("quiet agent, hold 1 s old: wait %v, want 0", w)
	}
	a.held.noteAdd(now.Add(-5 * time.Millisecond))
	if w := a.admissionWait(now, now.Add(-10*time.Millisecond)); w != admitQuiet-5*time.Millisecond {
		t.Errorf("an ADD 5 ms ago: wait %v, want %v", w, admitQuiet-5*time.Millisecond)
	}
	if w := a.admissionWait(now, now.Add(-195*time.Millisecond)); w != 5*time.Millisecond {
		t.Errorf("an ADD 5 ms ago, hold 195 ms old: wait %v, want the 5 ms left", w)
	}
	if w := a.admissionWait(now, now.Add(-200*time.Millisecond)); w != 0 {
		t.Errorf("hold at the delay: wait %v, want 0", w)
	}
	a.held.ahead.Store(int64(30 * time.Millisecond)) // the last render ahead
	if w := a.admissionWait(now, now.Add(-170*time.Millisecond)); w != 0 {
		t.Errorf("renders ahead take 30 ms, hold 170 ms old: wait %v, want 0", w)
	}
	if w := a.admissionWait(now, now.Add(-165*time.Millisecond)); w != 5*time.Millisecond {
		t.Errorf("renders ahead take 30 ms, hold 165 ms old: wait %v, want 5 ms", w)
	}
	a.held.ahead.Store(int64(time.Second))
	if w := a.admissionWait(now, now.Add(-95*time.Millisecond)); w != 5*time.Millisecond {
		t.Errorf("renders ahead take 1 s, hold 95 ms old: wait %v, want 5 ms (no earlier than half the delay)", w)
	}
	a.held.ahead.Store(0)
	a.held.noteAdd(now.Add(-time.Second))
	a.pending.add(spec.Allocation{Spec: spec.AllocationSpec{ContainerID: "c", IfName: "eth0"}})
	if w := a.admissionWait(now, now.Add(-10*time.Millisecond)); w != time.Millisecond {
		t.Errorf("an ADD under way: wait %v, want 1 ms (then look again)", w)
	}
}

// TestResyncKeepsAnAdmissionDuringItsRender: a resync that rendered while
// a pod was held, and plans after the pod's admission, renders nftables
// again under the lock and keeps the admission, without cutting its run.
func TestResyncKeepsAnAdmissionDuringItsRender(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	ctx := context.Background()
	n.add("p1", "peer")

	rendered, resume := make(chan struct{}), make(chan struct{})
	a.planning = func() { close(rendered); <-resume }
	done := make(chan runOutcome)
	go func() { done <- a.sync(ctx, false) }()
	<-rendered
	a.planning = nil
	if err := n.admit(); err != nil || !n.admitted("p1") {
		t.Fatalf("admission during the resync: %v, admitted %v", err, n.admitted("p1"))
	}
	close(resume)
	if out := <-done; out.Again {
		t.Errorf("the resync was cut short by an admission: %+v", out)
	}
	if !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("after the resync: p1 in the server's set %v, connects %v; want both", n.admitted("p1"), n.reaches("p1"))
	}
}

// TestAdmissionInChunks: the loop's step admits at most a chunk of pods,
// the longest held first, so that an ADD waits for one chunk at most; the
// chunk is what fits in admitBudget at the last admissions' cost per pod.
func TestAdmissionInChunks(t *testing.T) {
	for _, c := range []struct {
		perPod time.Duration
		want   int
	}{{0, 4}, {time.Millisecond / 4, 200}, {12 * time.Millisecond, 4}, {time.Second, 4}} {
		if got := admitChunk(c.perPod); got != c.want {
			t.Errorf("admitChunk(%v) = %d, want %d", c.perPod, got, c.want)
		}
	}
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	names := []string{"p1", "p2", "p3"}
	for _, name := range names {
		n.add(name, "peer")
	}
	a.mu.Lock()
	err := a.admitHeld(context.Background(), "admission", 2)
	a.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		if got, want := n.admitted(name), i < 2; got != want {
			t.Errorf("after a chunk of 2: %s admitted %v, want %v", name, got, want)
		}
	}
	if keys, _ := a.held.keys(); !slices.Equal(keys, []string{"x/p3"}) {
		t.Errorf("after a chunk of 2: held %v, want x/p3", keys)
	}
}

// TestAdmissionRendersAhead: the loop renders a step ahead, off the lock,
// with the admission's cache, which then becomes the main one; the step's
// render under the lock finds the admitted pod compiled as a peer and
// resolves no policy again, and it admits the pods rendered ahead only,
// not one whose ADD came meanwhile. Without the render ahead the step resolves
// the policy itself; after the pin moved, the caches keep their places.
func TestAdmissionRendersAhead(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	step := func(ahead *renderedAhead) render.CacheStats {
		t.Helper()
		a.mu.Lock()
		defer a.mu.Unlock()
		if err := a.admitStep(context.Background(), ahead, 0); err != nil {
			t.Fatal(err)
		}
		return a.views.main.Stats()
	}

	n.add("p1", "peer")
	ahead := a.preRenderAdmission([]string{"x/p1"})
	if ahead == nil || ahead.cache != a.views.admit {
		t.Fatalf("render ahead: %+v, want the admission's cache", ahead)
	}
	// An ADD during the render ahead: its pod waits for the next step,
	// which renders it ahead in turn.
	n.add("p4", "peer")
	main := a.views.main
	if st := step(ahead); st.PoliciesResolved != 0 || st.GroupsRendered != 0 || !st.Patched {
		t.Errorf("the step after a render ahead resolved %d policies and rendered %d groups (patched %v), want none (a patch)",
			st.PoliciesResolved, st.GroupsRendered, st.Patched)
	}
	if !a.held.has("x/p4") || n.admitted("p4") {
		t.Errorf("p4, held after the render ahead: still held %v, admitted %v; want held, not admitted", a.held.has("x/p4"), n.admitted("p4"))
	}
	if a.views.main != ahead.cache || a.views.admit != main {
		t.Errorf("the caches did not change places")
	}
	if !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("p1 in the server's set %v, connects %v; want both", n.admitted("p1"), n.reaches("p1"))
	}

	n.add("p2", "peer")
	if st := step(nil); st.PoliciesResolved == 0 {
		t.Errorf("the step with no render ahead resolved no policy: the check above cannot tell")
	}
	if !n.admitted("p2") {
		t.Errorf("p2 not admitted")
	}

	n.add("p3", "peer")
	ahead = a.preRenderAdmission([]string{"x/p3"})
	a.views.mu.Lock()
	a.views.seq++ // the pin moved since the render ahead
	a.views.mu.Unlock()
	main = a.views.main
	step(ahead)
	if a.views.main != main {
		t.Errorf("the caches changed places although the pin moved since the render ahead")
	}
	if !n.admitted("p3") || !n.reaches("p3") {
		t.Errorf("p3 in the server's set %v, connects %v; want both", n.admitted("p3"), n.reaches("p3"))
	}
}

// TestAdmissionWithoutPolicies: with no policy among the newest inputs nor
// pinned for CNI requests, an admission step makes its pods peers without
// planning or writing nftables (no apply phase in
// terway_peer_admission_step_seconds); a policy that comes later admits
// them at once. While a policy is still pinned, the step applies as
// before.
func TestAdmissionWithoutPolicies(t *testing.T) {
	n := newAdmissionNode(t, nil)
	a := n.a
	a.stopAdmissionLoop()
	ctx := context.Background()
	applies := func() float64 { return a.phaseSums(t, "terway_peer_admission_step_seconds")["apply"][1] }
	setPolicies := func(p []*networkingv1.NetworkPolicy) {
		n.src.mu.Lock()
		n.src.policies = p
		n.src.mu.Unlock()
	}
	n.src.mu.Lock()
	policies := n.src.policies
	n.src.mu.Unlock()

	// The policy is gone from the inputs, but CNI requests still render it
	// (pinned) until a resync plans, as long as no request's pod is one
	// the policy involves (renderviews.go): the step applies.
	setPolicies(nil)
	n.add("p0", "other")
	before := applies()
	if err := n.admit(); err != nil {
		t.Fatal(err)
	}
	if applies() == before || a.held.has("x/p0") {
		t.Errorf("a policy still pinned: the step applied %v, p0 still held %v; want an apply, no hold", applies() != before, a.held.has("x/p0"))
	}

	if out := a.sync(ctx, true); out.Again {
		t.Fatalf("sync without the policy: %+v", out)
	}
	n.add("p1", "peer")
	if !a.held.has("x/p1") {
		t.Fatal("p1 is not held back after its ADD")
	}
	before = applies()
	if err := n.admit(); err != nil {
		t.Fatal(err)
	}
	if a.held.has("x/p1") || applies() != before {
		t.Errorf("no policy: p1 still held %v, the step applied %v; want neither", a.held.has("x/p1"), applies() != before)
	}
	// Nothing was left to write: a full nftables plan of the document is
	// empty.
	if rest := n.pendingAdmission(); len(rest) > 0 {
		t.Errorf("no policy, p1 admitted without a write: a full plan still writes %v", rest)
	}

	setPolicies(policies)
	if out := a.sync(ctx, true); out.Again {
		t.Fatalf("sync with the policy back: %+v", out)
	}
	if !n.admitted("p1") || !n.reaches("p1") {
		t.Errorf("the policy back: p1 in the server's set %v, connects %v; want both", n.admitted("p1"), n.reaches("p1"))
	}
}
