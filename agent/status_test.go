package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

func failed(o op.Op, err error) engine.Result { return engine.Result{Op: o, Err: err} }

// TestStatusTrackerItems: an item's failures count up with a doubling
// backoff; a sync between full resyncs leaves it alone until its retry is
// due, unless its operation changed; a success or a whole-node sync that
// no longer plans it clears it; every nftables op is one item; a conflict
// is no failure.
func TestStatusTrackerItems(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	s := newStatusTracker(clk)
	route := op.Op{Kind: "route", Action: op.Create, Key: "host/table 254/198.18.0.9/32", Text: "route 198.18.0.9/32 dev tw1", Pod: "x/a"}
	nftA := op.Op{Kind: "nft", Action: op.Create, Key: "chain in_x", Text: "chain in_x", Pod: "x/a"}
	nftB := op.Op{Kind: "nft", Action: op.Update, Key: "commit", Text: "nft commit"}
	eperm := fmt.Errorf("transaction refused: %w", unix.EPERM)
	for i := 1; i <= 3; i++ {
		s.record(&engine.Report{Results: []engine.Result{failed(route, errors.New("no such device")), failed(nftA, eperm), failed(nftB, eperm)}})
		items := s.failing()
		if len(items) != 2 {
			t.Fatalf("attempt %d: %d items, want 2 (the route and one nft table): %+v", i, len(items), items)
		}
		nftItem, routeItem := items[0], items[1]
		if nftItem.Kind != "nft" || nftItem.Key != nftItemKey || nftItem.Pod != "" || nftItem.Attempts != i {
			t.Errorf("attempt %d: nft item %+v", i, nftItem)
		}
		if routeItem.Pod != "x/a" || routeItem.Attempts != i || routeItem.Error != "no such device" {
			t.Errorf("attempt %d: route item %+v", i, routeItem)
		}
		if want := clk.Now().Add(backoff(i)); !routeItem.NextRetry.Equal(want) || backoff(i) != retryBase<<(i-1) {
			t.Errorf("attempt %d: next retry %s, want %s (backoff %s)", i, routeItem.NextRetry, want, backoff(i))
		}
		if !routeItem.Since.Equal(time.Unix(1000, 0)) {
			t.Errorf("attempt %d: since %s, want the first failure", i, routeItem.Since)
		}
		k := keyOf(route)
		if !s.waiting(k, route.String(), clk.Now()) {
			t.Errorf("attempt %d: the route is not held back before its retry", i)
		}
		if s.waiting(k, "+ route 198.18.0.9/32 dev tw2", clk.Now()) {
			t.Errorf("attempt %d: a changed route is held back", i)
		}
		if got := s.nextRetry(); !got.Equal(clk.Now().Add(backoff(i))) {
			t.Errorf("attempt %d: next retry of all %s", i, got)
		}
		clk.Step(backoff(i))
		if s.waiting(k, route.String(), clk.Now()) {
			t.Errorf("attempt %d: the route is held back after its retry is due", i)
		}
	}
	if backoff(100) != retryMax {
		t.Errorf("backoff(100) = %s, want the cap %s", backoff(100), retryMax)
	}
	if ok, reasons := s.enforcing(); ok || len(reasons) != 1 || !strings.Contains(reasons[0], "nft table inet terway") {
		t.Errorf("enforcing with the nft table failing = %v %q", ok, reasons)
	}
	// A conflict is not the table's fault: no attempt counted.
	if !s.record(&engine.Report{Results: []engine.Result{failed(nftB, fmt.Errorf("changed: %w", unix.ERESTART))}}) {
		t.Error("a conflict was not reported")
	}
	if it := s.failing()[0]; it.Attempts != 3 {
		t.Errorf("a conflict counted as an attempt: %+v", it)
	}
	// Nor is a plan our reconciler refused as stale (nothing written).
	if !s.record(&engine.Report{Results: []engine.Result{failed(nftB, fmt.Errorf("table: %w; plan again", nft.ErrStale))}}) {
		t.Error("a stale refusal was not reported as a conflict")
	}
	if it := s.failing()[0]; it.Attempts != 3 {
		t.Errorf("a stale refusal counted as an attempt: %+v", it)
	}
	// A whole-node sync that plans neither: the route is kept (in
	// backoff), the nft table realised.
	s.settle(&engine.Report{}, map[itemKey]bool{keyOf(route): true}, true)
	if items := s.failing(); len(items) != 1 || items[0].Kind != "route" {
		t.Errorf("after a sync that kept the route only: %+v", items)
	}
	if ok, _ := s.enforcing(); !ok {
		t.Error("a pod's route failing makes the node not enforcing")
	}
	s.record(&engine.Report{Results: []engine.Result{{Op: route}}})
	if items := s.failing(); len(items) != 0 {
		t.Errorf("after the route succeeded: %+v", items)
	}
}

