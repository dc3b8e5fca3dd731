package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// podSource is an inputs.Source with a fixed Node and pods, always synced.
type podSource struct {
	node     *corev1.Node
	mu       sync.Mutex
	pods     map[string]*corev1.Pod
	policies []*networkingv1.NetworkPolicy
	// namespaces are the Namespace objects, for namespaceSelector peers.
	namespaces []*corev1.Namespace
	// listed, when set, is the pods' list Snapshot answers with, as the
	// agent's real sources do: one list, sorted by key, while nothing
	// changes. Else Snapshot lists pods in the map's order.
	listed []*corev1.Pod
}

func (s *podSource) Start(context.Context) error { return nil }
func (s *podSource) Synced() bool                { return true }
func (s *podSource) Changed() <-chan struct{}    { return nil }
func (s *podSource) Node() *corev1.Node          { return s.node }
func (s *podSource) Snapshot() inputs.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := inputs.Snapshot{Node: s.node, Policies: slices.Clone(s.policies), Namespaces: slices.Clone(s.namespaces)}
	if s.listed != nil {
		snap.Pods = s.listed
		return snap
	}
	for _, p := range s.pods {
		snap.Pods = append(snap.Pods, p)
	}
	return snap
}
func (s *podSource) Pod(ns, name string) (*corev1.Pod, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[ns+"/"+name]
	return p, ok
}

// podSourceAgent starts an agent (not its runner: tests call sync) on a
// node namespace of its own, with a podSource of the Node node-1 whose pod
// CIDR is podCIDR and whose InternalIP is nodeIP.
func podSourceAgent(t testing.TB, podCIDR, nodeIP string) (*Agent, *podSource, string) {
	t.Helper()
	node := nstest.Netns(t, "node")
	dir := t.TempDir()
	src := &podSource{
		node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "n1"}, Spec: corev1.NodeSpec{PodCIDR: podCIDR},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}}},
		pods: map[string]*corev1.Pod{},
	}
	a, err := newAgent(Config{NodeName: "node-1", StateDir: dir, Socket: filepath.Join(dir, "terway.sock"),
		PodTimeout: time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, src, node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a, src, node
}

// TestResyncPlansWithoutLockAndLosesNoADD: a resync holds the agent's
// lock only to execute. While it is between its render and its
// observation of the node, a CNI ADD completes (it does not wait for the
// resync), and the resync, which rendered the node without that pod but
// then observes its veth and route, must not delete them: it leaves the
// pod to the next run, which sees it rendered and changes nothing.
func TestResyncPlansWithoutLockAndLosesNoADD(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.4.0/24", "198.19.4.1")
	podNetns := nstest.Netns(t, "pod")
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v, ready %v", out, a.Ready())
	}

	// The resync renders (no pod yet), then stops before observing.
	rendered, resume := make(chan struct{}), make(chan struct{})
	a.planning = func() { close(rendered); <-resume }
	done := make(chan runOutcome)
	go func() { done <- a.sync(ctx, false) }()
	<-rendered
	a.planning = nil

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	src.mu.Lock()
	src.pods["x/a"] = pod
	src.mu.Unlock()
	res, err := a.Add(ctx, &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-a", Netns: podNetns, IfName: "eth0",
		Args: wire.PodArgs{Namespace: "x", Name: "a", UID: "uid-a"}})
	if err != nil {
		t.Fatalf("ADD while a resync is planning: %v", err)
	}
	select {
	case <-done:
		t.Fatal("the resync ended before it was let go; the test shows nothing")
	default:
	}
	ip := res.IPs[0].Address.IP.String()
	veth := spec.HostVethName("x/a")

	close(resume)
	out := <-done
	if !out.Again {
		t.Error("the resync that dropped the ADD's pod did not ask to run again")
	}
	links := nstest.Run(t, node, "ip", "-o", "link")
	routes := nstest.Run(t, node, "ip", "route", "show", ip)
	if !strings.Contains(links, veth) || !strings.Contains(routes, veth) {
		t.Fatalf("the resync removed the pod the ADD set up meanwhile:\nlinks:\n%s\nroute to %s:\n%s\napplied:\n%s", links, ip, routes, a.journal.text())
	}
	// Neither round of that resync may have touched the pod.
	resyncLeftPodAlone(t, a, veth)
	if st := a.NodeStatus(); !st.Ready || len(st.Failing) != 0 {
		t.Errorf("status: %+v", st)
	}
}

