package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/cni/forward"
	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"

	networkingv1 "k8s.io/api/networking/v1"
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
	// adds are the ADDs waiting to be set up together (add_batch.go).
	// views keeps the parts of the last renders that later ones reuse
	// (an ADD renders the node, and its cost must not grow with the
	// cluster's policies), and the policies CNI requests render with
	// (renderviews.go).
	views *renderViews
	adds  batchQueue[*addWaiter]
	// dels are the DELs waiting to be torn down together (del_batch.go).
	dels batchQueue[*delWaiter]
	// journal keeps the operations executed, for /applied.
	journal journal
	// events publishes pod problems as Kubernetes Events (events.go).
	events *problemEvents

	// mu serialises the writers of the kernel and the releases of the
	// store: a CNI request's render-apply, a DEL's release, and a
	// resync's nftables plan and execution (its long observation of the
	// node runs without it; see resync.go).
	mu sync.Mutex
	// allocMu makes an ADD's allocation and its entry in pending one step
	// for whoever lists the store and the pending ADDs together
	// (settledAllocations). An allocation takes allocMu, not mu: it must
	// not wait for the set-up of the ADDs before it, nor for a resync.
	allocMu sync.Mutex
	// writes notes the pods CNI requests write while a resync plans
	// without mu.
	writes writeTracker
	// pending holds the ADDs between their allocation and the end of
	// their set-up (resync.go: a resync leaves them to their ADD).
	pending pendingAdds
	// held are the pods set up but not admitted as policy peers yet
	// (admission.go); the admission loop runs until admitStop closes.
	held      *heldPeers
	admitStop chan struct{}
	admitDone chan struct{}
	// departing are the pods deleted whose addresses are still to be
	// withdrawn from the peer sets (withdrawal.go); the withdrawal loop
	// runs until admitStop closes.
	departing    *departedPeers
	withdrawDone chan struct{}
	// resyncCommit is closed when the nftables commit of the last resync
	// that committed outside mu is done (nil: none yet); set under mu
	// (withdrawal.go).
	resyncCommit chan struct{}
	closeOnce    sync.Once
	// nftStale counts the resyncs in a row whose nftables commit, made
	// without mu, was refused as stale (resync.go).
	nftStale atomic.Int32
	// nftAlwaysLocked makes every resync commit nftables under mu, as
	// before (the baseline of a benchmark).
	nftAlwaysLocked bool
	// runner runs the resyncs (runner.go); status keeps every failing
	// item (status.go); health remembers whether the node was enforcing
	// its document at the last look, for the Node's Events.
	runner *runner
	status *statusTracker
	health healthState
	// plans serves /plan (endpoints.go).
	plans *planView
	clock clock.Clock
	// planning, when set, is called by a resync after its render, before
	// it observes the node without the lock (tests hold it there).
	planning func()
	// committing, when set, is called by a resync just before it executes
	// a non-empty nftables plan (tests hold it there).
	committing func()
	// allocated, when set, is called by an ADD between its allocation and
	// its set-up (tests hold it there).
	allocated func()
	// persist, when set, runs the store's commit of an ADD's allocation
	// in place of calling it (tests make it fail, or hold it).
	persist func(commit func() error) error
	// listed, when set, is called by settledAllocations after it read the
	// store (tests end a commit there).
	listed func()
	// setUpWritten, when set, is called by an ADD batch after its apply,
	// before its pods stop being pending (tests hold it there).
	setUpWritten func()
	// committed, when set, is called by a resync with the report of its
	// nftables plan once executed (a benchmark times a policy change to
	// the commit that enforces it).
	committed func(*engine.Report)
	// resynced is set after the first full reconcile following the inputs'
	// first complete listing; until then nothing is pruned. firstResync
	// closes after the first sync whose nftables part was written
	// (firstResyncOnce): that one, or a later one if its commit failed.
	resynced        atomic.Bool
	firstResync     chan struct{}
	firstResyncOnce sync.Once
	// cloudReady is set once the ENI reconciler knows our ENIs and the
	// store's holdings (ENI modes).
	cloudReady atomic.Bool
	// noCloudOnce says once why a node without cloud access advertises
	// no aliyun/eni (the count is refreshed every few seconds).
	noCloudOnce sync.Once
}

// New opens the store and prepares the agent; Run starts it. The node's
// network namespace is the one the process runs in.
func New(cfg Config, src inputs.Source) (*Agent, error) {
	return newAgent(cfg, src, "")
}