// TestWriteTrackerTouches: a resync drops the operations that may concern
// a pod a CNI request wrote while it planned, and nothing else.
func TestWriteTrackerTouches(t *testing.T) {
	var w writeTracker
	if w.start(); w.stop() != nil {
		t.Fatal("nothing written, yet something reported")
	}
	w.note(&spec.NodeState{}, engine.PlanOptions{Pods: []string{"x/a"}}) // not tracking: ignored
	w.start()
	state := &spec.NodeState{Pods: []*spec.Pod{{Key: "x/a", IP: "198.18.0.5", Netns: "/var/run/netns/a"}}}
	w.note(state, engine.PlanOptions{Pods: []string{"x/a"}})
	w.note(&spec.NodeState{}, engine.PlanOptions{Pods: []string{"x/gone"}, PodIPs: map[string]string{"x/gone": "198.18.0.7"}})
	// A rollback's release notes its pod with no document.
	w.note(nil, engine.PlanOptions{Pods: []string{"x/refused"}, PodIPs: map[string]string{"x/refused": "198.18.0.9"},
		Namespaces: []string{"/var/run/netns/r"}})
	got := w.stop()
	if got == nil {
		t.Fatal("writes while tracking not reported")
	}
	veth := spec.HostVethName("x/a")
	cases := []struct {
		o    op.Op
		want bool
	}{
		{op.Op{Kind: "link", Pod: "x/a", Text: "veth"}, true},
		{op.Op{Kind: "address", Netns: "/var/run/netns/a", Text: "address in a"}, true},
		{op.Op{Kind: "link", Action: op.Delete, Text: "veth " + veth + " (orphan)"}, true},
		{op.Op{Kind: "rule", Action: op.Delete, Text: "rule priority 1000 from 198.18.0.7/32 lookup 1001"}, true},
		{op.Op{Kind: "route", Action: op.Delete, Key: "host/table 254/198.18.0.5/32"}, true},
		{op.Op{Kind: "route", Action: op.Delete, Text: "route 198.18.0.50/32 dev tw9"}, false},
		{op.Op{Kind: "link", Pod: "x/b", Text: "veth"}, false},
		{op.Op{Kind: "sysctl", Text: "sysctl net.ipv4.ip_forward"}, false},
		{op.Op{Kind: "nft", Pod: "x/a", Text: "chain in_x"}, false},
		{op.Op{Kind: "link", Pod: "x/refused", Text: "veth"}, true},
		{op.Op{Kind: "route", Action: op.Create, Key: "host/table 254/198.18.0.9/32"}, true},
		{op.Op{Kind: "neighbor", Netns: "/var/run/netns/r", Text: "neighbour in r"}, true},
	}
	for _, c := range cases {
		if got.touches(c.o) != c.want {
			t.Errorf("touches(%+v) = %v, want %v", c.o, !c.want, c.want)
		}
	}
}

// staticSource is an inputs.Source with a fixed Node, always synced.
type staticSource struct{ node *corev1.Node }

func (s staticSource) Start(context.Context) error         { return nil }
func (s staticSource) Synced() bool                        { return true }
func (s staticSource) Snapshot() inputs.Snapshot           { return inputs.Snapshot{Node: s.node} }
func (s staticSource) Changed() <-chan struct{}            { return nil }
func (s staticSource) Node() *corev1.Node                  { return s.node }
func (s staticSource) Pod(_, _ string) (*corev1.Pod, bool) { return nil, false }

