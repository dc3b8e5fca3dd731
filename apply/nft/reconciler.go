package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the op.Op kind of every operation this package plans.
const Kind = "nft"

// CommitKey is the op.Op key of the last operation of a non-empty plan,
// which stands for the transaction itself (and carries its one write).
const CommitKey = "commit"

// DefaultFullEvery is how often a full sync happens without any failure:
// partial syncs trust the record of what we wrote and never see drift
// (someone flushing our chain), so every Nth sync re-reads the kernel.
const DefaultFullEvery = 10

// Options configure a Reconciler. Zero values mean the defaults.
type Options struct {
	// FullEvery makes every Nth sync of a namespace a full one
	// (DefaultFullEvery when 0; 1 makes every sync full).
	FullEvery int
	// ReplaceCost is how many element additions one element deletion of
	// a one-field interval set is counted as when deciding to recreate the
	// set rather than delete elements one by one; a concatenated set's
	// count of deletions is scaled by DefaultReplaceCost/ReplaceCost (see
	// replace.go). DefaultReplaceCost when 0; negative never recreates
	// (benchmarks measure the element-by-element way with it).
	ReplaceCost int
	// StageMin is the size from which a recreated set is filled outside
	// the plan's transaction, in short ones (stage.go): stageMinElems when
	// 0; negative never (one transaction, as benchmarks compare).
	StageMin int
	// Logger receives one line per decision (full or partial sync, commit,
	// failure). Nil discards.
	Logger *slog.Logger
}

// Reconciler converges table inet terway in network namespaces.
//
// Plan and PlanFull return the plan as []op.Op: one descriptive op per
// changed table, set, map, element or chain, then a last op (Key CommitKey,
// Writes 1) that names the transaction. All ops of one plan share one Exec:
// the first call, from whichever op, sends every change of the plan to the
// kernel as ONE nftables transaction (all or nothing) and reads back what
// it wrote; every call returns that outcome. So the engine may print the
// plan, then execute its ops in any order; nothing is written before the
// first Exec. A converged namespace plans no ops at all.
//
// Syncs are incremental in the kube-proxy way: the Reconciler keeps, per
// namespace, a record of what its last successful commit wrote. A partial
// sync diffs the desired table against that record without reading the
// kernel, so changing one pod touches only that pod's chains and elements.
// A full sync reads our table back from the kernel and diffs against that;
// it happens on the first sync of a namespace, after any failure (of
// observing, committing or verifying), every FullEvery syncs (PlanPartial
// excepted), and on PlanFull or after Invalidate. A partial transaction
// that meets a kernel unlike the record (an element to delete is already
// gone) fails as a whole, and the next, full, sync repairs.
//
// A Reconciler is safe for concurrent use. Plans of one namespace may
// overlap: a plan made before another commit of the namespace is refused
// as stale (ErrStale, nothing written) if that commit changed one of its
// objects, or since a failure; otherwise it commits on top, and the record
// keeps both. A large recreated set is filled outside the transaction
// (stage.go), so that no transaction of the namespace is long. PlanScoped
// limits a plan to some pods' objects (scoped.go).
type Reconciler struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	records map[string]*record
	// inject, for tests, rewrites a transaction before it is sent (to
	// make the kernel refuse a message in its middle).
	inject func([]batchMsg) []batchMsg
	// checksRead and checksByGeneration count CheckAhead's conclusions by
	// how they were reached: a read of the table, or the ruleset
	// generation alone (stillAgreed). See CheckCounts.
	checksRead, checksByGeneration atomic.Uint64
}

// CheckCounts returns how many checks ahead (CheckAhead) read the kernel
// and how many concluded from the ruleset generation alone. A node where
// another program commits to the namespace's nftables between resyncs
// (kube-proxy's iptables-nft, say) reads every time.
func (r *Reconciler) CheckCounts() (read, byGeneration uint64) {
	return r.checksRead.Load(), r.checksByGeneration.Load()
}

