package nft

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// CheckAhead does, before a caller's lock, the kernel read that netns's
// next plan would do under it as a full sync: the periodic one (every
// FullEvery syncs), or, with full, the caller's PlanFull (the agent's full
// resync, every 30 s). It reads our table and compares it with the record.
// When they agree, the next plan trusts the record, as a full sync finding
// no drift would have. Reading back a table with a 50,000-element set
// takes about 100 ms, which the agent's resync spent under its lock, a wait
// for every CNI request meanwhile (BenchmarkAgentAddDuringLargePolicyChange,
// 1,000 ADDs: the slowest waited 77–125 ms for the lock).
//
// CNI requests commit during the read (it holds no lock), so the read is
// not one snapshot; what makes its verdict sound:
//   - The ruleset generation before and after, against the count of our
//     own transactions, says whether anyone else committed: then nothing
//     is concluded.
//   - The objects our commits touched meanwhile are read again at the
//     end with our commits held off (commitMu), as is the table's object
//     count. A touched set larger than checkRereadMax ends the check
//     instead: holding commits off while it is read is what this avoids.
//   - The kernel lists rules, and a table's sets, by position: a commit
//     that changed a chain, or made or removed a set, may have made the
//     read skip another object. Then nothing is concluded either; nor
//     when a staged plan's transactions (a fill, its hop back), which the
//     record's log does not name, came meanwhile.
//
// Every other object did not change during the read, so it was read whole.
// When the kernel differs from the record, or nothing could be concluded,
// the plan reads the kernel under the caller's lock, as before; so does a
// full sync after a failure, when the record is not to be trusted.
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
	if r.stillAgreed(rec, before) {
		r.checksByGeneration.Add(1)
		clean = true
		return
	}
	r.checksRead.Add(1)
	kernel, _, err := observeOnce(c, slices.Sorted(before.written.chains.names()), true)
	if err != nil || kernel == nil {
		return
	}
	written, at, err := r.settle(c, rec, before, kernel)
	if err != nil {
		return
	}
	clean = true
	if written == nil {
		return // nothing to conclude
	}
	if p, err := diff(netns, written, kernel, written, r.opts.ReplaceCost, r.opts.StageMin, nil); err != nil || len(p.ops()) > 0 {
		r.log.Info("nftables differ from the record; the next sync reads them under the lock", "netns", netns)
		return
	}
	r.mu.Lock()
	if !rec.full {
		// Our commits since the end of the read kept the record and the
		// kernel alike; a failure since would have set full.
		rec.checked()
		if rec.version-at.version == rec.txns.Load()-at.txns {
			// Only commits of ours since the read: an invalidation
			// moves the version alone, and the record a full plan made
			// after one is not the record this mark saw.
			rec.agreed.Store(&agreement{mark: at, at: rec.checkedAt})
		}
	}
	r.mu.Unlock()
}

// agreement is a mark at which the kernel was read and found as recorded,
// and when (monoNow).
type agreement struct {
	mark
	at int64
}

// agreedFor bounds how long a read that found the kernel as recorded
// stands in for the next ones (record.agreed): a full resync reads the
// table at least that often, whatever the generation says.
const agreedFor = 5 * time.Minute

// stillAgreed concludes a check without reading the kernel when nothing
// but our own logged commits changed the ruleset since the last read that
// found it as recorded: the generation moved by exactly our transactions
// since, each of them a commit the record's log names (no staged fill or
// hop back), none under way (a staged plan's rename), and no failure
// since (it clears agreed, as does a transaction of ours that left the
// generation where it was: send). Every nftables change in a namespace is
// a transaction and moves its generation, so another writer, or one of
// ours the record does not know, shows. Each of our commits reads back
// what it wrote (elements and sets whole, rewritten chains by their rule
// count), in the commit or soon after it: a read-back left for later that
// finds a difference invalidates the record then. A table of 1,000
// policies takes about 120 ms to read and compare, most of a converged
// full resync's time at that size. Where another program commits to the
// namespace between two checks (kube-proxy's iptables-nft, firewalld),
// the generation moves and every check reads, as before.
func (r *Reconciler) stillAgreed(rec *record, now mark) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := rec.agreed.Load()
	if a == nil || rec.full || len(rec.locked) > 0 || time.Duration(monoNow()-a.at) >= agreedFor {
		return false
	}
	ours := now.txns - a.txns
	if ours != now.version-a.version || now.gen-a.gen != uint32(ours) {
		return false
	}
	rec.checked()
	return true
}