// resyncLeftPodAlone fails t if a resync's journal section names veth (a
// deletion put back by a later round is a broken pod meanwhile), and
// checks that the next full sync converges to an empty plan.
func resyncLeftPodAlone(t *testing.T, a *Agent, veth string) {
	t.Helper()
	section := ""
	for _, line := range strings.Split(a.journal.text(), "\n") {
		if strings.HasPrefix(line, "# ") {
			section = line
			continue
		}
		if strings.HasSuffix(section, "resync") && strings.Contains(line, veth) {
			t.Errorf("the resync changed the ADD's pod: %q in %q\n%s", line, section, a.journal.text())
			break
		}
	}
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again {
		t.Errorf("the next sync asked again: %+v", out)
	}
	text, n, err := a.planText(ctx, a.eng)
	if err != nil || n != 0 {
		t.Errorf("plan after the next sync (%v): %d operations\n%s", err, n, text)
	}
}

// TestResyncKeepsAnAddEndingDuringItsRender: a resync that starts after an
// ADD's apply, but renders while the ADD's pod is still pending, renders
// without the pod and then observes its veth and route. It must leave
// them alone. Before, the ADD had noted its writes before the resync began
// noting (so the resync never saw them), and by the resync's step 2 the pod
// was no longer pending: the resync deleted the pod's veth and route, and
// its next round made them again on new interfaces. TestAgentConcurrentAddDel
// caught that once in many runs (two pods' routes on ifindexes its plan's
// link read did not have).
func TestResyncKeepsAnAddEndingDuringItsRender(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.9.0/24", "198.19.9.1")
	podNetns := nstest.Netns(t, "pod")
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v, ready %v", out, a.Ready())
	}

	// The ADD has applied (and noted what it wrote); it stops before its
	// pod stops being pending.
	written, finish := make(chan struct{}), make(chan struct{})
	a.setUpWritten = func() { close(written); <-finish }
	done := addPodA(ctx, a, src, podNetns)
	<-written
	a.setUpWritten = nil
	veth := spec.HostVethName("x/a")
	before := nstest.Run(t, node, "ip", "-o", "link", "show", veth)

	// A resync starts now and renders: the pod is pending, so left out.
	rendered, resume := make(chan struct{}), make(chan struct{})
	a.planning = func() { close(rendered); <-resume }
	synced := make(chan runOutcome)
	go func() { synced <- a.sync(ctx, false) }()
	<-rendered
	a.planning = nil

	// The ADD ends; then the resync observes and executes.
	close(finish)
	res := <-done
	if res.err != nil {
		t.Fatalf("ADD: %v", res.err)
	}
	close(resume)
	<-synced

	after, err := nstest.Exec(node, "ip", "-o", "link", "show", veth)
	if err != nil || after != before {
		t.Errorf("the resync replaced the ADD's veth:\nbefore: %safter: %s (%v)", before, after, err)
	}
	if routes := nstest.Run(t, node, "ip", "route", "show", res.ip); !strings.Contains(routes, veth) {
		t.Errorf("the pod's route is gone after the resync: %q", routes)
	}
	resyncLeftPodAlone(t, a, veth)
}

