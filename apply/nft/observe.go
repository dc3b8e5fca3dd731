package nft

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// observe reads table inet terway and nothing else. Every request names our
// table, and the kernel filters set and rule dumps by it. Chains are the
// exception: the kernel's chain dump has no table filter (it walks every
// table of the family), so instead of dumping we ask for each chain by name
// (names from the rules, the maps, the desired state and our record). The
// table's use count (chains + sets) then tells whether a chain exists that
// none of those name; such a table is marked opaque and replaced whole.
//
// It returns nil when the table does not exist, and the ruleset generation
// the snapshot belongs to (re-read until it is stable across the reads).
func observe(c *conn, hints []string) (*table, uint32, error) {
	for attempt := 0; ; attempt++ {
		t, gen, err := observeOnce(c, hints, false)
		if errors.Is(err, errDumpInterrupted) && attempt < 5 {
			continue
		}
		return t, gen, err
	}
}

// observeOnce reads the table once. loose keeps a snapshot that commits
// interrupted (the caller accounts for them): objects no commit touched
// are read as they are, others may be missing or stale.
func observeOnce(c *conn, hints []string, loose bool) (*table, uint32, error) {
	if loose {
		c.keepInterrupted = true
		defer func() { c.keepInterrupted = false }()
	}
	gen, err := getGen(c)
	if err != nil {
		return nil, 0, err
	}
	use, flags, err := getTable(c)
	if errors.Is(err, unix.ENOENT) {
		return nil, gen, nil
	}
	if err != nil {
		return nil, 0, err
	}
	t := emptyTable()
	t.dormant = flags&unix.NFT_TABLE_F_DORMANT != 0
	anon, err := observeSets(c, t)
	if err != nil {
		return nil, 0, err
	}
	t.anonSets = len(anon)
	if loose && checkAheadMidRead != nil {
		checkAheadMidRead()
	}
	rules, names, err := observeRules(c, anon)
	if err != nil {
		return nil, 0, err
	}
	for _, s := range t.sets.all() {
		for _, e := range s.elems.all() {
			if e.verdict != nil && e.verdict.Chain != "" {
				names = append(names, e.verdict.Chain)
			}
		}
	}
	names = append(names, hints...)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		if err := observeChain(c, t, name); err != nil {
			return nil, 0, err
		}
	}
	for name, rs := range rules {
		ch := t.chains.get(name)
		if ch == nil {
			// Rules without their chain: the table changed between reads.
			return nil, 0, fmt.Errorf("nft chain %s: rules listed but the chain is missing: %w", name, errDumpInterrupted)
		}
		ch.rules = rs
	}
	// Whether a rule's anonymous sets count in the table's use differs
	// between kernel versions (6.18 does not count them); accept both.
	// (A loose read's count may be off by what commits made meanwhile:
	// its caller checks the count itself.)
	if !loose && !usedBy(use, t, len(anon)) {
		t.opaque = fmt.Sprintf("the table holds %d objects, we can name %d (%d sets and maps, %d chains)",
			use, t.sets.len()+t.chains.len(), t.sets.len(), t.chains.len())
	}
	gen2, err := getGen(c)
	if err != nil {
		return nil, 0, err
	}
	if gen2 != gen && !loose {
		return nil, 0, errDumpInterrupted
	}
	return t, gen, nil
}

func getGen(c *conn) (uint32, error) {
	m, err := c.get(unix.NFT_MSG_GETGEN, unix.AF_UNSPEC, nil)
	if err != nil {
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	as, err := parseAttrs(m.attrs)
	if err != nil {
		return 0, fmt.Errorf("read nftables generation: %w", err)
	}
	for _, a := range as {
		if a.typ == unix.NFTA_GEN_ID {
			return a.u32(), nil
		}
	}
	return 0, fmt.Errorf("read nftables generation: no generation id in the reply")
}

// getTable reads our table's use count and flags (ENOENT: no table).
func getTable(c *conn) (use, flags uint32, err error) {
	tm, err := c.get(unix.NFT_MSG_GETTABLE, familyInet, attrStr(unix.NFTA_TABLE_NAME, spec.NFTTable))
	if err == nil {
		use, flags, err = tableInfo(tm)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read table inet terway: %w", err)
	}
	return use, flags, nil
}

// usedBy tells whether a table's use count is t's sets and chains: with
// or without its rules' anon anonymous sets, which some kernels count.
func usedBy(use uint32, t *table, anon int) bool {
	known := uint32(t.sets.len() + t.chains.len())
	return use == known || use == known+uint32(anon)
}

// tableInfo returns the table's use count (its chains and sets) and flags.
func tableInfo(m msg) (use, flags uint32, err error) {
	as, err := parseAttrs(m.attrs)
	if err != nil {
		return 0, 0, err
	}
	found := false
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_TABLE_USE:
			use, found = a.u32(), true
		case unix.NFTA_TABLE_FLAGS:
			flags = a.u32()
		}
	}
	if !found {
		return 0, 0, fmt.Errorf("no use count in the reply")
	}
	return use, flags, nil
}

