package nft

import (
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Staging a large replacement set outside the transaction.
//
// Recreating a 42,000-element pipapo set in the plan's transaction holds
// the kernel's nftables commit mutex for the whole fill (0.5 to 1 s on a
// loaded machine), and every other transaction of the namespace, a CNI
// ADD's included, waits for it. So a set that replaceSet recreates and
// that holds at least stageMinElems elements is filled outside the plan's
// transaction, in short transactions, under a name no rule uses, where it
// has no effect on packets:
//
//  1. fill: create set "__stage_<name>" (stagePrefix) and add its
//     elements in chunks of about stageChunkTime each; read it back.
//  2. hop: the plan's transaction, with every rule that names the set
//     naming "__stage_<name>" instead, and the old set deleted. Packets
//     see the whole plan at once, as before; only the set's name is not
//     yet the document's. The record is the document from here on.
//  3. fill again, under the document's name (no rule names it yet).
//  4. hop back: one small transaction rewrites those chains with the
//     document's rules and deletes "__stage_<name>". Nothing changes for
//     packets (the two sets hold the same elements).
//
// Every transaction is short, so other syncs commit in between; the kernel
// fill is paid twice, and still well under an element-by-element edit.
// Between 2 and 4 the set and the chains that name it are locked: a plan
// that changes them is refused as stale (it would name a set being
// filled). A failure in 1 leaves the old set in force and a staging set no
// rule names; a failure in 3 or 4 leaves the new content in force under
// the staging name. Either way the next sync is full: it finds a set
// named "__stage_<name>", which no document can name (names starting with
// "__" are refused; nft(8) still reads it), and deletes it in its one
// transaction, and rewrites what differs.

// stageMinElems is the size from which a recreated set is staged.
const stageMinElems = 4096

// stageMinChange is the element change of a kept interval set of at least
// stageMinElems from which the set is recreated and staged even where
// replaceSet keeps it (additions only, say): 2,048 pipapo additions are
// about 30 ms of kernel time in one transaction, more than a fill's chunk.
const stageMinChange = 2048

// stageChange reports whether the kept set hs is better staged than
// edited in the plan's transaction (see stageMinChange). replaceSet has
// computed the element change of every interval set it may concern.
func (d *differ) stageChange(ws, hs *set) bool {
	dl := d.deltas[ws.name]
	return dl != nil && len(dl.changed)+len(dl.gone) >= stageMinChange && canStage(ws, d.stageMin) &&
		d.have.sets.get(stageName(ws.name)) == nil
}

// stagePrefix makes a staging set's name; document names cannot start
// with "__".
const stagePrefix = "__stage_"

// stageChunkTime is the time each fill transaction aims at while other
// commits of the namespace run (CNI ADDs), so that one waits at most about
// that long for the commit mutex (ours, and the kernel's): a CNI ADD takes
// 3 to 5 ms here, and issue 12 asks its p99 to stay within twice that while
// a large change is applied. stageChunkTimeQuiet is the aim while none
// does. A commit that adds to a large pipapo set costs a fixed part
// besides the elements (the kernel copies the set's lookup tables: 1 to 2
// ms at 42,000 single-port elements, 10 to 15 ms at 42,000 port-range
// ones), so short chunks make the fill slower: 20 ms chunks made the
// 50,000 -> 42,000 change of port ranges 2.7 times a fresh fill, 1.7 with
// 50 ms ones. So a quiet fill takes the long steps, and the first ADD that
// comes while one runs waits for at most one; a fill that starts within
// stageBusyFor of another commit starts with the short ones; and a busy
// chunk aims at no less than twice that fixed part (fill).
const (
	stageChunkTime      = 3 * time.Millisecond
	stageChunkTimeQuiet = 80 * time.Millisecond
)

// stageChunkMin and stageChunkMax bound the elements of one fill
// transaction; the first has stageChunkFirst.
const (
	stageChunkMin   = 64
	stageChunkFirst = 256
	stageChunkMax   = 8192
)

// stageShare is how many times its own time a fill chunk leaves to
// others when other commits of the namespace run meanwhile (CNI ADDs):
// about a quarter of a CPU for the fill, and the rest for them.
const stageShare = 3

// stageBusyFor is how long after another commit a fill keeps the short
// steps.
const stageBusyFor = 500 * time.Millisecond

// stageYield is the longest a fill waits, before each chunk, for the
// namespace's other commits that are waiting or about to (a CNI ADD's)
// to go first (othersAhead).
const stageYield = 20 * time.Millisecond

// stagedSet is a set the plan fills outside its transaction.
type stagedSet struct {
	ws, hs *set
	// chains are the desired chains whose rules name the set: rewritten
	// with the staging name in the hop, with the set's in the hop back.
	chains []string
}

func stageName(name string) string { return stagePrefix + name }

// canStage reports whether ws may be staged: large enough, and with a
// staging name the kernel accepts.
func canStage(ws *set, stageMin int) bool {
	return stageMin > 0 && ws.elems.len() >= stageMin && len(stagePrefix)+len(ws.name) <= 255
}

// stagedRule returns r with the staged sets it names renamed to their
// staging names.
func (p *plan) stagedRule(r rule) rule {
	if len(p.staged) == 0 {
		return r
	}
	ir := r.ir
	renamed := false
	ir.Match = slices.Clone(ir.Match)
	for i, m := range ir.Match {
		if p.staged[m.Set] != nil {
			ir.Match[i].Set, renamed = stageName(m.Set), true
		}
	}
	if p.staged[ir.Verdict.Map] != nil {
		ir.Verdict.Map, renamed = stageName(ir.Verdict.Map), true
	}
	if !renamed {
		return r
	}
	return rule{ir: ir, text: spec.FormatRule(ir), refs: ruleRefs(ir)}
}

// fill creates set name with ws's definition and elements in short
// transactions, deleting a leftover of that name first, and reads it
// back. It returns the transactions it committed.
func (r *Reconciler) fill(ctx context.Context, c *conn, rec *record, ws *set, elems []*elem, name string) (int, error) {
	txns := 0
	def := *ws
	def.name = name
	create := []batchMsg{newSetMsg(&def, 1)}
	err := rec.sendLocked(c, create)
	if err != nil {
		// A leftover of an earlier attempt: replace it.
		err = rec.sendLocked(c, append([]batchMsg{delSetMsg(&def)}, create...))
	}
	if err != nil {
		return txns, fmt.Errorf("create staging %s %s: %w", ws.word(), name, err)
	}
	txns++
	chunk := stageChunkFirst
	seen := rec.commits.Load()
	busyUntil := time.Duration(-1) // on the records' clock (monoNow)
	if last := rec.lastOther.Load(); last != 0 {
		busyUntil = time.Duration(last) + stageBusyFor
	}
	// fixed is the part of a chunk's time that does not shrink with it,
	// as a chunk of a few elements measured it: the kernel copies a pipapo
	// set's lookup tables on every commit that changes it, 10 to 15 ms at
	// 42,000 port-range elements. A busy chunk aims at twice that at
	// least: shorter ones would each still hold the commit mutex for it,
	// and the fill would take ten times as many.
	var fixed time.Duration
	for len(elems) > 0 {
		if err := ctx.Err(); err != nil {
			return txns, err
		}
		for waited := time.Duration(0); rec.othersAhead(monoNow()) && waited < stageYield; waited += 200 * time.Microsecond {
			time.Sleep(200 * time.Microsecond)
		}
		n := min(chunk, len(elems))
		msgs := elemMsgs(&def, name, 0, elems[:n], false)
		if r.inject != nil {
			msgs = r.inject(msgs)
		}
		rec.commitMu.Lock()
		start := time.Now()
		err := rec.send(c, msgs, nil)
		took := max(time.Since(start), time.Microsecond)
		rec.commitMu.Unlock()
		if err != nil {
			return txns, fmt.Errorf("fill staging %s %s: %w", ws.word(), name, err)
		}
		txns++
		elems = elems[n:]
		if n <= 2*stageChunkMin {
			fixed = took
		}
		// Aim the next chunk at stageChunkTime.
		target := stageChunkTimeQuiet
		if now := rec.commits.Load(); now != seen {
			// Other syncs (CNI ADDs) commit meanwhile: shorter steps, and
			// the chunk's kernel work ran on this process's CPU time, so
			// leave them more of it. A fill nobody waits for runs at full
			// speed.
			seen, busyUntil = now, time.Duration(monoNow())+stageBusyFor
			time.Sleep(stageShare * took)
		}
		if time.Duration(monoNow()) < busyUntil {
			target = max(stageChunkTime, 2*fixed)
		}
		chunk = int(float64(n) * float64(target) / float64(took))
		chunk = min(max(chunk, stageChunkMin), stageChunkMax, 2*n)
	}
	if len(ws.types) > 1 {
		// A concatenated set: the kernel lists each element once, so a
		// count finds what it has been seen to do wrong (install part of
		// a list silently), without decoding 42,000 elements at once:
		// that allocation lands on concurrent CNI ADDs' latency. The next
		// full sync compares the content.
		n, err := countElems(c, &def)
		if err != nil {
			return txns, err
		}
		if n != ws.elems.len() {
			return txns, fmt.Errorf("staging %s %s holds %d elements, want %d", ws.word(), name, n, ws.elems.len())
		}
		return txns, nil
	}
	got := &set{name: name, types: ws.types, typeNames: ws.typeNames, interval: ws.interval, verdict: ws.verdict}
	if err := readElems(c, got); err != nil {
		return txns, err
	}
	if err := sameElems(got, ws); err != nil {
		return txns, fmt.Errorf("staging %s %s: %w", ws.word(), name, err)
	}
	return txns, nil
}

// othersAhead tells whether a staged fill should let other commits of
// the namespace go before its next chunk: one waits for commitMu, or a
// scoped plan (a CNI request's) began since the last commit, not longer
// than stageScopedAhead ago. Its commit comes once its links, addresses
// and routes are made, a few milliseconds after the plan: a chunk begun
// meanwhile would be in its way.
// now is monoNow's.
func (rec *record) othersAhead(now int64) bool {
	if rec.waiting.Load() > 0 {
		return true
	}
	at := rec.scopedAt.Load()
	return at != 0 && at > rec.lastOther.Load() && time.Duration(now-at) < stageScopedAhead
}

// stageScopedAhead bounds how long a scoped plan holds a fill back before
// its commit (a plan that commits nothing never commits).
const stageScopedAhead = 10 * time.Millisecond

// sendLocked sends a transaction of a staged fill under commitMu, so that
// it is counted where full plans look (record.txns).
func (rec *record) sendLocked(c *conn, msgs []batchMsg) error {
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	return rec.send(c, msgs, nil)
}

// countElems counts the elements the kernel lists for set s.
func countElems(c *conn, s *set) (int, error) {
	a := append(attrStr(unix.NFTA_SET_ELEM_LIST_TABLE, spec.NFTTable), attrStr(unix.NFTA_SET_ELEM_LIST_SET, s.name)...)
	ms, err := c.dump(unix.NFT_MSG_GETSETELEM, familyInet, a)
	if err != nil {
		return 0, fmt.Errorf("list elements of nft %s %s: %w", s.word(), s.name, err)
	}
	n := 0
	for _, m := range ms {
		as, err := parseAttrs(m.attrs)
		if err != nil {
			return 0, err
		}
		for _, a := range as {
			if a.typ == unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				list, err := parseAttrs(a.data)
				if err != nil {
					return 0, err
				}
				n += len(list)
			}
		}
	}
	return n, nil
}