// record is what we believe a namespace's kernel holds.
type record struct {
	// written is the table our last successful commit (or full sync that
	// found nothing to do) left in the kernel; nil means no table.
	written *table
	// full forces the next sync to read the kernel: set on any failure,
	// because after one the kernel may hold anything.
	full bool
	// syncs counts syncs since the last full one.
	syncs int
	// checkedAt is when (monoNow; 0: none) a CheckAhead found the kernel
	// as recorded: the next full plan need not read it, if it comes within
	// checkValidFor. The next full or counted plan uses it up, whichever
	// it is (a CNI CHECK's full plan too: the resync then reads under its
	// lock, as before). The periodic sync's due count was reset by the
	// check itself, as a full sync resets it.
	checkedAt int64
	// agreed is where a CheckAhead last read the kernel and found it as
	// recorded; nil when the record has not been so confirmed since it was
	// last invalidated, or when a transaction of ours since left the
	// generation other than our count expects (send). While the ruleset
	// generation has moved by our own logged commits alone since, the
	// kernel cannot have changed otherwise, and a CheckAhead within
	// agreedFor concludes so without reading it (checkahead.go).
	agreed atomic.Pointer[agreement]
	// version changes with every commit and invalidation; a plan made at
	// an older version would diff against a stale record.
	version uint64
	// cache holds the canonical sets and chains of the last desired table.
	cache *canonCache
	// conns are the namespace's idle sockets (connpool.go); dropping the
	// record closes them.
	conns connPool
	// id is the namespace the record is of, as its path named it when
	// last planned (zero: unknown); a plan that finds the path naming
	// another starts a new record.
	id nsID
	// commitMu serialises commits of the namespace, so that the staleness
	// check and the commit that follows it cannot interleave with another.
	commitMu sync.Mutex
	// log names what each of the last commits (by version) changed, so
	// that a plan made before a commit that changed none of its objects
	// is not stale (see stale).
	log []logEntry
	// kept is what the last scoped plan found of its document's sets
	// (keptsets.go); mu guards.
	kept *keptSets
	// chainSets indexes the chains of the last scoped plan's document by
	// the sets they match against (chainsets.go); mu guards.
	chainSets *chainSetIndex
	// recordChains indexes the chains of a record by the sets they match
	// against (chainsets.go), of the map they share with the records
	// derived since; mu guards.
	recordChains *recordChainIndex
	// fullSyncs counts the syncs that read the kernel and took what they
	// read as the record (done): a memo made before one is not used.
	fullSyncs uint64
	// locked are objects a staged plan is renaming (stage.go); mu guards.
	locked map[string]bool
	// stageMu lets one staged plan of the namespace fill at a time.
	stageMu sync.Mutex
	// waiting counts commits waiting for or holding commitMu: a staged
	// fill lets them go before its next chunk.
	waiting atomic.Int32
	// commits counts commits of the namespace through commitLocked: a
	// staged fill that sees it move shares the CPU with them.
	commits atomic.Uint64
	// lastOther is when (monoNow; 0: never) the last commit through
	// commitLocked that is not a staged plan's own hop was sent: a fill
	// that starts soon after takes short steps from its start.
	lastOther atomic.Int64
	// scopedAt is when (monoNow; 0: never) the last scoped plan (a CNI
	// request's) began: its commit is likely a few milliseconds away, and
	// a staged fill lets it go first (othersAhead).
	scopedAt atomic.Int64
	// txns counts every transaction of ours the kernel accepted in the
	// namespace (commits, staged fills, hops back), each under commitMu.
	// A full plan notes it with the generation it observed, so that its
	// commit, which the kernel refuses if the generation moved, expects
	// the generation moved by our own transactions since: a CNI ADD that
	// commits between a resync's read-back and its commit is not someone
	// else changing our table.
	txns atomic.Uint64
	// indexes hold large record sets' elements by address, for scoped
	// plans (scoped.go), each for the set object it was built from; mu
	// guards.
	indexes map[string]indexed
	// wantIndexes hold large desired sets' elements by address, for
	// scoped plans, each for the element list it was built from, the
	// latest first; mu guards. Render hands out a group's unchanged sets
	// with the same element list every time, so only the sets an input
	// change rendered again are indexed again. Each name keeps
	// wantIndexLists lists: while a resync applies a policy edit, CNI
	// requests still render the policies before it (agent/renderviews.go),
	// and the two documents' lists of one set must not evict each other.
	wantIndexes map[string][]wantIndexed
	// wantScanned is, for each set name, the last element list a scoped
	// plan scanned without an index (wantIndexer); mu guards.
	wantScanned map[string]listRef
}