// observeSets reads our sets and maps with their elements; the anonymous
// sets of rules are returned separately, by kernel name.
func observeSets(c *conn, t *table) (map[string]*set, error) {
	ms, err := c.dump(unix.NFT_MSG_GETSET, familyInet, attrStr(unix.NFTA_SET_TABLE, spec.NFTTable))
	if err != nil {
		return nil, fmt.Errorf("list sets of table inet terway: %w", err)
	}
	anon := map[string]*set{}
	for _, m := range ms {
		s, isAnon, err := decodeSet(m)
		if err != nil {
			return nil, fmt.Errorf("decode a set of table inet terway: %w", err)
		}
		if err := readElems(c, s); err != nil {
			if errors.Is(err, unix.ENOENT) {
				// Deleted since the set list was read.
				return nil, fmt.Errorf("%w: %w", errDumpInterrupted, err)
			}
			return nil, err
		}
		if isAnon {
			anon[s.name] = s
		} else {
			t.sets.put(s.name, s)
		}
	}
	return anon, nil
}

// readElems replaces s.elems with the kernel's elements of set s.
//
// A hash set's dump that lists a key twice is read again: the kernel grows
// and shrinks a hash set's table in a worker after a commit, and a dump
// spanning such a resize lists some elements twice and leaves as many out.
// Each of the dump's messages skips as many elements as the ones before
// walked, in the table's order of its own time, and the last walks to the
// end: a dump lists at least the set's size, so one that leaves an element
// out lists another twice. No generation changes, so the dump is not
// flagged interrupted. Right after a transaction filled a new set of 1,002
// pairs, 2 to 3 % of the read-backs met one (TestResizingHashSetReadsWhole).
// Interval sets are left alone: their trees change only in a commit, which
// flags a dump it interrupts.
func readElems(c *conn, s *set) error {
	a := append(attrStr(unix.NFTA_SET_ELEM_LIST_TABLE, spec.NFTTable), attrStr(unix.NFTA_SET_ELEM_LIST_SET, s.name)...)
	for attempt := 1; ; attempt++ {
		ms, err := c.dump(unix.NFT_MSG_GETSETELEM, familyInet, a)
		if err != nil {
			return fmt.Errorf("list elements of nft %s %s: %w", s.word(), s.name, err)
		}
		s.elems = elemMap{}
		listed, err := decodeElems(s, ms)
		if err != nil {
			return fmt.Errorf("decode elements of nft %s %s: %w", s.word(), s.name, err)
		}
		if s.interval || s.types == nil || listed == s.elems.len() || attempt == maxElemReads {
			return nil
		}
		rereadElems.Add(1)
		time.Sleep(time.Duration(attempt) * 100 * time.Microsecond)
	}
}

// maxElemReads bounds readElems' reads of one set. The last read is kept
// as it is: what it lacks, the caller's comparison reports or writes again.
const maxElemReads = 8

// rereadElems counts readElems' reads again, for tests.
var rereadElems atomic.Int64

