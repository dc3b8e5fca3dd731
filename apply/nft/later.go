package nft

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/terway-reconciler/terway/apply/op"
)

// Read-backs left for later.
//
// A commit reads back what it wrote before it returns (verify.go). A
// caller that holds a lock of its own over the commit makes everyone who
// waits for that lock wait for the read-back too: the agent's admission
// step writes a few pods' addresses into a hundred group sets, and reading
// back those elements took 8 to 20 ms of the step, with every CNI ADD
// waiting for the agent's lock meanwhile. A caller that passes a
// LaterChecks in the commit's context (WithLaterChecks) gets the read-back
// of a commit that only changed elements of kept sets as a check to run
// once it has let go of its lock (LaterChecks.Run). A commit that writes a
// set or a chain whole reads everything back in the commit, as before.
//
// The commit records what it wrote as if read back already, and lets the
// namespace's other commits go. When the later read-back finds the kernel
// otherwise, the record is invalidated as for a read-back in the commit,
// and the next plan reads the kernel whole and repairs. A commit made in
// between may have changed the very elements read back (a DEL of a pod
// just admitted takes its address out again): a difference is then looked
// at again under the namespace's commit lock, against what the record
// holds by then (recheck), so that such a commit does not pass for a
// kernel that lost what was written.

// LaterChecks collects the read-backs the commits of a context leave to
// their caller. The zero value is ready to use.
type LaterChecks struct {
	mu     sync.Mutex
	checks []func() error
}

type laterChecksKey struct{}

// WithLaterChecks returns a context whose commits leave their read-back to
// l when they only changed elements of kept sets.
func WithLaterChecks(ctx context.Context, l *LaterChecks) context.Context {
	return context.WithValue(ctx, laterChecksKey{}, l)
}

func laterChecksOf(ctx context.Context) *LaterChecks {
	l, _ := ctx.Value(laterChecksKey{}).(*LaterChecks)
	return l
}

func (l *LaterChecks) add(check func() error) {
	l.mu.Lock()
	l.checks = append(l.checks, check)
	l.mu.Unlock()
}

// Len is how many read-backs are waiting.
func (l *LaterChecks) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.checks)
}

// Run runs the read-backs collected so far, once each, and returns what
// they found. A read-back that finds a difference has already made the
// next plan of its namespace a full one.
func (l *LaterChecks) Run() error {
	l.mu.Lock()
	checks := l.checks
	l.checks = nil
	l.mu.Unlock()
	var errs []error
	for _, check := range checks {
		if err := check(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// elemsOnly tells whether every read-back of p is element by element: no
// set or chain written whole.
func (p *plan) elemsOnly() bool {
	return len(p.verifySets) == 0 && len(p.verifyChains) == 0 && len(p.verifyElems) > 0
}

// verifyLater reads back, after its commit, the elements p wrote; after
// is the record's version that commit made.
func (r *Reconciler) verifyLater(ns op.Namespaces, netns string, rec *record, p *plan, after uint64) error {
	if !r.kept(netns, rec) {
		return nil // forgotten since (a pod's table its DEL removed): nothing to check
	}
	c, err := r.openConn(ns, netns, rec)
	if err == nil {
		err = verify(c, p)
		// Only a clean exchange leaves a socket fit for the pool; the
		// recheck, if any, asks on a new one.
		r.closeConn(netns, rec, c, err == nil)
		if err != nil {
			if c, err = r.openConn(ns, netns, rec); err == nil {
				err = r.recheck(c, rec, p, after)
				r.closeConn(netns, rec, c, err == nil)
			}
		}
	}
	if err != nil && r.failRecord(netns, rec) {
		return fmt.Errorf("nft table inet terway in %s: the transaction was applied but %w", nsName(netns), err)
	}
	return nil
}

// kept tells whether rec is still the record of netns.
func (r *Reconciler) kept(netns string, rec *record) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.records[netns] == rec
}

// failRecord is fail for rec only, and tells whether rec was still the
// record of netns: a newer one (its namespace forgotten and planned again
// since) knows nothing of what rec wrote.
func (r *Reconciler) failRecord(netns string, rec *record) bool {
	r.mu.Lock()
	kept := r.records[netns] == rec
	if kept {
		rec.invalidate()
	}
	r.mu.Unlock()
	if kept {
		r.log.Warn("nftables sync failed; next sync is full", "netns", netns)
	}
	return kept
}

// recheck reads back again, under the namespace's commit lock, what a
// later read-back found different: if commits since the one that made
// version after changed p's sets, only the elements the record still
// holds as p wrote them (and still lacks, of those p deleted) must be so.
func (r *Reconciler) recheck(c *conn, rec *record, p *plan, after uint64) error {
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	r.mu.Lock()
	written, moved := rec.written, rec.version != after
	r.mu.Unlock()
	if !moved {
		return verify(c, p)
	}
	again := &plan{verifyElems: map[string]*elemCheck{}}
	for name, ch := range p.verifyElems {
		var cur *set
		if written != nil {
			cur = written.sets.get(name)
		}
		if cur == nil || cur.interval != ch.set.interval {
			continue // gone or made anew since: its own commit read it back
		}
		still := &elemCheck{set: cur}
		for _, e := range ch.present {
			if he := cur.elems.get(e.text); he != nil && he.same(e) {
				still.present = append(still.present, e)
			}
		}
		for _, e := range ch.absent {
			if cur.elems.get(e.text) == nil {
				still.absent = append(still.absent, e)
			}
		}
		if len(still.present)+len(still.absent) > 0 {
			again.verifyElems[name] = still
		}
	}
	return verify(c, again)
}
