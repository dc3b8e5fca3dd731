package nft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Committing a plan: the staleness check against the commits since the
// plan was made, the ruleset generation a full plan read, the transaction,
// its read-back, and the record of what was written.

// genAt is the ruleset generation a full plan observed, with the count of
// our own transactions (record.txns) that the generation includes.
type genAt struct {
	gen  uint32
	txns uint64
}

// expected is the generation a commit expects now: the observed one moved
// on by each of our own transactions since. commitMu is held.
func (g *genAt) expected(rec *record) *uint32 {
	if g == nil {
		return nil
	}
	e := g.gen + uint32(rec.txns.Load()-g.txns)
	return &e
}

// observe reads the kernel; hints name the chains we may have made. It
// returns the snapshot with the generation it belongs to, and the count
// of our transactions at that generation: read together under commitMu,
// and the snapshot taken at that same generation, or read again.
func (r *Reconciler) observe(c *conn, rec *record, want, have *table) (*table, *genAt, error) {
	var hints []string
	for _, t := range []*table{want, have} {
		if t != nil {
			hints = append(hints, slices.Sorted(t.chains.names())...)
		}
	}
	for attempt := 0; ; attempt++ {
		rec.commitMu.Lock()
		txns := rec.txns.Load()
		g0, err := getGen(c)
		rec.commitMu.Unlock()
		if err != nil {
			return nil, nil, err
		}
		t, gen, err := observe(c, hints)
		if err != nil {
			return nil, nil, err
		}
		if gen == g0 {
			return t, &genAt{gen: gen, txns: txns}, nil
		}
		if attempt == 4 {
			return nil, nil, errDumpInterrupted
		}
	}
}

// send commits one transaction of ours (commitMu is held) and counts it.
func (rec *record) send(c *conn, msgs []batchMsg, gen *genAt) error {
	// While a read's agreement stands (stillAgreed), the generation is
	// read around the transaction: the kernel skips one that changes
	// nothing (elements there already, put there by someone else) without
	// moving the generation, and counted as ours it would hide that
	// someone else's commit from stillAgreed's count. A transaction that
	// did not move it by one ends the agreement; the next check reads the
	// kernel. (Someone else's commits before it are stillAgreed's to see.)
	a := rec.agreed.Load()
	var before uint32
	if a != nil {
		var err error
		if before, err = getGen(c); err != nil {
			rec.agreed.CompareAndSwap(a, nil)
			a = nil
		}
	}
	if err := c.commit(msgs, gen.expected(rec)); err != nil {
		return err
	}
	rec.txns.Add(1)
	if a != nil {
		if g, err := getGen(c); err != nil || g != before+1 {
			rec.agreed.CompareAndSwap(a, nil)
		}
	}
	return nil
}

func (r *Reconciler) commit(ctx context.Context, ns op.Namespaces, netns string, p *plan, msgs []batchMsg,
	want *table, gen *genAt, version uint64, full bool) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	rec := r.records[netns]
	r.mu.Unlock()
	if rec == nil {
		return fmt.Errorf("nft table inet terway in %s: the namespace was forgotten since the plan; plan again", nsName(netns))
	}
	if p.rec != nil && p.rec != rec {
		// Its versions start again: the staleness check cannot compare.
		return fmt.Errorf("nft table inet terway in %s: %w (the namespace's record was made again since the plan: forgotten, or its path names another namespace)", nsName(netns), ErrStale)
	}
	c, err := r.openConn(ns, netns, rec)
	if err != nil {
		r.fail(netns)
		return err
	}
	defer func() { r.closeConn(netns, rec, c, err == nil) }()
	if len(p.staged) > 0 {
		return r.commitStaged(ctx, c, rec, netns, p, msgs, want, gen, version, full)
	}
	later := laterChecksOf(ctx)
	checkLater := later != nil && p.elemsOnly()
	after, err := r.commitLocked(ctx, c, rec, netns, p, msgs, want, gen, version, full, checkLater)
	if err != nil {
		return err
	}
	if checkLater {
		later.add(func() error { return r.verifyLater(ns, netns, rec, p, after) })
	}
	r.warmIndexes(rec, p.scopedSets...) // nil: every set
	return nil
}