// sameElems compares the elements read back (got) with the wanted ones.
func sameElems(got, ws *set) error {
	var missing, extra []string
	for k, e := range ws.elems.all() {
		if g := got.elems.get(k); g == nil || g.String() != e.String() {
			missing = append(missing, e.String())
		}
	}
	for k, g := range got.elems.all() {
		if ws.elems.get(k) == nil {
			extra = append(extra, g.String())
		}
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("holds %d elements, want %d (missing %s; unexpected %s)",
			got.elems.len(), ws.elems.len(), firstFew(missing), firstFew(extra))
	}
	return nil
}

// hopBack returns the transaction that makes the chains name the staged
// sets by their own names again and deletes the staging sets.
func (p *plan) hopBack(want *table) ([]batchMsg, map[string]int, error) {
	var msgs, dels []batchMsg
	chains := map[string]int{}
	for _, name := range sortedKeys(p.staged) {
		st := p.staged[name]
		for _, cn := range st.chains {
			chains[cn] = len(want.chains.get(cn).rules)
		}
		def := *st.ws
		def.name = stageName(name)
		dels = append(dels, delSetMsg(&def))
	}
	for _, cn := range sortedKeys(chains) {
		msgs = append(msgs, flushChainMsg(cn))
		for i, r := range want.chains.get(cn).rules {
			ms, err := ruleMsgs(cn, i, r, p.newID)
			if err != nil {
				return nil, nil, err
			}
			msgs = append(msgs, ms...)
		}
	}
	return append(msgs, dels...), chains, nil
}