// newAgent is New acting on the namespace hostNetns as the node (empty:
// the process's own); tests run an agent in a test namespace with it.
func newAgent(cfg Config, src inputs.Source, hostNetns string) (*Agent, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Open(cfg.StorePath(), store.Options{})
	if err != nil {
		return nil, fmt.Errorf("open allocation store: %w", err)
	}
	reg := netns.NewRegistry(hostNetns)
	m := newMetrics()
	m.reg.MustRegister(newAntispoofCollector(reg, cfg.Logger))
	if cfg.ENI != nil {
		m.reg.MustRegister(newCloudCollector(cfg.ENI))
	}
	a := &Agent{
		cfg: cfg, log: cfg.Logger, src: src, store: st, reg: reg,
		eng: engine.New(reg), m: m, events: newProblemEvents(cfg.Logger, cfg.NodeName, cfg.Events),
		clock: clock.RealClock{}, status: newStatusTracker(clock.RealClock{}),
		views: newRenderViews(),
		held:  newHeldPeers(m.heldBack.Set), admitStop: make(chan struct{}), admitDone: make(chan struct{}),
		firstResync: make(chan struct{}),
		departing:   newDepartedPeers(m.departing.Set), withdrawDone: make(chan struct{}),
	}
	m.reg.MustRegister(newNFTCheckCollector(a.eng))
	go func() { defer close(a.admitDone); a.admissionLoop(a.admitStop) }()
	go func() { defer close(a.withdrawDone); a.withdrawalLoop(a.admitStop) }()
	a.runner = newRunner(a.sync, src.Synced, cfg.MinSyncInterval, cfg.ResyncInterval, a.clock)
	// /plan has an engine of its own: its full plans read nftables back
	// into their own record, never into the one the agent's commits are
	// checked against.
	a.plans = newPlanView(a.clock, planMinInterval, func(ctx context.Context) (string, int, error) {
		return a.planText(ctx, engine.New(reg))
	})
	return a, nil
}

// Close releases the store and namespace handles. It waits for a CNI
// request still applying (Run may return while one runs, when its server's
// shutdown times out); later ones find the registry closed and act on
// nothing.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() { close(a.admitStop) })
	<-a.admitDone
	<-a.withdrawDone
	a.mu.Lock()
	defer a.mu.Unlock()
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
	ln, err := server.Listen(a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("listen on CNI socket: %w", err)
	}
	cniServer := &http.Server{Handler: forward.NewHandler(a.m.instrument(server.NewHTTPHandler(a, a.log))), ReadHeaderTimeout: 10 * time.Second}
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
	// The device plugin stops, and removes its socket, before Run returns.
	pluginCtx, stopPlugin := context.WithCancel(ctx)
	defer stopPlugin()
	pluginDone := make(chan struct{})
	if a.cfg.DevicePluginDir != "" {
		go func() { defer close(pluginDone); a.runDevicePlugin(pluginCtx) }()
	} else {
		close(pluginDone)
	}
	a.log.Info("agent started", "node", a.cfg.NodeName, "mode", a.cfg.Render.Mode, "socket", a.cfg.Socket, "health", a.cfg.HealthAddr)
	loopDone := make(chan struct{})
	go func() { defer close(loopDone); a.runner.loop(ctx) }()
	go a.followInputs(ctx)

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
	stopPlugin()
	<-loopDone
	<-pluginDone
	return runErr
}

func serve(s *http.Server, ln net.Listener, what string) error {
	if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// followInputs asks the runner for a sync on every input change; the
// runner coalesces bursts of them.
func (a *Agent) followInputs(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.src.Changed():
			a.runner.Run()
		}
	}
}

// Reconcile asks for a sync of the whole node and waits until one that
// started after the request has ended; the sync's failures are in
// Status. It needs Run to be running. full is ignored: the runner makes a
// sync full (nftables read back) every ResyncInterval.
func (a *Agent) Reconcile(ctx context.Context, full bool) error {
	return a.runner.RunAndWait(ctx)
}

// renderNode renders from the inputs' snapshot and the store. It needs no
// lock: the snapshot is a copy and the store is read in one transaction.
func (a *Agent) renderNode() (*spec.NodeState, error) {
	return a.renderSnapshot(a.src.Snapshot())
}

// renderSnapshot renders from a snapshot already taken and the store.
func (a *Agent) renderSnapshot(snap inputs.Snapshot) (*spec.NodeState, error) {
	allocs, err := a.listAllocations()
	if err != nil {
		return nil, err
	}
	return a.renderAllocations(snap, allocs)
}