// commitLocked refuses a stale plan, else sends its transaction, reads back
// what it wrote and records it, all under the namespace's commitMu. With
// checkLater the read-back is the caller's, after (later.go). It returns
// the record's version the commit made.
func (r *Reconciler) commitLocked(ctx context.Context, c *conn, rec *record, netns string, p *plan, msgs []batchMsg,
	want *table, gen *genAt, version uint64, full, checkLater bool) (uint64, error) {
	rec.waiting.Add(1)
	defer rec.waiting.Add(-1)
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	keys, all := p.touchKeys()
	r.mu.Lock()
	why, locked := "", false
	if r.records[netns] != rec {
		why = "the namespace was forgotten since"
	} else {
		why, locked = rec.stale(version, keys, all)
	}
	r.mu.Unlock()
	if locked {
		// A staged plan is filling one of our objects under its staging
		// name: planning again now would be refused again. Wait for it to
		// name them back (seconds at most), letting other commits go.
		rec.commitMu.Unlock()
		rec.waiting.Add(-1) // a fill must not yield to a commit that waits for it
		werr := r.waitUnlocked(ctx, rec, keys)
		rec.waiting.Add(1)
		rec.commitMu.Lock()
		if werr != nil {
			return 0, fmt.Errorf("nft table inet terway in %s: %w (%s)", nsName(netns), werr, why)
		}
	}
	if why != "" {
		// Nothing was written: the record stays right, and the next
		// plan may be partial.
		return 0, fmt.Errorf("nft table inet terway in %s: %w (%s); plan again", nsName(netns), ErrStale, why)
	}
	if r.inject != nil {
		msgs = r.inject(msgs)
	}
	if err := rec.send(c, msgs, gen); err != nil {
		r.fail(netns)
		if errors.Is(err, unix.ERESTART) {
			return 0, fmt.Errorf("nft table inet terway in %s: nftables changed since the plan was read (%w); plan again", nsName(netns), err)
		}
		return 0, fmt.Errorf("nft table inet terway in %s: %w", nsName(netns), err)
	}
	rec.commits.Add(1)
	if len(p.staged) == 0 {
		rec.lastOther.Store(monoNow())
	}
	if !checkLater {
		if err := verify(c, p); err != nil {
			r.fail(netns)
			return 0, fmt.Errorf("nft table inet terway in %s: the transaction was applied but %w", nsName(netns), err)
		}
	}
	r.mu.Lock()
	r.committed(rec, want, full, p.counts, version, keys, all)
	after := rec.version
	for k := range p.locks {
		rec.locked[k] = true
	}
	var idle []*conn
	if want == nil && netns != spec.HostNetns && r.records[netns] == rec {
		// A pod's namespace whose table we removed (its pod's DEL) is
		// about to go: keep no record of it, so that records do not grow
		// with pod churn, and none of its sockets, which would keep it
		// alive. Should it be used again, its next sync is full.
		idle = r.dropLocked(netns)
	}
	r.mu.Unlock()
	closeAll(idle)
	r.log.Info("nftables committed", "netns", netns, "messages", len(msgs))
	return after, nil
}

// waitUnlocked waits until none of keys is locked by a staged plan.
func (r *Reconciler) waitUnlocked(ctx context.Context, rec *record, keys map[string]bool) error {
	for {
		r.mu.Lock()
		locked := false
		for k := range keys {
			locked = locked || rec.locked[k]
		}
		r.mu.Unlock()
		if !locked {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(stageLockPoll):
		}
	}
}

// stageLockPoll is how often a commit refused by a staged plan's lock
// looks whether the lock is gone: a few times per fill chunk.
const stageLockPoll = 5 * time.Millisecond