// getElems asks the kernel, for each e of elems, for the element of set s
// with e's key, and returns it as the kernel holds it, or nil when the
// answers show no element exactly e. Every query is sent at once
// (conn.getMany): a CNI ADD reads back its address in a hundred sets. A
// get of an interval finds the one holding the key, or a neighbour, which
// then differs from e; an answer that differs is not proof of absence
// (verifyElems reads the set back then).
//
// A one-field interval set keeps an interval as two kernel elements, its
// start and, flagged, the key after its end. The start is asked for by its
// key, the end as the first end after the start (the kernel answers an
// end query with the end at or after the key): an interval split in two,
// or one ending elsewhere, then pairs into something other than e. No end
// after the start means an interval open to the top. A concatenation
// keeps an interval as one element with its end. An interval open to the
// top is never confirmed this way (nil: verifyElems reads the set back).
func getElems(c *conn, s *set, elems []*elem) ([]*elem, error) {
	type asked struct {
		first, n int  // its queries' positions: the element's wires
		end      int  // the end query's, -1 for none
		open     bool // open to the top: not confirmed this way
	}
	var queries [][]byte
	query := func(w []byte) int {
		a := append(attrStr(unix.NFTA_SET_ELEM_LIST_TABLE, spec.NFTTable), attrStr(unix.NFTA_SET_ELEM_LIST_SET, s.name)...)
		queries = append(queries, append(a, nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, nested(unix.NFTA_LIST_ELEM, w))...))
		return len(queries) - 1
	}
	single := s.interval && len(s.types) == 1
	asks := make([]asked, len(elems))
	for i, e := range elems {
		wires := wireElems(s, e, false)
		if single {
			if _, closed := next(e.key[0].hi); !closed {
				// Open to the top: no end query can tell it from one that
				// ends somewhere (the kernel answers some with no element).
				asks[i] = asked{open: true}
				continue
			}
			wires = wires[:1] // the start; the end is asked for below
		}
		a := asked{first: len(queries), n: len(wires), end: -1}
		for _, w := range wires {
			query(w)
		}
		if single {
			if after, ok := next(e.key[0].lo); ok {
				a.end = query(append(attrU32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END),
					nested(unix.NFTA_SET_ELEM_KEY, attr(unix.NFTA_DATA_VALUE, after))...))
			}
		}
		asks[i] = a
	}
	replies, errs, err := c.getMany(unix.NFT_MSG_GETSETELEM, familyInet, queries)
	if err != nil {
		return nil, fmt.Errorf("read elements of nft %s %s: %w", s.word(), s.name, err)
	}
	out := make([]*elem, len(elems))
	for i, e := range elems {
		a := asks[i]
		if a.open {
			continue
		}
		var ms []msg
		found := true
		for q := a.first; q < a.first+a.n; q++ {
			switch {
			case errors.Is(errs[q], unix.ENOENT):
				found = false
			case errs[q] != nil:
				return nil, fmt.Errorf("read element %s of nft %s %s: %w", e.text, s.word(), s.name, errs[q])
			case replies[q] == nil:
				return nil, fmt.Errorf("read element %s of nft %s %s: %w", e.text, s.word(), s.name, errAckedWithoutReply)
			default:
				ms = append(ms, *replies[q])
			}
		}
		if !found {
			continue
		}
		if q := a.end; q >= 0 {
			// Acked with no element, or none: no end found.
			if err := errs[q]; err != nil && !errors.Is(err, unix.ENOENT) {
				return nil, fmt.Errorf("read element %s of nft %s %s: %w", e.text, s.word(), s.name, err)
			}
			if replies[q] != nil {
				ms = append(ms, *replies[q])
			}
		}
		got := &set{name: s.name, types: s.types, typeNames: s.typeNames, interval: s.interval, verdict: s.verdict, elems: elemMap{}}
		if _, err := decodeElems(got, ms); err != nil {
			return nil, fmt.Errorf("decode element %s of nft %s %s: %w", e.text, s.word(), s.name, err)
		}
		out[i] = got.elems.get(e.text)
	}
	return out, nil
}

// observeRules reads every rule of our table in one dump (the dump lists
// each chain's rules in order) and decompiles them. It returns the rules by
// chain and the chain names the rules live in and jump to.
func observeRules(c *conn, anon map[string]*set) (map[string][]rule, []string, error) {
	ms, err := c.dump(unix.NFT_MSG_GETRULE, familyInet, attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable))
	if err != nil {
		return nil, nil, fmt.Errorf("list rules of table inet terway: %w", err)
	}
	lookupAnon := func(name string) (*set, bool) { s, ok := anon[name]; return s, ok }
	rules := map[string][]rule{}
	var names []string
	for _, m := range ms {
		chainName, exprs, unknown, comment, err := decodeRule(m)
		if err != nil {
			return nil, nil, fmt.Errorf("decode a rule of table inet terway: %w", err)
		}
		if _, seen := rules[chainName]; !seen {
			names = append(names, chainName)
		}
		ir, err := decompile(exprs, lookupAnon)
		var r rule
		if err != nil {
			what := err.Error()
			if len(unknown) > 0 {
				what = "expressions " + strings.Join(unknown, ", ")
			}
			r = rule{text: fmt.Sprintf("<unrecognised rule %d: %s>", len(rules[chainName])+1, what)}
		} else {
			ir.Comment = comment
			r = rule{ir: ir, text: spec.FormatRule(ir), refs: ruleRefs(ir)}
			if ir.Verdict.Chain != "" {
				names = append(names, ir.Verdict.Chain)
			}
		}
		rules[chainName] = append(rules[chainName], r)
	}
	return rules, names, nil
}

// observeChain reads one chain's definition by name; a chain that does not
// exist is simply absent.
func observeChain(c *conn, t *table, name string) error {
	m, err := c.get(unix.NFT_MSG_GETCHAIN, familyInet, chainKey(name))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read nft chain %s: %w", name, err)
	}
	ch, err := decodeChain(m)
	if err != nil {
		return fmt.Errorf("decode nft chain %s: %w", name, err)
	}
	t.chains.put(name, ch)
	return nil
}