// testAgent is an Agent with no store, no engine and no kernel: enough for
// its status, health, events and endpoints.
func testAgent(t *testing.T, cfg Config, client *fake.Clientset) *Agent {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.NodeName = "node-1"
	var ev *problemEvents
	if client != nil {
		ev = newProblemEvents(log, cfg.NodeName, client.CoreV1())
	} else {
		ev = newProblemEvents(log, cfg.NodeName, nil)
	}
	t.Cleanup(ev.close)
	a := &Agent{cfg: cfg, log: log, m: newMetrics(), events: ev, status: newStatusTracker(clocktesting.NewFakeClock(time.Unix(1000, 0))),
		src: staticSource{node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-uid-1"}}}}
	a.resynced.Store(true)
	return a
}

// TestEnforcementEvents: losing enforcement (a node-level item fails) is
// one Warning Event on the Node naming the error, however many syncs see
// it; getting it back is one Normal Event; a pod's failing item is not a
// node event.
func TestEnforcementEvents(t *testing.T) {
	client := fake.NewClientset()
	a := testAgent(t, Config{}, client)
	events := func() []corev1.Event {
		l, err := client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	waitEvents := func(n int) []corev1.Event {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			evs := events()
			if len(evs) >= n || time.Now().After(deadline) {
				return evs
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	nftOp := op.Op{Kind: "nft", Key: "commit", Text: "nft commit"}
	podOp := op.Op{Kind: "route", Key: "host/table 254/198.18.0.9/32", Pod: "x/a"}
	a.status.record(&engine.Report{Results: []engine.Result{failed(podOp, errors.New("no such device"))}})
	a.healthChanged()
	for i := 0; i < 3; i++ {
		a.status.record(&engine.Report{Results: []engine.Result{failed(nftOp, fmt.Errorf("add chain forward: %w", unix.EPERM))}})
		a.healthChanged()
	}
	evs := waitEvents(1)
	time.Sleep(200 * time.Millisecond) // a second event, if any, would be recorded by now
	if evs = events(); len(evs) != 1 {
		t.Fatalf("%d events after losing enforcement 3 times, want 1: %+v", len(evs), evs)
	}
	ev := evs[0]
	if ev.Type != corev1.EventTypeWarning || ev.Reason != ReasonEnforcementLost || ev.InvolvedObject.Kind != "Node" ||
		ev.InvolvedObject.Name != "node-1" || ev.InvolvedObject.UID != "node-uid-1" || !strings.Contains(ev.Message, "operation not permitted") ||
		!strings.Contains(ev.Message, "nft table inet terway") || ev.Source.Component != eventComponent {
		t.Errorf("loss event: %+v", ev)
	}
	a.status.record(&engine.Report{Results: []engine.Result{{Op: nftOp}}})
	a.healthChanged()
	a.healthChanged()
	evs = waitEvents(2)
	if len(evs) != 2 {
		t.Fatalf("%d events after recovery, want 2: %+v", len(evs), evs)
	}
	var restored *corev1.Event
	for i := range evs {
		if evs[i].Reason == ReasonEnforcementRestored {
			restored = &evs[i]
		}
	}
	if restored == nil || restored.Type != corev1.EventTypeNormal || restored.InvolvedObject.Name != "node-1" {
		t.Errorf("restore event: %+v", evs)
	}
}

func get(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

// TestEndpoints: pprof only with the flag; /readyz follows enforcement
// and names the first errors; /status is JSON and read only.
func TestEndpoints(t *testing.T) {
	a := testAgent(t, Config{}, nil)
	mux := a.healthMux()
	if code, _ := get(t, mux, http.MethodGet, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without the flag: HTTP %d, want 404", code)
	}
	if code, _ := get(t, mux, http.MethodGet, "/debug/pprof/profile?seconds=1"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/profile without the flag: HTTP %d, want 404", code)
	}
	if code, body := get(t, mux, http.MethodGet, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz of a healthy agent: %d %s", code, body)
	}
	a.status.record(&engine.Report{Results: []engine.Result{failed(op.Op{Kind: "nft", Key: "commit"},
		fmt.Errorf("refused: add chain forward: %w\nadd chain input: %w", unix.EPERM, unix.EPERM))}})
	code, body := get(t, mux, http.MethodGet, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "nft table inet terway: refused: add chain forward: operation not permitted (and 1 more lines") {
		t.Errorf("/readyz with the nft table failing: %d %q", code, body)
	}
	code, body = get(t, mux, http.MethodGet, "/status")
	var st Status
	if code != http.StatusOK || json.Unmarshal([]byte(body), &st) != nil || st.Ready || len(st.Failing) != 1 || st.Failing[0].Attempts != 1 {
		t.Errorf("/status: %d %s", code, body)
	}
	if code, _ := get(t, mux, http.MethodPost, "/status"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /status: HTTP %d, want 405", code)
	}

	b := testAgent(t, Config{EnablePprof: true}, nil)
	if code, body := get(t, b.healthMux(), http.MethodGet, "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ with the flag: HTTP %d", code)
	}
}

// TestPlanViewLockFreeAndShared: /plan is computed without the agent's
// lock (an ADD holding it does not hold /plan up, and /plan computing does
// not hold an ADD up); requests that arrive while a plan is computed share
// the next computation; computations are at least minInterval apart, and
// every answer was computed after its request arrived.
func TestPlanViewLockFreeAndShared(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	a := testAgent(t, Config{}, nil)
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var mu sync.Mutex
	computations, lockFree := 0, 0
	a.plans = newPlanView(clk, time.Second, func(ctx context.Context) (string, int, error) {
		mu.Lock()
		computations++
		n := computations
		if a.mu.TryLock() { // what an ADD needs is free while /plan computes
			lockFree++
			a.mu.Unlock()
		}
		mu.Unlock()
		entered <- struct{}{}
		<-release
		return fmt.Sprintf("+ op %d\n", n), 1, nil
	})
	mux := a.healthMux()

	// An ADD holds the agent's lock: /plan is answered all the same.
	a.mu.Lock()
	answers := make(chan string, 10)
	go func() { _, body := get(t, mux, http.MethodGet, "/plan"); answers <- body }()
	<-entered
	clk.Step(time.Millisecond)
	// Requests arriving during that computation wait for the next one.
	for i := 0; i < 4; i++ {
		go func() { _, body := get(t, mux, http.MethodGet, "/plan"); answers <- body }()
	}
	time.Sleep(50 * time.Millisecond) // let them queue
	release <- struct{}{}
	if got := <-answers; got != "+ op 1\n" {
		t.Fatalf("first answer %q", got)
	}
	a.mu.Unlock()
	// The next computation waits for the minimum interval.
	for clk.Waiters() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case <-entered:
		t.Fatal("a second plan was computed before the minimum interval")
	default:
	}
	clk.Step(time.Second)
	<-entered
	release <- struct{}{}
	for i := 0; i < 4; i++ {
		if got := <-answers; got != "+ op 2\n" {
			t.Errorf("queued request %d answered %q, want the shared second plan", i, got)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// The first ran while the "ADD" held the lock (so /plan does not need
	// it); the second found it free (so /plan does not hold it).
	if computations != 2 || lockFree != 1 {
		t.Errorf("%d computations (want 2), %d of them with the agent's lock free (want 1, the second)", computations, lockFree)
	}
}

// TestScopedCommitDoesNotClearTheTable: a CNI request's scoped commit that
// writes the nftables table does not clear the table's failure a sync saw
// (its pod's elements say nothing of the rest of the table: /readyz would
// turn green until the next sync failed again), but makes it due for a
// retry now. Its pod's own items are realised as ever; a sync's success
// clears the table.
func TestScopedCommitDoesNotClearTheTable(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1000, 0))
	s := newStatusTracker(clk)
	nftCommit := op.Op{Kind: "nft", Action: op.Update, Key: "commit", Text: "nft commit"}
	route := op.Op{Kind: "route", Action: op.Create, Key: "host/table 254/198.18.0.9/32", Text: "route 198.18.0.9/32 dev tw1", Pod: "x/a"}
	s.record(&engine.Report{Results: []engine.Result{failed(nftCommit, fmt.Errorf("observe: %w", unix.EPERM)), failed(route, errors.New("no such device"))}})
	s.record(&engine.Report{Results: []engine.Result{failed(nftCommit, fmt.Errorf("observe: %w", unix.EPERM))}})
	if ok, _ := s.enforcing(); ok {
		t.Fatal("enforcing after the table failed")
	}
	if !s.waiting(keyOf(nftCommit), "", clk.Now()) {
		t.Fatal("the table is not in backoff after two failures")
	}
	if !s.recordScoped(&engine.Report{Results: []engine.Result{{Op: nftCommit}, {Op: route}}}) {
		t.Error("a scoped commit of the failing table did not ask for a recheck")
	}
	if ok, why := s.enforcing(); ok {
		t.Errorf("a scoped commit cleared the table's failure (enforcing, %v)", why)
	}
	for _, it := range s.failing() {
		if it.Pod == "x/a" {
			t.Errorf("the scoped commit's own pod item is still failing: %+v", it)
		}
	}
	if s.waiting(keyOf(nftCommit), "", clk.Now()) {
		t.Error("the table is still in backoff after a scoped commit wrote it")
	}
	if s.recordScoped(&engine.Report{Results: []engine.Result{{Op: nftCommit}}}) {
		t.Error("a second scoped commit asked for a recheck again")
	}
	s.record(&engine.Report{Results: []engine.Result{{Op: nftCommit}}})
	if ok, why := s.enforcing(); !ok {
		t.Errorf("a sync's success did not clear the table: %v", why)
	}
}