// clockStart anchors the records' timestamps (monoNow).
var clockStart = time.Now()

// monoNow is the time on the records' clock: nanoseconds since
// clockStart, on the monotonic clock, which a step of the wall clock does
// not move; never 0.
func monoNow() int64 { return int64(time.Since(clockStart)) + 1 }

// logEntry is what one commit or invalidation changed: objects by key
// ("set NAME", "chain NAME"), or everything.
type logEntry struct {
	keys map[string]bool
	all  bool
}

// maxLog bounds a record's log; a plan older than that is stale. A staged
// change's fill takes seconds, and CNI ADDs and DELs commit meanwhile (25
// a second in the benchmark): the log must outlast the fill.
const maxLog = 1024

// ErrStale is wrapped by the error of a plan refused because another
// commit of its namespace changed some of the same objects since it was
// made. Nothing was written; planning again is the remedy.
var ErrStale = errors.New("plan is stale")

// New returns a Reconciler with no records: the first sync of every
// namespace is a full one.
func New(opts Options) *Reconciler {
	if opts.FullEvery <= 0 {
		opts.FullEvery = DefaultFullEvery
	}
	if opts.ReplaceCost == 0 {
		opts.ReplaceCost = DefaultReplaceCost
	}
	if opts.StageMin == 0 {
		opts.StageMin = stageMinElems
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{opts: opts, log: log.With("kind", Kind), records: map[string]*record{}}
}

// Plan plans the changes that make netns's table inet terway equal to
// desired (nil: delete our table), as a partial or full sync (see
// Reconciler).
func (r *Reconciler) Plan(ns op.Namespaces, netns string, desired *spec.NFTable) ([]op.Op, error) {
	return r.plan(ns, netns, desired, syncAuto)
}

// Prepare canonicalises desired's sets and chains into netns's cache
// without planning, so that a plan of an equal document soon after (or one
// that differs in a few elements) does little of that work: a caller that
// must plan under a lock of its own prepares before taking it. It also
// compares large sets with the record's (largeDeltas) and indexes them
// for scoped plans (warmWantIndexes).
func (r *Reconciler) Prepare(netns string, desired *spec.NFTable) {
	if desired == nil {
		return
	}
	r.mu.Lock()
	rec := r.recordLocked(netns)
	cache := rec.cache
	r.mu.Unlock()
	if want, cache, err := canonical(desired, cache); err == nil {
		r.mu.Lock()
		rec.cache = cache
		written := rec.written
		r.mu.Unlock()
		largeDeltas.warm(want, written)
	}
	r.warmWantIndexes(rec, desired)
}

// PlanFull plans like Plan but always reads the kernel first: for periodic
// resyncs and for `terwayctl plan`, which must show the real drift.
func (r *Reconciler) PlanFull(ns op.Namespaces, netns string, desired *spec.NFTable) ([]op.Op, error) {
	return r.plan(ns, netns, desired, syncFull)
}

// PlanPartial plans like Plan but is never the periodic full sync (every
// FullEvery): for a path whose cost must not grow with the table, a CNI ADD
// or DEL, while the agent's own syncs keep reading the kernel for drift.
// After a failure it is still full: then the record is not to be trusted.
func (r *Reconciler) PlanPartial(ns op.Namespaces, netns string, desired *spec.NFTable) ([]op.Op, error) {
	return r.plan(ns, netns, desired, syncPartial)
}

// syncMode is what a plan asks for: full or partial as the record and the
// FullEvery count decide, always full, or full only after a failure.
type syncMode int

const (
	syncAuto syncMode = iota
	syncFull
	syncPartial
)

// recordLocked returns netns's record, made on first use (its first sync
// is a full one); mu is held.
func (r *Reconciler) recordLocked(netns string) *record {
	rec := r.records[netns]
	if rec == nil {
		rec = &record{full: true, locked: map[string]bool{}}
		r.records[netns] = rec
	}
	return rec
}

// Invalidate makes the next sync of netns a full one, e.g. after something
// outside this package may have changed the namespace's nftables.
func (r *Reconciler) Invalidate(netns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec := r.records[netns]; rec != nil {
		rec.invalidate()
	}
}

// invalidate makes the next sync full and every plan made so far stale;
// mu is held.
func (rec *record) invalidate() {
	rec.full = true
	rec.agreed.Store(nil)
	rec.version++
	rec.logged(logEntry{all: true})
}

// Expect says a scoped plan of netns (a CNI request's) is on its way: a
// staged fill holds its next chunk back from now (othersAhead), not only
// from the plan, until the request commits or for stageScopedAhead
// (10 ms) at most. The kernel makes the request wait for a fill chunk even
// before its commit: creating or deleting a link in a namespace takes that
// namespace's nftables commit mutex (nf_tables_netdev_event).
func (r *Reconciler) Expect(netns string) {
	r.mu.Lock()
	rec := r.records[netns]
	r.mu.Unlock()
	if rec != nil {
		rec.scopedAt.Store(monoNow())
	}
}

// Forget drops the record of a namespace that no longer exists (a pod's
// sandbox was deleted), so that records do not grow without bound.
func (r *Reconciler) Forget(netns string) {
	r.mu.Lock()
	idle := r.dropLocked(netns)
	r.mu.Unlock()
	closeAll(idle)
}

// dropLocked removes netns's record and returns its idle sockets, for the
// caller to close once mu is released; mu is held.
func (r *Reconciler) dropLocked(netns string) []*conn {
	rec := r.records[netns]
	if rec == nil {
		return nil
	}
	delete(r.records, netns)
	return rec.conns.drain()
}

// Retain drops the records of every pod namespace (any but the host's) not
// in keep: a full plan of the node names every namespace a table is wanted
// in, and the others' pods are gone, without a DEL that removed their
// table (which drops the record itself).
func (r *Reconciler) Retain(keep []string) {
	var idle []*conn
	r.mu.Lock()
	for netns := range r.records {
		if netns != spec.HostNetns && !slices.Contains(keep, netns) {
			idle = append(idle, r.dropLocked(netns)...)
		}
	}
	r.mu.Unlock()
	closeAll(idle)
}

// Sync plans and executes at once, for callers that need no printed plan.
// It returns the plan's ops (none when converged).
func (r *Reconciler) Sync(ctx context.Context, ns op.Namespaces, netns string, desired *spec.NFTable) ([]op.Op, error) {
	ops, err := r.Plan(ns, netns, desired)
	if err != nil {
		return nil, err
	}
	for _, o := range ops {
		if err := o.Exec(ctx, ns); err != nil {
			return ops, err
		}
	}
	return ops, nil
}

func (r *Reconciler) plan(ns op.Namespaces, netns string, desired *spec.NFTable, ask syncMode) ([]op.Op, error) {
	return r.planWith(ns, netns, desired, ask, nil)
}

// planWith plans; a scope (PlanScoped) limits a partial sync to its pods.
func (r *Reconciler) planWith(ns op.Namespaces, netns string, desired *spec.NFTable, ask syncMode, sc *Scope) ([]op.Op, error) {
	id, idErr := nsIdentity(ns, netns)
	var gone []*conn
	r.mu.Lock()
	rec := r.recordLocked(netns)
	if idErr == nil {
		if rec.id != (nsID{}) && rec.id != id {
			// The path names another namespace now (a sandbox made
			// again at the same path): nothing recorded is there, and
			// the record's sockets are in the old one.
			gone = r.dropLocked(netns)
			rec = r.recordLocked(netns)
		}
		rec.id = id
	}
	if sc != nil {
		rec.scopedAt.Store(monoNow())
	}
	// A CheckAhead that found the kernel as recorded stands for the next
	// full sync's read (not a CNI request's partial plan's to use up).
	checked := rec.checkedAt != 0 && ask != syncPartial && time.Duration(monoNow()-rec.checkedAt) < checkValidFor
	if ask != syncPartial {
		rec.checkedAt = 0
	}
	full := (ask == syncFull && !checked) || rec.full || (ask == syncAuto && !checked && rec.syncs+1 >= r.opts.FullEvery)
	version, written, cache := rec.version, rec.written, rec.cache
	var kept *keptLookup
	if sc != nil && rec.kept != nil && rec.kept.fullSyncs == rec.fullSyncs {
		touched, logged := rec.touchedSince(rec.kept.version)
		kept = newKeptLookup(rec.kept, touched, logged)
	}
	fullSyncs, chainSets, recordChains := rec.fullSyncs, rec.chainSets, rec.recordChains
	r.mu.Unlock()
	closeAll(gone)

	var want *table
	var scoped *scopedChanges
	switch {
	case desired != nil && sc != nil && !full && written != nil:
		var err error
		var found *keptSets
		index, wantIndex := r.indexer(rec), r.wantIndexer(rec, false)
		chainSets = chainSetsFor(desired, chainSets)
		recordChains = recordChainsFor(&written.chains, recordChains)
		if want, scoped, found, err = scopedTable(desired, written, sc, cache, index, wantIndex, kept, chainSets, recordChains); err != nil {
			return nil, err
		}
		if recheckKeptSets && (kept != nil || chainSets != nil) {
			if err := recheckWithoutMemo(desired, written, sc, cache, index, wantIndex, want, scoped); err != nil {
				return nil, err
			}
			if keptSetsRechecked != nil && kept != nil {
				keptSetsRechecked(kept.hits)
			}
		}
		r.mu.Lock()
		if r.records[netns] == rec {
			found.version, found.fullSyncs = version, fullSyncs
			rec.kept = found
			rec.chainSets, rec.recordChains = chainSets, recordChains
		}
		r.mu.Unlock()
		r.pruneWantIndexes(rec, desired)
	case desired != nil:
		var err error
		if want, cache, err = canonical(desired, cache); err != nil {
			return nil, err
		}
		r.mu.Lock()
		rec.cache = cache
		r.mu.Unlock()
	}
	have := written
	var gen *genAt
	if full {
		c, err := r.openConn(ns, netns, rec)
		if err != nil {
			r.fail(netns)
			return nil, err
		}
		have, gen, err = r.observe(c, rec, want, have)
		r.closeConn(netns, rec, c, err == nil)
		if err != nil {
			if !errors.Is(err, errDumpInterrupted) {
				// A snapshot that other commits kept interrupting says
				// nothing against the record; anything else might.
				r.fail(netns)
			}
			return nil, fmt.Errorf("observe table inet terway in %s: %w", nsName(netns), err)
		}
	}
	if have != written {
		scoped = nil // changed from the record, not from what was read
	}
	p, err := diff(netns, want, have, written, r.opts.ReplaceCost, r.opts.StageMin, scoped)
	if err != nil {
		return nil, err
	}
	p.counts = ask != syncPartial
	p.rec = rec
	p.scopedSets = scoped.setNames()
	ops := p.ops()
	mode := "partial"
	if full {
		mode = "full"
	}
	if len(ops) == 0 {
		r.mu.Lock()
		if rec.version == version {
			// Nothing changed: the version stays, and no plan made
			// before is stale for it.
			r.done(rec, want, full, ask != syncPartial)
		}
		r.mu.Unlock()
		r.log.Debug("nftables converged", "netns", netns, "sync", mode)
		return nil, nil
	}
	msgs := p.messages()
	r.log.Info("nftables plan", "netns", netns, "sync", mode, "ops", len(ops), "messages", len(msgs))
	// Every op of the plan runs the same transaction, once: whichever the
	// engine executes first sends it, and all report its outcome, which is
	// the truth for an all-or-nothing transaction.
	var once sync.Once
	var result error
	exec := func(ctx context.Context, ns op.Namespaces) error {
		once.Do(func() { result = r.commit(ctx, ns, netns, p, msgs, want, gen, version, full) })
		return result
	}
	for i := range ops {
		ops[i].Exec = exec
	}
	commit := op.Op{
		Kind: Kind, Action: op.Update, Key: CommitKey, Netns: netns, Writes: 1, Exec: exec,
		Text: fmt.Sprintf("nft commit table inet terway: %d changes in 1 transaction (%d messages, %s sync)", len(ops), len(msgs), mode),
	}
	return append(ops, commit), nil
}