// TestResyncCommitsNFTWithoutLock: a resync commits its nftables plan
// without the agent's lock (a large policy change's staged fill takes
// seconds): a CNI ADD completes while that commit is held. The ADD's own
// commit changed objects the resync's plan changes too, so the resync's is
// refused as stale and asks to run again; the next run converges, with both
// pods isolated by the new policy.
func TestResyncCommitsNFTWithoutLock(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.5.0/24", "198.19.5.1")
	ctx := context.Background()
	add := func(name, netns string) (string, error) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: name, UID: types.UID("uid-" + name)}, Spec: corev1.PodSpec{NodeName: "node-1"}}
		src.mu.Lock()
		src.pods["x/"+name] = pod
		src.mu.Unlock()
		res, err := a.Add(ctx, &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-" + name, Netns: netns, IfName: "eth0",
			Args: wire.PodArgs{Namespace: "x", Name: name, UID: "uid-" + name}})
		if err != nil {
			return "", fmt.Errorf("ADD x/%s: %w", name, err)
		}
		return res.IPs[0].Address.IP.String(), nil
	}
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v, ready %v", out, a.Ready())
	}
	ipA, err := add("a", nstest.Netns(t, "a"))
	if err != nil {
		t.Fatal(err)
	}

	// A policy isolating every pod of x for ingress; the resync stops just
	// before committing it.
	src.mu.Lock()
	src.policies = []*networkingv1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "deny", UID: "p1"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}}
	src.mu.Unlock()
	reached, resume := make(chan struct{}), make(chan struct{})
	a.committing = func() { close(reached); <-resume }
	done := make(chan runOutcome)
	go func() { done <- a.sync(ctx, false) }()
	select {
	case <-reached:
	case out := <-done:
		t.Fatalf("the resync planned no nftables change for the new policy: %+v", out)
	}
	a.committing = nil

	netnsB := nstest.Netns(t, "b")
	type result struct {
		ip  string
		err error
	}
	added := make(chan result, 1)
	go func() { ip, err := add("b", netnsB); added <- result{ip, err} }()
	var ipB string
	select {
	case r := <-added:
		if r.err != nil {
			close(resume)
			t.Fatal(r.err)
		}
		ipB = r.ip
	case <-time.After(30 * time.Second):
		close(resume)
		t.Fatal("a CNI ADD waited for the resync's nftables commit")
	}
	close(resume)
	if out := <-done; !out.Again {
		t.Error("the resync whose nftables plan the ADD made stale did not ask to run again")
	}
	for i := 0; i < 3; i++ {
		if out := a.sync(ctx, false); !out.Again {
			break
		}
	}
	if out := a.sync(ctx, true); out.Again {
		t.Errorf("a full sync after the next ones asked again: %+v", out)
	}
	dispatch := nstest.Run(t, node, "nft", "list", "map", "inet", "terway", "ingress-pods")
	for ip, key := range map[string]string{ipA: "x/a", ipB: "x/b"} {
		if !strings.Contains(dispatch, spec.HostVethName(key)+`" : jump`) {
			t.Errorf("pod %s (%s) is not isolated by the new policy:\n%s", key, ip, dispatch)
		}
	}
	text, n, err := a.planText(ctx, a.eng)
	if err != nil || n != 0 {
		t.Errorf("plan after the syncs (%v): %d operations\n%s", err, n, text)
	}
}

// TestResyncLeavesPendingAddToIt: a resync that runs between an ADD's
// allocation and its set-up (Add lets the agent's lock go in between)
// writes nothing of that pod: not its veth, not its address in the node's
// shared sets. Before, it rendered the pod from the store and wrote its
// part, and the ADD's commit of the same elements then made whichever
// came second stale: a large policy change's commit lost every time.
func TestResyncLeavesPendingAddToIt(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.7.0/24", "198.19.7.1")
	podNetns := nstest.Netns(t, "pod")
	ctx := context.Background()
	if out := a.sync(ctx, true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v, ready %v", out, a.Ready())
	}
	held, resume := make(chan struct{}), make(chan struct{})
	a.allocated = func() { close(held); <-resume }
	done := addPodA(ctx, a, src, podNetns)
	<-held
	a.allocated = nil
	// The allocation's commit runs beside the set-up (Add): once it is
	// done, the store lists the pod the resync must leave alone.
	if err := a.store.Settle(); err != nil {
		t.Fatal(err)
	}
	allocs, err := a.store.List()
	if err != nil || len(allocs) != 1 {
		t.Fatalf("the held ADD's allocation: %v, %d allocations", err, len(allocs))
	}
	ip, veth := allocs[0].Spec.IP, spec.HostVethName("x/a")

	out := a.sync(ctx, false)
	if !out.Again {
		t.Error("the resync that left a pending ADD's pod alone did not ask to run again")
	}
	for _, line := range strings.Split(a.journal.text(), "\n") {
		if strings.Contains(line, veth) || strings.Contains(line, " "+ip+" ") || strings.Contains(line, ip+"/") || strings.HasSuffix(line, " "+ip) {
			t.Errorf("the resync wrote part of the pod whose ADD was under way: %q\n%s", line, a.journal.text())
			break
		}
	}
	if links := nstest.Run(t, node, "ip", "-o", "link"); strings.Contains(links, veth) {
		t.Errorf("the resync made the pending pod's veth %s", veth)
	}

	close(resume)
	res := <-done
	if res.err != nil || res.ip != ip {
		t.Fatalf("the ADD after the resync: ip %q (allocated %s), %v", res.ip, ip, res.err)
	}
	if out := a.sync(ctx, true); out.Again {
		t.Errorf("the next sync asked again: %+v", out)
	}
	text, n, err := a.planText(ctx, a.eng)
	if err != nil || n != 0 {
		t.Errorf("plan after the next sync (%v): %d operations\n%s", err, n, text)
	}
	if links := nstest.Run(t, node, "ip", "-o", "link"); !strings.Contains(links, veth) {
		t.Errorf("the pod's veth %s is missing after its ADD", veth)
	}
}

