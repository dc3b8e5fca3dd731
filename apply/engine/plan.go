package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/apply/addrs"
	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/neigh"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/apply/routes"
	"github.com/terway-reconciler/terway/apply/rules"
	"github.com/terway-reconciler/terway/apply/sysctl"
	"github.com/terway-reconciler/terway/apply/tc"
	"github.com/terway-reconciler/terway/spec"
)

// Engine plans and applies documents to one node. It keeps the nftables
// record between syncs, so an Engine should live as long as the agent.
type Engine struct {
	ns  op.Namespaces
	nft *nft.Reconciler
	// MaxRounds bounds Apply's plan-execute loop.
	MaxRounds int
}

// New returns an engine acting through ns; ns's host namespace is the node.
func New(ns op.Namespaces) *Engine {
	return &Engine{ns: ns, nft: nft.New(nft.Options{}), MaxRounds: 3}
}

// PlanOptions tune one plan.
type PlanOptions struct {
	// Full reads the nftables table back from the kernel instead of trusting
	// the record of the last commit (the other kinds always read the kernel).
	Full bool
	// Pods, when set, scopes the plan to these pods (namespace/name): only
	// their namespaces are observed, and only their items, node-level
	// creations and the nftables diff are planned. This is the CNI path: a
	// pod's ADD or DEL costs the same on a node of 10 pods as of 250. A
	// removed pod is found by its host veth, whose name derives from its key,
	// and its rules by its address (PodIPs). The periodic full resync covers
	// everything else.
	//
	// In the host, the kinds read the pods' links only: the kernel filters
	// routes, neighbours and addresses by link, and qdiscs are read only if
	// one of those links has a TBF. Still read whole, so still growing with
	// the node: the rules (the kernel has no filter for them), the qdiscs
	// when a pod is shaped, and the routes when one the pods want is not on
	// their links (a pod being added; the route might sit elsewhere).
	Pods []string
	// PodIPs are the addresses of scoped pods that the document no longer
	// has (a DEL's pod), by pod key. A pod's rules name its address, not a
	// link, so a scoped plan finds them by address: the document gives it
	// for the pods it has, PodIPs for the others.
	PodIPs map[string]string
	// Namespaces are observed besides the document's: the namespace of a
	// pod being deleted, where its exclusive ENI still is, so the plan can
	// bring the ENI back to the node before the namespace goes.
	Namespaces []string
	// Kinds, when set, plans only these kinds (links.Kind, nft.Kind, ...);
	// the others are neither observed nor diffed. The agent's resync plans
	// the kernel kinds without its lock and the nftables kind under it:
	// nftables plans are made against the record of the last commit, so
	// two of them must not interleave with a commit between (see
	// nft.Reconciler), while the other kinds' plans are plain reads.
	Kinds []string
	// TakenFrom, when set, is an earlier plan of the same sync whose
	// observation of other sandboxes' interfaces (links.FindTaken) this
	// plan uses instead of reading every pod namespace's links again. The
	// agent's resync plans nftables under its lock right after planning the
	// kernel kinds without it: reading 250 namespaces' links there would
	// hold the lock, and the kernel's rtnl lock a CNI ADD needs, for
	// nothing new.
	TakenFrom *Plan
}

// Plan observes what we own and returns the operations that turn it into
// desired. It writes nothing.
func (e *Engine) Plan(ctx context.Context, desired *spec.NodeState, opts PlanOptions) (*Plan, error) {
	defer e.hold()()
	w, err := prepare(desired, opts)
	if err != nil {
		return nil, err
	}
	return e.plan(ctx, w, opts)
}

// work is a validated document, reduced to the plan's scope if it has one.
type work struct {
	desired *spec.NodeState
	scope   *podScope
}

// prepare validates the document, or for a scoped plan the scope's part of
// it, whose cost does not grow with the number of pods. The nftables table
// stays whole in a scoped plan and is not validated here: the nft
// reconciler checks it as it canonicalises it, which costs what changed.
func prepare(desired *spec.NodeState, opts PlanOptions) (*work, error) {
	if desired == nil {
		return nil, errors.New("no desired state")
	}
	if len(opts.Pods) == 0 {
		return &work{desired: desired}, validate(desired)
	}
	// The scope reads every pod entry before the validation of its part:
	// a document with a null one (JSON's null, not from the render) is
	// validated whole, which names it.
	if slices.Contains(desired.Pods, nil) {
		return nil, validate(desired)
	}
	scope := newPodScope(desired, opts)
	reduced := scope.reduce(desired)
	check := *reduced
	check.NFTables = nil
	return &work{desired: reduced, scope: scope}, validate(&check)
}

