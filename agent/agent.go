package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Agent is one node's terwayd.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	src   inputs.Source
	store *store.Store
	reg   *netns.Registry
	eng   *engine.Engine
	m     *metrics
	// addMu guards the queue of ADDs waiting to be set up together
	// (add_batch.go); addLeading says one of them is taking the lock.
	addMu      sync.Mutex
	addQueue   []*addWaiter
	addLeading bool
	// journal keeps the operations executed, for /applied.
	journal journal
	// events publishes pod problems as Kubernetes Events (events.go).
	events *problemEvents

	// mu serialises every allocate-render-apply: one writer of the kernel
	// and the store at a time keeps a pod's ADD from racing a resync.
	mu sync.Mutex
	// resynced is set after the first full reconcile following the inputs'
	// first complete listing; until then nothing is pruned.
	resynced atomic.Bool
	// cloudReady is set once the ENI reconciler knows our ENIs and the
	// store's holdings (ENI modes).
	cloudReady atomic.Bool
}

// New opens the store and prepares the agent; Run starts it. The node's
// network namespace is the one the process runs in.
func New(cfg Config, src inputs.Source) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StorePath(), store.Options{})
	if err != nil {
		return nil, fmt.Errorf("open allocation store: %w", err)
	}
	reg := netns.NewRegistry("")
	m := newMetrics()
	if cfg.ENI != nil {
		m.reg.MustRegister(newCloudCollector(cfg.ENI))
	}
	return &Agent{
		cfg: cfg, log: cfg.Logger, src: src, store: st, reg: reg,
		eng: engine.New(reg), m: m, events: newProblemEvents(cfg.Logger, cfg.NodeName, cfg.Events),
	}, nil
}

// Close releases the store and namespace handles.
func (a *Agent) Close() error {
	a.events.close()
	a.reg.Close()
	return a.store.Close()
}

// Run serves the CNI socket and health endpoints and reconciles until ctx
// ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.src.Start(ctx); err != nil {
		return fmt.Errorf("start inputs: %w", err)
	}
	if a.cfg.ENI != nil {
		if err := a.startCloud(ctx); err != nil {
			return err
		}
	}
	ln, err := wire.Listen(a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on CNI socket: %w", err)
	}
	cniServer := &http.Server{Handler: a.m.instrument(server.NewHTTPHandler(a, a.log)), ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 2)
	go func() { errs <- serve(cniServer, ln, "CNI socket "+a.cfg.Socket) }()
	var health *http.Server
	if a.cfg.HealthAddr != "" {
		hl, err := net.Listen("tcp", a.cfg.HealthAddr)
		if err != nil {
			cniServer.Close()
			return fmt.Errorf("listen on health address %s: %w", a.cfg.HealthAddr, err)
		}
		health = &http.Server{Handler: a.healthMux(), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- serve(health, hl, "health endpoint "+a.cfg.HealthAddr) }()
	}
	a.log.Info("agent started", "node", a.cfg.NodeName, "mode", a.cfg.Render.Mode, "socket", a.cfg.Socket, "health", a.cfg.HealthAddr)
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); a.resyncLoop(ctx) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = cniServer.Shutdown(shutdown)
	if health != nil {
		_ = health.Shutdown(shutdown)
	}
	<-loopDone
	return runErr
}

func serve(s *http.Server, ln net.Listener, what string) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// resyncLoop reconciles the whole node on every input change and every
// ResyncInterval, but never before the inputs are synced.
func (a *Agent) resyncLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.ResyncInterval)
	defer ticker.Stop()
	poll := time.NewTicker(100 * time.Millisecond) // until the first sync
	defer poll.Stop()
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-a.src.Changed():
		case <-ticker.C:
			full = true // re-read nftables too: catch drift
		case <-poll.C:
			if a.resynced.Load() {
				poll.Stop()
				continue
			}
		}
		if !a.src.Synced() {
			continue
		}
		first := !a.resynced.Load()
		rendered, err := a.reconcile(ctx, full || first)
		if err != nil {
			a.log.Warn("reconcile failed; the next resync retries", "err", err)
		}
		// Ready once a document could be rendered (the Node is known), even
		// if some kernel items failed: one broken pod must not keep every
		// other pod from starting.
		if first && rendered {
			a.resynced.Store(true)
			a.log.Info("inputs synced; first full reconcile done")
		}
	}
}

// Reconcile renders the whole node and applies it.
func (a *Agent) Reconcile(ctx context.Context, full bool) error {
	_, err := a.reconcile(ctx, full)
	return err
}

// reconcile is Reconcile that also says whether a document was rendered.
func (a *Agent) reconcile(ctx context.Context, full bool) (rendered bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	state, err := a.renderLocked()
	if err != nil {
		a.m.reconcileErrors.Inc()
		return false, err
	}
	a.publishRendered(state)
	reason := "resync"
	if full {
		reason = "full resync"
	}
	rep, err := a.apply(ctx, reason, state, engine.PlanOptions{Full: full})
	a.m.observeReport(rep, time.Since(start))
	if err != nil {
		return true, err
	}
	if len(rep.Results) > 0 {
		a.log.Info("reconciled", "operations", len(rep.Results), "applied", rep.Applied(), "failed", rep.Failed(), "writes", rep.Writes, "duration", rep.Duration)
	}
	return true, rep.Err()
}

// renderLocked renders from the inputs' snapshot and the store.
func (a *Agent) renderLocked() (*spec.NodeState, error) {
	return a.renderSnapshot(a.src.Snapshot())
}

// renderSnapshot renders from a snapshot already taken and the store.
func (a *Agent) renderSnapshot(snap inputs.Snapshot) (*spec.NodeState, error) {
	if snap.Node == nil {
		return nil, fmt.Errorf("node %s: no Node object in the inputs yet", a.cfg.NodeName)
	}
	allocs, err := a.store.List()
	if err != nil {
		return nil, err
	}
	a.m.allocations.Set(float64(len(allocs)))
	return render.Render(render.Inputs{
		Config: a.cfg.Render, Node: snap.Node, Pods: snap.Pods, Namespaces: snap.Namespaces,
		Policies: snap.Policies, Allocations: allocs, ENIs: a.eniInputs(),
	})
}

// PlanText renders the node and returns the full plan, one operation per
// line, and the number of operations. It changes nothing.
func (a *Agent) PlanText(ctx context.Context) (string, int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	state, err := a.renderLocked()
	if err != nil {
		return "", 0, err
	}
	p, err := a.eng.Plan(ctx, state, engine.PlanOptions{Full: true})
	if err != nil {
		return "", 0, err
	}
	return p.String(), len(p.Ops), nil
}

// Ready reports whether the agent serves pods: inputs synced and the first
// full reconcile done.
func (a *Agent) Ready() bool {
	return a.src.Synced() && a.resynced.Load() && (a.cfg.ENI == nil || a.cloudReady.Load())
}