// checked records that a check found the kernel as recorded now: the next
// full plan trusts the record, as a full sync finding no drift would have
// (checkedAt), and the periodic one is due as after a full sync. mu is held.
func (rec *record) checked() {
	rec.syncs = 0
	rec.checkedAt = monoNow()
}

// checkRereadMax is the largest set CheckAhead reads again with commits
// held off (a few milliseconds at most).
const checkRereadMax = 2000

// checkValidFor bounds how long a check stands for the next full sync:
// the caller plans right after it, or not for this check.
const checkValidFor = 5 * time.Second

// checkAheadMidRead, set by tests, runs in the middle of CheckAhead's read
// (after the sets, before the rules): commits made there interleave with it.
var checkAheadMidRead func()

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

// settle ends a check's read with our commits held off: it finds what they
// touched since before, reads those sets again into kernel, and compares
// the table's object count with the record's. It returns the record to
// compare kernel with, or nil when nothing can be concluded, and the mark
// the two are compared at.
func (r *Reconciler) settle(c *conn, rec *record, before mark, kernel *table) (*table, mark, error) {
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	r.mu.Lock()
	written, txns, version := rec.written, rec.txns.Load(), rec.version
	touched, logged := rec.touchedSince(before.version)
	trusted, staging := !rec.full, len(rec.locked) > 0
	r.mu.Unlock()
	if !trusted || !logged || written == nil || staging {
		return nil, mark{}, nil
	}
	if txns-before.txns != version-before.version {
		// A transaction of ours that is no logged commit: a staged
		// plan's fill or its hop back, which rewrites chains.
		return nil, mark{}, nil
	}
	gen, err := getGen(c)
	if err != nil {
		return nil, mark{}, err
	}
	if gen-before.gen != uint32(txns-before.txns) {
		return nil, mark{}, nil // someone else committed meanwhile
	}
	if !sameNames(&before.written.sets, &written.sets) {
		return nil, mark{}, nil // a set made or removed: the set list may have skipped one
	}
	for k := range touched {
		kind, name, _ := strings.Cut(k, " ")
		if kind != "set" {
			return nil, mark{}, nil // a chain changed: the rule list may have skipped one
		}
		if ws := written.sets.get(name); ws != nil && ws.elems.len() > checkRereadMax {
			return nil, mark{}, nil
		}
		s, err := readSet(c, name)
		if err != nil {
			return nil, mark{}, err
		}
		if s == nil {
			kernel.sets.del(name)
		} else {
			kernel.sets.put(name, s)
		}
	}
	use, _, err := getTable(c)
	if err != nil {
		return nil, mark{}, err
	}
	// A chain of someone else's that nothing of ours names is counted
	// here and not in the record.
	if !usedBy(use, written, kernel.anonSets) {
		return nil, mark{}, nil
	}
	return written, mark{gen: gen, txns: txns, version: version}, nil
}

// readSet reads one named set or map of our table with its elements; nil
// if there is none.
func readSet(c *conn, name string) (*set, error) {
	m, err := c.get(unix.NFT_MSG_GETSET, familyInet, append(attrStr(unix.NFTA_SET_TABLE, spec.NFTTable), attrStr(unix.NFTA_SET_NAME, name)...))
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s, _, err := decodeSet(m)
	if err != nil {
		return nil, err
	}
	if err := readElems(c, s); err != nil {
		return nil, err
	}
	return s, nil
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
		maps.Copy(keys, e.keys)
	}
	return keys, true
}