// listAllocations lists the store's allocations and counts them.
func (a *Agent) listAllocations() ([]*spec.Allocation, error) {
	allocs, err := a.store.List()
	if err == nil {
		a.m.allocations.Set(float64(len(allocs)))
	}
	return allocs, err
}

// renderSettled renders the node without the ADDs pending (pending.go):
// a resync's document, which leaves them to their ADDs. It returns the
// pending allocations it left out. The pending ADDs named in keep (by
// attachmentID) are rendered.
func (a *Agent) renderSettled(keep ...string) (*spec.NodeState, map[string]spec.Allocation, error) {
	state, pending, _, err := a.renderSettledFor(forResync, nil, keep...)
	return state, pending, err
}

// renderSettledFor renders as renderSettled does, for a resync or a CNI
// request for pods (renderKind), and says what it rendered with.
func (a *Agent) renderSettledFor(kind renderKind, pods []string, keep ...string) (*spec.NodeState, map[string]spec.Allocation, renderedWith, error) {
	snap, seq := a.snapshot()
	allocs, pending, err := a.settledAllocations(keep...)
	if err != nil {
		return nil, nil, renderedWith{}, err
	}
	state, with, err := a.renderInputs(snap, seq, allocs, kind, pods...)
	return state, pending, with, err
}

// snapshot returns the inputs' snapshot, and the count of moves of the
// CNI's policy pin before it was taken (renderviews.go).
func (a *Agent) snapshot() (inputs.Snapshot, uint64) {
	seq := a.views.pinSeq()
	return a.src.Snapshot(), seq
}

// settledAllocations lists the store's allocations less those of the
// pending ADDs, and those, at one instant: an allocation made meanwhile is
// pending before the store has it (allocMu), and stays pending after. The
// pending ADDs named in keep (by attachmentID) are kept in the list and
// left out of the pending; the list has them also while the store's
// commit of one is under way (Add), and not once a failed commit or a
// rollback left the store without it.
func (a *Agent) settledAllocations(keep ...string) ([]*spec.Allocation, map[string]spec.Allocation, error) {
	a.allocMu.Lock()
	defer a.allocMu.Unlock()
	// Those committing are found before the list is read: a commit that
	// ends in between is then in the list, or still taken from here. Read
	// after, it could end after the list's read and before the look here,
	// and the pod would be in neither.
	var committing []spec.Allocation
	for _, id := range keep {
		if p, ok := a.pending.uncommitted(id); ok {
			committing = append(committing, p)
		}
	}
	allocs, err := a.listAllocations()
	if err != nil {
		return nil, nil, err
	}
	if a.listed != nil {
		a.listed()
	}
	pending := a.pending.snapshot()
	var uncommitted []*spec.Allocation
	for _, p := range committing {
		// By pod and attachment, List's order: the store holds an
		// attachment for one pod only (store.Put).
		if _, listed := slices.BinarySearchFunc(allocs, &p, store.CompareAllocations); !listed {
			uncommitted = append(uncommitted, &p)
		}
	}
	for _, id := range keep {
		delete(pending, id)
	}
	allocs = without(allocs, pending)
	if len(uncommitted) > 0 {
		// When allocs is List's answer (no ADD pending), this is what
		// List answers once these commit, unless another write comes
		// first: the store keeps it then, rather than making it again.
		allocs = a.store.Merge(allocs, uncommitted)
	}
	return allocs, pending, nil
}

// renderBatch renders the node with the batch's ADDs and without the other
// pending ones: those allocate while the batch holds the lock, and one may
// be given the address of a pod the batch rolls back, which the batch's
// undo must still find as that pod's.
func (a *Agent) renderBatch(batch []*addWaiter) (*spec.NodeState, error) {
	ids := make([]string, 0, len(batch))
	keys := make([]string, 0, len(batch))
	for _, w := range batch {
		ids = append(ids, attachmentID(w.alloc))
		keys = append(keys, w.key)
	}
	state, _, _, err := a.renderSettledFor(forADD, keys, ids...)
	return state, err
}

// renderAllocations renders from snap and allocs, as a resync does.
func (a *Agent) renderAllocations(snap inputs.Snapshot, allocs []*spec.Allocation) (*spec.NodeState, error) {
	state, _, err := a.renderInputs(snap, 0, allocs, forResync)
	return state, err
}