// stale says why a plan made at version that changes keys (or all) may
// not be committed now, or "" if it may: every commit since changed other
// objects, and none of its objects is being renamed. mu is held. locked
// says the reason is (also) a staged plan's lock on one of its objects.
func (rec *record) stale(version uint64, keys map[string]bool, all bool) (string, bool) {
	why := rec.staleSince(version, keys, all)
	for k := range keys {
		if rec.locked[k] {
			if why == "" {
				why = k + " is being filled under a staging name"
			}
			return why, true
		}
	}
	return why, false
}

// staleSince says why a plan made at version may not be committed because
// of the commits since, or "" if it may.
func (rec *record) staleSince(version uint64, keys map[string]bool, all bool) string {
	if n := rec.version - version; n > 0 {
		switch {
		case all || rec.written == nil:
			return "another sync of this namespace ran since, and this plan rewrites the table"
		case n > uint64(len(rec.log)):
			return fmt.Sprintf("%d syncs of this namespace ran since, more than the %d remembered", n, len(rec.log))
		}
		for _, e := range rec.log[len(rec.log)-int(n):] {
			if e.all {
				return "the record was invalidated since (a failure, or Invalidate)"
			}
			for k := range keys {
				if e.keys[k] {
					return "another sync of this namespace changed " + k + " since"
				}
			}
		}
	}
	return ""
}

// committed records a successful commit of a plan made at version that
// changed keys (or all); mu is held. When other commits came between,
// the record keeps their objects and takes the plan's.
func (r *Reconciler) committed(rec *record, want *table, full, counts bool, version uint64, keys map[string]bool, all bool) {
	if rec.version != version && !all && rec.written != nil && want != nil {
		want = overlay(rec.written, want, keys)
	}
	r.done(rec, want, full, counts)
	rec.version++
	rec.logged(logEntry{keys: keys, all: all})
}

// overlay is base with the objects keys name ("set NAME", "chain NAME")
// as from has them (gone where from has none); base is not changed.
func overlay(base, from *table, keys map[string]bool) *table {
	out := &table{sets: base.sets.derive(), chains: base.chains.derive(), opaque: base.opaque, dormant: base.dormant}
	for k := range keys {
		kind, name, _ := strings.Cut(k, " ")
		switch {
		case kind == "set" && from.sets.get(name) != nil:
			out.sets.put(name, from.sets.get(name))
		case kind == "set":
			out.sets.del(name)
		case from.chains.get(name) != nil:
			out.chains.put(name, from.chains.get(name))
		default:
			out.chains.del(name)
		}
	}
	return out
}

// logged appends the entry of the version just made; mu is held. Every
// version has one, so that stale can tell what changed since any plan.
func (rec *record) logged(e logEntry) {
	rec.log = append(rec.log, e)
	if len(rec.log) > maxLog {
		rec.log = slices.Delete(rec.log, 0, len(rec.log)-maxLog)
	}
}

// touchKeys names the objects the plan changes ("set NAME" for a set or
// any of its elements, "chain NAME"), or all for the table itself.
func (p *plan) touchKeys() (map[string]bool, bool) {
	keys := map[string]bool{}
	for _, o := range p.ops() {
		kind, rest, _ := strings.Cut(o.Key, "/")
		switch kind {
		case "set", "chain":
			keys[kind+" "+rest] = true
		case "element":
			name, _, _ := strings.Cut(rest, "/")
			keys["set "+name] = true
		default:
			return keys, true
		}
	}
	return keys, false
}

// done records a successful sync; mu is held. Only syncs that may be the
// periodic full one count towards it (counts): the CNI path's partial
// syncs, many more, would otherwise make the agent's every sync full.
func (r *Reconciler) done(rec *record, want *table, full, counts bool) {
	rec.written = want
	rec.full = false
	switch {
	case full:
		rec.syncs = 0
		// The kernel read may have put into the record what no commit
		// logged (something else changed a set as desired has it).
		rec.fullSyncs++
	case counts:
		rec.syncs++
	}
}

// fail makes the next sync of netns a full one.
func (r *Reconciler) fail(netns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec := r.records[netns]; rec != nil {
		rec.invalidate()
	}
	r.log.Warn("nftables sync failed; next sync is full", "netns", netns)
}
