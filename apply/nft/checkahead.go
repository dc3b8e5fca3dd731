package nft

import (
	"time"

	"github.com/terway-reconciler/terway/apply/op"
)

// CheckAhead does, before a caller's lock, the kernel read that netns's
// next plan would do under it as the periodic full sync (FullEvery): it
// reads our table and compares it with the record. When they agree, that
// plan may trust the record, as a full sync that found no drift would
// have: the count starts again and the plan is partial. Reading back a
// table with a 50,000-element set takes about 100 ms, which the agent's
// resync spent under its lock every tenth sync, a wait for every CNI
// request meanwhile (BenchmarkAgentAddDuringLargePolicyChange, 1,000 ADDs:
// the four slowest waited 86–125 ms for the lock).
//
// CNI requests commit during the read (it holds no lock), so it cannot be
// one consistent snapshot. It does not need to be: the ruleset generation
// before and after it, against the count of our own transactions, says
// whether anyone else committed meanwhile (then nothing is concluded), and
// the record's log names the objects our commits touched, which are
// compared as the record has them. Every other object did not change
// during the read, so it was read whole: an object a commit moved in the
// kernel's lists may have been skipped, which looks like drift, never like
// its absence.
//
// full says the caller's next plan is a PlanFull (the agent's periodic
// full resync, every 30 s): a check that agrees stands for its read too.
//
// When the kernel differs from the record, nothing changes: the plan is
// full and repairs it. A full sync after a failure reads under the
// caller's lock as before: then the record is not to be trusted.
func (r *Reconciler) CheckAhead(ns op.Namespaces, netns string, full bool) {
	r.mu.Lock()
	rec := r.records[netns]
	due := rec != nil && !rec.full && rec.written != nil && (full || rec.syncs+1 >= r.opts.FullEvery)
	if due {
		rec.checkedAt = 0 // an earlier check stands for nothing now
	}
	r.mu.Unlock()
	if !due {
		return
	}
	c, err := r.openConn(ns, netns, rec)
	if err != nil {
		return
	}
	clean := false
	defer func() { r.closeConn(netns, rec, c, clean) }()
	before, err := r.markOf(c, rec)
	if err != nil || before.written == nil {
		return
	}
	if checkAheadReading != nil {
		checkAheadReading()
	}
	c.keepInterrupted = true
	kernel, _, err := observeOnce(c, sortedKeys(before.written.chains), true)
	c.keepInterrupted = false
	if err != nil {
		return
	}
	after, err := r.markOf(c, rec)
	if err != nil {
		return
	}
	clean = true
	if after.written == nil || kernel == nil || after.gen-before.gen != uint32(after.txns-before.txns) {
		return // not ours to judge: the next plan reads under the lock
	}
	r.mu.Lock()
	touched, ok := rec.touchedSince(before.version)
	r.mu.Unlock()
	if !ok {
		return
	}
	view := overlay(kernel, after.written, touched)
	if p, err := diff(netns, after.written, view, after.written, r.opts.ReplaceCost, r.opts.StageMin); err != nil || len(p.ops()) > 0 {
		r.log.Info("nftables differ from the record; the next sync reads them under the lock", "netns", netns)
		return
	}
	r.mu.Lock()
	if !rec.full {
		// Our commits since kept the record and the kernel alike; a
		// failure since would have set full.
		rec.syncs = 0
		rec.checkedAt = monoNow()
	}
	r.mu.Unlock()
}

// checkValidFor bounds how long a check stands for the next full sync:
// the caller plans right after it, or not for this check.
const checkValidFor = 5 * time.Second

// checkAheadReading, set by tests, runs between CheckAhead's first mark and
// its read: commits made there come during the read.
var checkAheadReading func()

// mark is a record's state with the ruleset generation, read together:
// commits change both under commitMu.
type mark struct {
	gen     uint32
	txns    uint64
	version uint64
	written *table
}

func (r *Reconciler) markOf(c *conn, rec *record) (mark, error) {
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	r.mu.Lock()
	m := mark{txns: rec.txns.Load(), version: rec.version, written: rec.written}
	if rec.full {
		m.written = nil // not to be trusted
	}
	r.mu.Unlock()
	gen, err := getGen(c)
	m.gen = gen
	return m, err
}

// touchedSince names the objects ("set NAME", "chain NAME") our commits
// changed after version; false if the log does not reach back that far or
// an entry changed the table as a whole. mu is held.
func (rec *record) touchedSince(version uint64) (map[string]bool, bool) {
	n := rec.version - version
	if n > uint64(len(rec.log)) {
		return nil, false
	}
	keys := map[string]bool{}
	for _, e := range rec.log[len(rec.log)-int(n):] {
		if e.all {
			return nil, false
		}
		for k := range e.keys {
			keys[k] = true
		}
	}
	return keys, true
}