// podRefs returns pods (namespace/name) as snap has them.
func podRefs(snap inputs.Snapshot, pods []string) []podRef {
	out := make([]podRef, len(pods))
	for i, key := range pods {
		for _, p := range snap.Pods {
			if p.Namespace+"/"+p.Name == key {
				out[i].pod = p
				break
			}
		}
	}
	return out
}

// renderedWith is the policies and the cache a render used, and for a
// resync's the pin's moves before its inputs were read (renderviews.go).
type renderedWith struct {
	policies []*networkingv1.NetworkPolicy
	cache    *render.Cache
	seq      uint64
}

// renderKind is whom a render is for.
type renderKind int

const (
	forResync renderKind = iota // a resync's whole document, with snap's policies
	forCNI                      // a CNI request's, mostly with the pinned policies (renderviews.go)
	// forADD is forCNI for a batch of ADDs, whose apply is scoped to its
	// pods: the document's kernel items need hold only theirs and the
	// node's (render.Cache.RenderScoped).
	forADD
)

// renderInputs renders from snap and allocs for kind: for a CNI request
// for pods (namespace/name) mostly with the pinned policies, for a resync
// with snap's (renderviews.go). seq is the pin's moves before snap was
// taken (snapshot), for a resync's.
func (a *Agent) renderInputs(snap inputs.Snapshot, seq uint64, allocs []*spec.Allocation, kind renderKind, pods ...string) (*spec.NodeState, renderedWith, error) {
	if snap.Node == nil {
		return nil, renderedWith{}, fmt.Errorf("node %s: no Node object in the inputs yet", a.cfg.NodeName)
	}
	with := renderedWith{policies: snap.Policies, seq: seq}
	if kind != forResync {
		with.cache, with.policies = a.views.forCNI(snap.Policies, func() []podRef {
			return podRefs(snap, pods)
		})
	} else {
		with.cache = a.views.forResync(snap.Policies)
	}
	// Every render holds back the pods not admitted yet: only their
	// admission makes them peers (admission.go); and keeps the departing
	// ones until their withdrawal (withdrawal.go).
	in := a.inputsOf(snap, with.policies, allocs, a.held.snapshot(), a.departing.snapshot())
	if kind == forADD {
		state, err := with.cache.RenderScoped(in, pods)
		return state, with, err
	}
	state, err := with.cache.Render(in)
	return state, with, err
}

// renderWith renders the node from snap's objects but its policies, from
// policies, allocs, the pods held back as peers and the departing ones,
// with cache.
func (a *Agent) renderWith(cache *render.Cache, snap inputs.Snapshot, policies []*networkingv1.NetworkPolicy,
	allocs []*spec.Allocation, heldBack map[string]bool, departing map[string]render.DepartingPeer) (*spec.NodeState, error) {
	return cache.Render(a.inputsOf(snap, policies, allocs, heldBack, departing))
}

// inputsOf are the render's inputs: snap's objects but its policies, and
// policies, allocs, the pods held back as peers and the departing ones.
func (a *Agent) inputsOf(snap inputs.Snapshot, policies []*networkingv1.NetworkPolicy, allocs []*spec.Allocation,
	heldBack map[string]bool, departing map[string]render.DepartingPeer) render.Inputs {
	return render.Inputs{
		Config: a.cfg.Render, Node: snap.Node, Pods: snap.Pods, Namespaces: snap.Namespaces,
		Policies: policies, Allocations: allocs, ENIs: a.eniInputs(), PeersHeldBack: heldBack, PeersDeparting: departing,
	}
}

// PlanText returns the full plan of the node, one operation per line, and
// the number of operations. It changes nothing and takes no lock: it is
// /plan's, served at most once per planMinInterval (endpoints.go).
func (a *Agent) PlanText(ctx context.Context) (string, int, error) {
	r := a.plans.get(ctx)
	return r.text, r.n, r.err
}

// planText renders and plans the whole node with eng.
func (a *Agent) planText(ctx context.Context, eng *engine.Engine) (string, int, error) {
	state, err := a.renderNode()
	if err != nil {
		return "", 0, err
	}
	p, err := eng.Plan(ctx, state, engine.PlanOptions{Full: true})
	if err != nil {
		return "", 0, err
	}
	return p.String(), len(p.Ops), nil
}

// Ready reports whether the agent serves pods: inputs synced and the first
// full reconcile done. CNI STATUS and ADD wait for it. Readiness of the
// node (/readyz) asks more: that the node enforces its document (Health).
func (a *Agent) Ready() bool {
	return a.src.Synced() && a.resynced.Load() && (a.cfg.ENI == nil || a.cloudReady.Load())
}