// plan is Plan for a prepared document.
func (e *Engine) plan(ctx context.Context, w *work, opts PlanOptions) (*Plan, error) {
	desired, scope := w.desired, w.scope
	var nss []string
	if scope != nil {
		nss = scope.namespaces
	} else {
		// Only a full plan lists every namespace: a scoped one's cost must
		// not grow with the number of pods.
		nss = desired.Namespaces()
	}
	for _, n := range opts.Namespaces {
		if n != "" && n != spec.HostNetns && !slices.Contains(nss, n) {
			nss = append(nss, n)
		}
	}
	// One snapshot of link lists serves every kind's observation.
	snap := op.NewSnapshot(e.ns)
	if scope != nil {
		snap.OnlyLinks(spec.HostNetns, scope.hostLinks)
	}
	// A pod whose pod-side interface name is held by a link that is not
	// its pair (another sandbox's eth0) gets nothing written: its items
	// leave the document of this plan, and one failing operation says why.
	var taken []links.Taken
	var err error
	if opts.TakenFrom != nil {
		taken = opts.TakenFrom.taken
	} else if taken, err = links.FindTaken(snap, nss, desired); err != nil {
		return nil, fmt.Errorf("observe links: %w", err)
	}
	var ops []op.Op
	if len(taken) > 0 {
		desired = withoutPods(desired, taken)
		ops = append(ops, refusedOps(taken)...)
	}
	kinds := []struct {
		name string
		plan func() ([]op.Op, error)
	}{
		{"link", func() ([]op.Op, error) {
			o, err := links.Observe(snap, nss, desired)
			return links.Diff(desired.Links, o), err
		}},
		{"sysctl", func() ([]op.Op, error) {
			o, err := sysctl.Observe(snap, nss, desired)
			return sysctl.Diff(desired.Sysctls, o), err
		}},
		{"address", func() ([]op.Op, error) {
			o, err := addrs.Observe(snap, nss, desired)
			return addrs.Diff(desired.Addresses, o), err
		}},
		{"neighbor", func() ([]op.Op, error) {
			o, err := neigh.Observe(snap, nss, desired)
			return neigh.Diff(desired.Neighbors, o), err
		}},
		{"route", func() ([]op.Op, error) {
			o, err := routes.Observe(snap, nss, desired)
			return routes.Diff(desired.Routes, o), err
		}},
		{"rule", func() ([]op.Op, error) {
			o, err := rules.Observe(snap, nss, desired)
			if scope != nil {
				scope.claimRules(o)
			}
			return rules.Diff(desired.Rules, o), err
		}},
		{"qdisc", func() ([]op.Op, error) {
			o, err := tc.Observe(snap, nss, desired)
			return tc.Diff(desired.TC, o), err
		}},
		{"nft", func() ([]op.Op, error) {
			host, err := e.planHostTable(desired, scope, opts)
			if err != nil {
				return nil, err
			}
			return append(host, e.planPodTables(desired, opts, scope == nil)...), nil
		}},
	}
	// The kinds observe concurrently: each namespace has its own netlink
	// sockets (requests on one socket are serialised by the library), so
	// different namespaces are read in parallel. Results keep kind order.
	results := make([][]op.Op, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, k := range kinds {
		if len(opts.Kinds) > 0 && !slices.Contains(opts.Kinds, k.name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ctx.Err(); err != nil {
				errs[i] = err
				return
			}
			results[i], errs[i] = k.plan()
			if errs[i] != nil {
				errs[i] = fmt.Errorf("observe %ss: %w", k.name, errs[i])
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, r := range results {
		ops = append(ops, r...)
	}
	ops = keepAliasedItems(snap, nss, ops)
	if scope != nil {
		ops = scope.filter(ops)
	} else if l, ok := e.ns.(lifetimes); ok {
		// A full plan names every namespace the node still has pods in:
		// the handles of any other are a deleted pod's, kept alive by us.
		l.Retain(nss)
	}
	return &Plan{Ops: order(ops), taken: taken}, nil
}

// ExpectScoped says a scoped apply (a CNI request's) is on its way, so
// that a large change's staged fill lets it go first (nft.Reconciler.Expect).
func (e *Engine) ExpectScoped() { e.nft.Expect(spec.HostNetns) }

// NFTCheckCounts is nft.Reconciler.CheckCounts of the engine's reconciler.
func (e *Engine) NFTCheckCounts() (read, byGeneration uint64) { return e.nft.CheckCounts() }

// PrepareNFT does the CPU work of planning desired's nftables ahead (see
// nft.Reconciler.Prepare), for a caller about to plan under a lock.
// It also reads the kernel ahead when the plan will be a full one (full,
// or the periodic full sync: nft.Reconciler.CheckAhead).
func (e *Engine) PrepareNFT(desired *spec.NodeState, full bool) {
	if desired != nil {
		e.nft.CheckAhead(e.ns, spec.HostNetns, full)
		e.nft.Prepare(spec.HostNetns, desired.NFTables)
	}
}

// Execute runs a plan made by Plan.
func (e *Engine) Execute(ctx context.Context, p *Plan) *Report {
	defer e.hold()()
	start := time.Now()
	rep := &Report{Rounds: 1}
	execute(ctx, e.ns, p.Ops, rep)
	if rep.Err() != nil && !rep.onlyStale() {
		// Whatever failed may have left nftables half-known: read it back
		// next time.
		e.nft.Invalidate(spec.HostNetns)
	}
	rep.Duration = time.Since(start)
	return rep
}

// Apply plans and executes until the plan is empty, at most MaxRounds
// times: re-creating a link removes what lived on it, which the next round
// puts back. The report covers every round.
func (e *Engine) Apply(ctx context.Context, desired *spec.NodeState, opts PlanOptions) (*Report, error) {
	defer e.hold()()
	start := time.Now()
	rep := &Report{}
	w, err := prepare(desired, opts)
	if err != nil {
		return rep, err
	}
	for rep.Rounds < max(e.MaxRounds, 1) {
		p, err := e.plan(ctx, w, opts)
		if err != nil {
			return rep, err
		}
		if p.Empty() {
			break
		}
		rep.Rounds++
		failedBefore := len(rep.failures())
		execute(ctx, e.ns, p.Ops, rep)
		if len(rep.failures()) > failedBefore {
			if rep.onlyStale() && rep.Rounds < max(e.MaxRounds, 1) {
				// Another commit changed some of the plan's nftables
				// objects since it was made; nothing was written, and a
				// new plan starts from that commit's record.
				rep.Results = slices.DeleteFunc(rep.Results, func(r Result) bool { return r.Err != nil })
				continue
			}
			if !rep.onlyStale() {
				e.nft.Invalidate(spec.HostNetns)
			}
			break // a failing item would fail again; the next sync retries
		}
		if !changesLinks(p) {
			// Only a link deleted or changed takes other items with it;
			// without one, this round's plan was complete and a re-plan
			// would be empty. A link created had no items: those on it
			// were planned with it, in this round (a CNI ADD's veth).
			break
		}
		opts.Full = false
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// changesLinks reports whether p deletes or changes an existing link.
func changesLinks(p *Plan) bool {
	for _, o := range p.Ops {
		if o.Kind == links.Kind && o.Action != op.Create {
			return true
		}
	}
	return false
}

// onlyStale reports whether every failure is an nftables plan refused as
// stale (nft.ErrStale): nothing was written, the record stays trusted.
func (r *Report) onlyStale() bool {
	for _, res := range r.Results {
		if res.Err != nil && !errors.Is(res.Err, nft.ErrStale) {
			return false
		}
	}
	return true
}

// failures lists the failed results.
func (r *Report) failures() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Err != nil {
			out = append(out, res)
		}
	}
	return out
}

// planHostTable plans the node's table inet terway: in full, partially
// against the record, or for a scoped plan only the scope's part of it.
func (e *Engine) planHostTable(desired *spec.NodeState, scope *podScope, opts PlanOptions) ([]op.Op, error) {
	switch {
	case opts.Full:
		return e.nft.PlanFull(e.ns, spec.HostNetns, desired.NFTables)
	case scope != nil:
		// The CNI path: the periodic full read of the table, and
		// the document's changes to other pods' objects, are the
		// agent's own syncs' to do.
		if sc, ok := scope.nftScope(); ok {
			return e.nft.PlanScoped(e.ns, spec.HostNetns, desired.NFTables, sc)
		}
		return e.nft.PlanPartial(e.ns, spec.HostNetns, desired.NFTables)
	}
	return e.nft.Plan(e.ns, spec.HostNetns, desired.NFTables)
}