// stagedLocks are the record keys (see touchKeys) a staged plan locks
// between its hop and its hop back.
func (p *plan) stagedLocks() map[string]bool {
	out := map[string]bool{}
	for name, st := range p.staged {
		out["set "+name] = true
		for _, cn := range st.chains {
			out["chain "+cn] = true
		}
	}
	return out
}

// commitStaged runs a plan with staged sets (see above).
func (r *Reconciler) commitStaged(ctx context.Context, c *conn, rec *record, netns string, p *plan, msgs []batchMsg,
	want *table, gen *genAt, version uint64, full bool) error {
	rec.stageMu.Lock()
	defer rec.stageMu.Unlock()
	keys, all := p.touchKeys()
	r.mu.Lock()
	why, _ := rec.stale(version, keys, all)
	r.mu.Unlock()
	if why != "" {
		// Refused before filling; commitLocked checks again after.
		return fmt.Errorf("nft table inet terway in %s: %w (%s); plan again", nsName(netns), ErrStale, why)
	}
	txns := 0
	cleanup := func() {
		for _, name := range sortedKeys(p.staged) {
			def := *p.staged[name].ws
			def.name = stageName(name)
			_ = rec.sendLocked(c, []batchMsg{delSetMsg(&def)}) // best effort: a full sync removes it
		}
	}
	sorted := map[string][]*elem{} // sorted once for both fills
	for _, name := range sortedKeys(p.staged) {
		sorted[name] = sortedElemList(&p.staged[name].ws.elems)
		n, err := r.fill(ctx, c, rec, p.staged[name].ws, sorted[name], stageName(name))
		txns += n
		if err != nil {
			cleanup()
			r.fail(netns)
			return fmt.Errorf("nft table inet terway in %s: %w", nsName(netns), err)
		}
	}
	// Our own fill transactions moved the generation on (record.txns
	// counts them); anyone else's still makes the kernel refuse the hop.
	// The address indexes of the new sets are built before the hop, so
	// that no CNI ADD's plan builds them after it.
	built := map[string]addrIndex{}
	for name, st := range p.staged {
		if st.ws.elems.len() >= indexMinElems {
			built[name] = newAddrIndex(st.ws)
		}
	}
	// The set and the chains that name it are locked from the hop's
	// commit (under commitMu, so no commit comes between) to the hop back.
	locks := p.stagedLocks()
	p.locks = locks
	defer func() {
		r.mu.Lock()
		for k := range locks {
			delete(rec.locked, k)
		}
		r.mu.Unlock()
	}()
	if _, err := r.commitLocked(ctx, c, rec, netns, p, msgs, want, gen, version, full, false); err != nil {
		cleanup()
		return err
	}
	// The hop is done: the record is the document.
	r.mu.Lock()
	if rec.indexes == nil {
		rec.indexes = map[string]indexed{}
	}
	for name, idx := range built {
		rec.indexes[name] = indexed{of: p.staged[name].ws, idx: idx}
	}
	r.mu.Unlock()
	r.warmIndexes(rec)
	// Finish the renaming; a failure from here leaves the document's
	// content in force.
	for _, name := range sortedKeys(p.staged) {
		if _, err := r.fill(context.WithoutCancel(ctx), c, rec, p.staged[name].ws, sorted[name], name); err != nil {
			r.fail(netns)
			return fmt.Errorf("nft table inet terway in %s: the plan was applied, but %w", nsName(netns), err)
		}
	}
	back, chains, err := p.hopBack(want)
	if err != nil {
		r.fail(netns)
		return err
	}
	rec.commitMu.Lock()
	defer rec.commitMu.Unlock()
	if err := rec.send(c, back, nil); err != nil {
		r.fail(netns)
		return fmt.Errorf("nft table inet terway in %s: the plan was applied, but naming its staged sets back failed: %w", nsName(netns), err)
	}
	counts, err := ruleCounts(c, sortedKeys(chains))
	if err == nil {
		for cn, n := range chains {
			if counts[cn] != n {
				err = fmt.Errorf("nft chain %s holds %d rules, want %d", cn, counts[cn], n)
			}
		}
	}
	if err != nil {
		r.fail(netns)
		return fmt.Errorf("nft table inet terway in %s: after naming its staged sets back: %w", nsName(netns), err)
	}
	r.log.Info("nftables staged sets named back", "netns", netns, "sets", len(p.staged), "fill transactions", txns)
	return nil
}
