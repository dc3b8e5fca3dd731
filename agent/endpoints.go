package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/terway-reconciler/terway/load"
)

// healthMux serves the health address: /healthz (the process answers),
// /readyz (serving and enforcing), /status (every failing item, JSON),
// /metrics, /applied, /plan, /inputs, and /debug/pprof when enabled. None
// of them takes the agent's lock: polling them never delays a CNI request.
func (a *Agent) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := a.NodeStatus()
		if !st.Ready {
			http.Error(w, "not ready:\n"+strings.Join(st.Reasons, "\n"), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "read only: GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.NodeStatus())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.m.reg, promhttp.HandlerOpts{}))
	if a.cfg.EnablePprof {
		// As Kubernetes components serve them, behind a flag: profiles
		// cost CPU and show memory to whoever can reach the address.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// /applied prints the operations executed so far: what changed on
	// the node, and in which round.
	mux.HandleFunc("/applied", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(a.journal.text()))
	})
	// /plan prints what a full resync would change now, without changing
	// it: the plan people read before anything happens, and how tools see
	// that the node converged (an empty body).
	mux.HandleFunc("/plan", func(w http.ResponseWriter, r *http.Request) {
		res := a.plans.get(r.Context())
		if res.err != nil {
			http.Error(w, res.err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Terway-Plan-Operations", strconv.Itoa(res.n))
		w.Header().Set("X-Terway-Plan-Time", res.at.UTC().Format(time.RFC3339Nano))
		_, _ = w.Write([]byte(res.text))
	})
	mux.HandleFunc(load.AgentInputsPath, a.serveInputs)
	return mux
}

// serveInputs serves the inputs the agent renders from — its render
// configuration, the inputs source's snapshot (Node, Namespaces, Pods,
// NetworkPolicies) and the store's allocations and the cloud's ENIs — as
// one YAML stream that load.Objects.Read reads (terwayctl explain, matrix
// and what-if --agent). Rendering what it serves gives the document the
// agent's next sync renders, barring changes meanwhile.
//
// It is read-only (GET and HEAD; anything else is refused) and takes no
// lock of the agent's: the snapshot is a copy and the store is read in one
// read transaction, as a resync's render does. It shows what /plan shows
// and the pods' labels and the policies besides, to whoever reaches the
// health address (the loopback by default).
func (a *Agent) serveInputs(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read only: GET", http.StatusMethodNotAllowed)
		return
	}
	if !a.src.Synced() {
		// A partial listing would explain a node that does not exist.
		http.Error(w, "inputs not synced yet", http.StatusServiceUnavailable)
		return
	}
	snap := a.src.Snapshot()
	allocs, err := a.store.List()
	if err != nil {
		http.Error(w, "allocation store: "+err.Error(), http.StatusInternalServerError)
		return
	}
	cfg := a.cfg.Render
	objs := &load.Objects{Config: &cfg, Namespaces: snap.Namespaces, Pods: snap.Pods, Policies: snap.Policies,
		Allocations: allocs, ENIs: a.eniInputs()}
	if snap.Node != nil {
		objs.Nodes = append(objs.Nodes, snap.Node)
	}
	var buf bytes.Buffer
	// The source's problems go first, as comments: the objects are valid
	// without them, and a reader should know what the agent lacks.
	for _, e := range snap.Errors {
		fmt.Fprintf(&buf, "# input problem: %s\n", strings.ReplaceAll(e.Error(), "\n", " "))
	}
	if err := objs.Encode(&buf); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("X-Terway-Input-Problems", strconv.Itoa(len(snap.Errors)))
	_, _ = w.Write(buf.Bytes())
}

// NodeStatus is the agent's state: readiness with its reasons and every
// failing item. It takes no lock of the agent's.
func (a *Agent) NodeStatus() Status {
	st := Status{Node: a.cfg.NodeName}
	a.status.snapshot(&st)
	enforcing, reasons := a.status.enforcing()
	switch {
	case !a.src.Synced():
		reasons = append([]string{"inputs not synced yet"}, reasons...)
	case !a.resynced.Load():
		reasons = append([]string{"first sync not done"}, reasons...)
	case a.cfg.ENI != nil && !a.cloudReady.Load():
		reasons = append([]string{"cloud inventory not known yet"}, reasons...)
	}
	st.Ready = a.Ready() && enforcing
	st.Reasons = reasons
	return st
}

// planMinInterval spaces /plan's computations: a full plan reads the whole
// node (about 4 s at 2,000 pods), and tools poll /plan to see convergence.
const planMinInterval = time.Second

// planView serves /plan: one computation at a time, shared by every
// request that arrived before it started, and at most one per minInterval.
// A request is always answered with a plan computed after it arrived, so
// an empty answer means the node was converged at some point after the
// question; that is what tools polling for convergence need.
type planView struct {
	clock       clock.Clock
	minInterval time.Duration
	compute     func(ctx context.Context) (string, int, error)
	// turn is held by the request computing (a channel, so that a waiter
	// can give up when its client does).
	turn chan struct{}
	// last is the latest result; guarded by turn.
	last planResult
}

type planResult struct {
	text string
	n    int
	err  error
	at   time.Time // when its computation started
}

func newPlanView(clk clock.Clock, minInterval time.Duration, compute func(ctx context.Context) (string, int, error)) *planView {
	return &planView{clock: clk, minInterval: minInterval, compute: compute, turn: make(chan struct{}, 1)}
}

// get returns a plan whose computation started after the call.
func (v *planView) get(ctx context.Context) planResult {
	asked := v.clock.Now()
	select {
	case v.turn <- struct{}{}:
	case <-ctx.Done():
		return planResult{err: ctx.Err()}
	}
	defer func() { <-v.turn }()
	if !v.last.at.IsZero() && !v.last.at.Before(asked) {
		return v.last // computed for a request that came after ours
	}
	if !v.last.at.IsZero() {
		if wait := v.last.at.Add(v.minInterval).Sub(v.clock.Now()); wait > 0 {
			t := v.clock.NewTimer(wait)
			select {
			case <-t.C():
			case <-ctx.Done():
				t.Stop()
				return planResult{err: ctx.Err()}
			}
		}
	}
	start := v.clock.Now()
	// The computation serves the requests queued behind this one too: it
	// must not end with this client.
	text, n, err := v.compute(context.WithoutCancel(ctx))
	v.last = planResult{text: text, n: n, err: err, at: start}
	return v.last
}