// TestAllocationDoesNotWaitForTheLock: an ADD allocates its address while
// the agent's lock is held (by the set-up of the ADDs before it, a DEL or
// a resync's plan) and sets the pod up once the lock is free. Before, the
// allocation took the lock: with 8 ADDs at once each waited for the whole
// set-up of the batch before it (23 ms of a 47 ms ADD at the agent).
func TestAllocationDoesNotWaitForTheLock(t *testing.T) {
	a, src, _, podNetns := syncedPodAgent(t)
	ctx := context.Background()
	allocated := make(chan struct{})
	a.allocated = func() { close(allocated) }
	a.mu.Lock()
	locked := true
	defer func() {
		if locked {
			a.mu.Unlock()
		}
	}()
	done := addPodA(ctx, a, src, podNetns)
	select {
	case <-allocated:
	case r := <-done:
		t.Fatalf("the ADD ended while the lock was held, without allocating: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("the ADD's allocation waited for the agent's lock")
	}
	if err := a.store.Settle(); err != nil { // its commit runs beside the set-up
		t.Fatal(err)
	}
	allocs, err := a.store.List()
	if err != nil || len(allocs) != 1 {
		t.Fatalf("the ADD's allocation: %v, %d allocations", err, len(allocs))
	}
	select {
	case r := <-done:
		t.Fatalf("the ADD answered while the lock was held: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	a.mu.Unlock()
	locked = false
	res := <-done
	if res.err != nil || res.ip != allocs[0].Spec.IP {
		t.Fatalf("the ADD once the lock was free: ip %q (allocated %s), %v", res.ip, allocs[0].Spec.IP, res.err)
	}
	text, n, err := a.planText(ctx, a.eng)
	if err != nil || n != 0 {
		t.Errorf("plan after the ADD (%v): %d operations\n%s", err, n, text)
	}
}

// added is the outcome of addPodA's ADD.
type added struct {
	ip  string
	err error
}

// addPodA puts pod x/a in src and sends its CNI ADD (into podNetns) in the
// background; the channel gets the outcome.
func addPodA(ctx context.Context, a *Agent, src *podSource, podNetns string) <-chan added {
	src.mu.Lock()
	src.pods["x/a"] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	src.mu.Unlock()
	done := make(chan added, 1)
	go func() {
		res, err := a.Add(ctx, &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-a", Netns: podNetns, IfName: "eth0",
			Args: wire.PodArgs{Namespace: "x", Name: "a", UID: "uid-a"}})
		if err != nil {
			done <- added{err: err}
			return
		}
		done <- added{ip: res.IPs[0].Address.IP.String()}
	}()
	return done
}

// TestDelLeavesPodWhoseAddIsPending: the DEL of a sandbox the agent no
// longer records (an old one, or a repeated DEL) leaves the pod alone while
// an ADD of the pod is under way: here a retried ADD of its live sandbox,
// which gets the same address and waits for the agent's lock. DEL renders
// without the pending ADDs (one may hold an address it just released), so
// it must ask them: before, it found no attachment of the pod and deleted
// the live pod's veth and its elements in the node's sets.
func TestDelLeavesPodWhoseAddIsPending(t *testing.T) {
	a, src, node, podNetns := syncedPodAgent(t)
	ctx := context.Background()
	first := <-addPodA(ctx, a, src, podNetns)
	if first.err != nil {
		t.Fatal(first.err)
	}
	veth := spec.HostVethName("x/a")

	held, resume := make(chan struct{}), make(chan struct{})
	a.allocated = func() { close(held); <-resume }
	retried := addPodA(ctx, a, src, podNetns)
	<-held
	a.allocated = nil
	err := a.Del(ctx, &wire.Request{Command: wire.CmdDel, ContainerID: "ctr-old", Netns: "/proc/self/ns/net-gone", IfName: "eth0",
		Args: wire.PodArgs{Namespace: "x", Name: "a", UID: "uid-a"}})
	links := nstest.Run(t, node, "ip", "-o", "link")
	sources := nstest.Run(t, node, "nft", "list", "set", "inet", "terway", "pod-sources")
	close(resume)
	if err != nil {
		t.Fatalf("DEL of the old sandbox: %v", err)
	}
	if !strings.Contains(links, veth) {
		t.Errorf("the DEL of an old sandbox deleted the live pod's veth %s while its retried ADD was pending", veth)
	}
	if !strings.Contains(sources, first.ip) {
		t.Errorf("the DEL of an old sandbox took the live pod's %s out of pod-sources:\n%s", first.ip, sources)
	}
	if r := <-retried; r.err != nil || r.ip != first.ip {
		t.Fatalf("the retried ADD: ip %q (first %s), %v", r.ip, first.ip, r.err)
	}
	text, n, err := a.planText(ctx, a.eng)
	if err != nil || n != 0 {
		t.Errorf("plan after the retried ADD (%v): %d operations\n%s", err, n, text)
	}
}

// syncedPodAgent is podSourceAgent (pod CIDR 198.18.7.0/24) after its first
// full sync, with a pod namespace for addPodA.
func syncedPodAgent(t *testing.T) (*Agent, *podSource, string, string) {
	t.Helper()
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.7.0/24", "198.19.7.1")
	podNetns := nstest.Netns(t, "pod")
	if out := a.sync(context.Background(), true); out.Again || !a.Ready() {
		t.Fatalf("first sync: %+v, ready %v", out, a.Ready())
	}
	return a, src, node, podNetns
}

// TestFullResyncTrustsAnUnmovedGeneration: a full resync on a converged
// node reads the host's nftables table once; the next ones, with nothing
// but the agent's own commits since (a pod ADDed between), conclude from
// the ruleset generation, and /metrics counts both. A commit of someone
// else's makes the next full resync read, and repair what it changed.
func TestFullResyncTrustsAnUnmovedGeneration(t *testing.T) {
	nstest.RequireRoot(t)
	a, src, node := podSourceAgent(t, "198.18.6.0/24", "198.19.6.1")
	ctx := context.Background()
	checks := func() (read, byGen uint64) {
		t.Helper()
		return a.observedCounter(t, "terway_nft_full_checks_total", "read"), a.observedCounter(t, "terway_nft_full_checks_total", "generation")
	}
	sync := func(when string) {
		t.Helper()
		if out := a.sync(ctx, true); out.Again {
			t.Fatalf("%s: full resync: %+v", when, out)
		}
	}
	sync("first")
	sync("second") // converged: reads and agrees
	read0, gen0 := checks()
	if read0 == 0 {
		t.Fatalf("after two full resyncs: %d reads, %d by the generation; want a read", read0, gen0)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	src.mu.Lock()
	src.pods["x/a"] = pod
	src.mu.Unlock()
	if _, err := a.Add(ctx, &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-a", Netns: nstest.Netns(t, "a"), IfName: "eth0",
		Args: wire.PodArgs{Namespace: "x", Name: "a", UID: "uid-a"}}); err != nil {
		t.Fatal(err)
	}
	a.waitAdmitted(t)
	sync("after an ADD")
	sync("again")
	if read, byGen := checks(); read != read0 || byGen < gen0+2 {
		t.Errorf("full resyncs after the agent's own commits: reads %d -> %d, by the generation %d -> %d; want no read, two by the generation",
			read0, read, gen0, byGen)
	}

	// Someone else's commit: the next full resync reads and repairs.
	want := nstest.Run(t, node, "nft", "list", "chain", "inet", "terway", "forward")
	nstest.Run(t, node, "nft", "flush", "chain", "inet", "terway", "forward")
	read1, _ := checks()
	sync("after a foreign flush")
	if read, _ := checks(); read != read1+1 {
		t.Errorf("full resync after another writer's commit: reads %d -> %d, want one more", read1, read)
	}
	if out := nstest.Run(t, node, "nft", "list", "chain", "inet", "terway", "forward"); out != want || !strings.Contains(want, "vmap") {
		t.Errorf("the flushed chain was not repaired:\n%s\nwant\n%s", out, want)
	}
}

// observedCounter is the value of a counter with one label, at value.
func (a *Agent) observedCounter(t *testing.T, name, value string) uint64 {
	t.Helper()
	_, v, ok := a.seriesAt(t, name, value)
	if !ok {
		t.Fatalf("no series %s{%q}", name, value)
	}
	return uint64(v)
}

// TestAddFailsUnlessItsAllocationIsDurable: an ADD's allocation commits
// beside its set-up, and the ADD answers once it is durable. A commit
// that fails fails the ADD, and what the ADD set up is undone: no veth,
// no allocation. The next ADD of the pod sets it up.
func TestAddFailsUnlessItsAllocationIsDurable(t *testing.T) {
	a, src, node, podNetns := syncedPodAgent(t)
	ctx := context.Background()
	a.persist = func(commit func() error) error {
		if err := commit(); err != nil {
			return err
		}
		return errors.New("injected: the disk went away")
	}
	veth := spec.HostVethName("x/a")
	res := <-addPodA(ctx, a, src, podNetns)
	if res.err == nil || !strings.Contains(res.err.Error(), "record the allocation") || !strings.Contains(res.err.Error(), "injected") {
		t.Fatalf("the ADD whose allocation failed to commit: ip %q, %v; want an error naming the allocation's record", res.ip, res.err)
	}
	if links := nstest.Run(t, node, "ip", "-o", "link"); strings.Contains(links, veth) {
		t.Errorf("the failed ADD left its veth %s:\n%s", veth, links)
	}
	if allocs, err := a.store.List(); err != nil || len(allocs) != 0 {
		t.Errorf("after the failed ADD the store has %d allocations (%v); want none", len(allocs), err)
	}

	a.persist = nil
	res = <-addPodA(ctx, a, src, podNetns)
	if res.err != nil {
		t.Fatalf("the next ADD: %v", res.err)
	}
	if links := nstest.Run(t, node, "ip", "-o", "link"); !strings.Contains(links, veth) {
		t.Errorf("the next ADD did not make the veth %s", veth)
	}
	if out := a.sync(ctx, true); out.Again {
		t.Errorf("the sync after the ADDs asked again: %+v", out)
	}
	if text, n, err := a.planText(ctx, a.eng); err != nil || n != 0 {
		t.Errorf("plan after the ADDs (%v): %d operations\n%s", err, n, text)
	}
}

// TestAddRendersItsAllocationWhoseCommitEndsDuringTheList: the batch's
// render reads the store while the ADD's allocation commits beside it.
// When the commit ends right after that read, the render still has the
// pod: found committing before the read, it is taken from pending. (Found
// after, it was in neither, and the ADD failed with "did not render" in
// terwayctl bench's resident set-up, four ADDs at a time.)
func TestAddRendersItsAllocationWhoseCommitEndsDuringTheList(t *testing.T) {
	a, src, node, podNetns := syncedPodAgent(t)
	ctx := context.Background()
	proceed := make(chan struct{})
	a.persist = func(commit func() error) error {
		<-proceed
		return commit()
	}
	var once sync.Once
	a.listed = func() {
		// The ADD's batch render, its commit still held: end the commit
		// now, after the store was read, and wait until the pod is no
		// longer marked committing.
		if _, ok := a.pending.uncommitted("ctr-a/eth0"); !ok {
			return
		}
		once.Do(func() {
			close(proceed)
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if _, ok := a.pending.uncommitted("ctr-a/eth0"); !ok {
					return
				}
				time.Sleep(time.Millisecond)
			}
			t.Error("the ADD's commit did not end")
		})
	}
	res := <-addPodA(ctx, a, src, podNetns)
	a.persist, a.listed = nil, nil
	if res.err != nil {
		t.Fatalf("the ADD whose commit ended during its render's read of the store: %v", res.err)
	}
	if links := nstest.Run(t, node, "ip", "-o", "link"); !strings.Contains(links, spec.HostVethName("x/a")) {
		t.Errorf("the ADD answered %s without making the pod's veth", res.ip)
	}
	if allocs, err := a.store.List(); err != nil || len(allocs) != 1 || allocs[0].Spec.IP != res.ip {
		t.Errorf("after the ADD the store has %+v (%v); want the pod's %s", allocs, err, res.ip)
	}
}
