package nft

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Reading back what a transaction wrote.

// verifyPerChainMax bounds per-chain rule dumps; beyond it one table-wide
// dump counts every chain's rules.
const verifyPerChainMax = 16

// verify reads back what the transaction wrote: the elements of every set
// it wrote (the kernel has installed partial element lists silently
// before), element by element when it changed a few of a kept set
// (elemCheck), and every rewritten chain's rule count.
func verify(c *conn, p *plan) error {
	var errs []error
	for _, name := range sortedKeys(p.verifySets) {
		ws := p.verifySets[name]
		got := &set{name: ws.name, types: ws.types, typeNames: ws.typeNames, interval: ws.interval, verdict: ws.verdict}
		if err := readElems(c, got); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := sameElems(got, ws); err != nil {
			errs = append(errs, fmt.Errorf("nft %s %s %w", ws.word(), name, err))
		}
	}
	for _, name := range sortedKeys(p.verifyElems) {
		if err := verifyElems(c, p.verifyElems[name]); err != nil {
			errs = append(errs, err)
		}
	}
	counts, err := ruleCounts(c, sortedKeys(p.verifyChains))
	if err != nil {
		errs = append(errs, err)
	}
	for _, name := range sortedKeys(p.verifyChains) {
		if want, got := p.verifyChains[name], counts[name]; err == nil && want != got {
			errs = append(errs, fmt.Errorf("nft chain %s holds %d rules, want %d", name, got, want))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("reading it back found differences: %w", errors.Join(errs...))
	}
	return nil
}

// verifyElems reads back the elements a transaction wrote to or deleted
// from a kept set, element by element (their queries sent at once).
func verifyElems(c *conn, ch *elemCheck) error {
	var missing, extra []string
	got, err := getElems(c, ch.set, slices.Concat(ch.present, ch.absent))
	if err != nil {
		return err
	}
	for i, e := range ch.present {
		if g := got[i]; g == nil || g.String() != e.String() {
			missing = append(missing, e.String())
		}
	}
	for _, g := range got[len(ch.present):] {
		if g != nil {
			extra = append(extra, g.String())
		}
	}
	if len(missing) > 0 && ch.set.interval {
		// An interval's answer that differs may be the kernel finding a
		// neighbour (adjacent intervals share a key): the set's dump
		// decides.
		return verifyElemsByDump(c, ch)
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("nft %s %s does not hold what was written (missing %s; unexpected %s)",
			ch.set.word(), ch.set.name, firstFew(missing), firstFew(extra))
	}
	return nil
}

// verifyDumps counts verifyElemsByDump's reads, for tests.
var verifyDumps atomic.Int64

// verifyElemsByDump checks ch against the whole set as the kernel lists it.
func verifyElemsByDump(c *conn, ch *elemCheck) error {
	verifyDumps.Add(1)
	ws := ch.set
	got := &set{name: ws.name, types: ws.types, typeNames: ws.typeNames, interval: ws.interval, verdict: ws.verdict}
	if err := readElems(c, got); err != nil {
		return err
	}
	var missing, extra []string
	for _, e := range ch.present {
		if g := got.elems.get(e.text); g == nil || g.String() != e.String() {
			missing = append(missing, e.String())
		}
	}
	for _, e := range ch.absent {
		if g := got.elems.get(e.text); g != nil {
			extra = append(extra, g.String())
		}
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("nft %s %s does not hold what was written (missing %s; unexpected %s)",
			ws.word(), ws.name, firstFew(missing), firstFew(extra))
	}
	return nil
}

func firstFew(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	slices.Sort(l)
	if len(l) > 3 {
		return strings.Join(l[:3], ", ") + fmt.Sprintf(" and %d more", len(l)-3)
	}
	return strings.Join(l, ", ")
}

// ruleCounts counts the rules of the given chains.
func ruleCounts(c *conn, chains []string) (map[string]int, error) {
	counts := map[string]int{}
	if len(chains) == 0 {
		return counts, nil
	}
	filters := [][]byte{attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable)}
	if len(chains) <= verifyPerChainMax {
		filters = filters[:0]
		for _, ch := range chains {
			filters = append(filters, append(attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable), attrStr(unix.NFTA_RULE_CHAIN, ch)...))
		}
	}
	for _, f := range filters {
		ms, err := c.dump(unix.NFT_MSG_GETRULE, familyInet, f)
		if err != nil {
			return nil, fmt.Errorf("count rules: %w", err)
		}
		for _, m := range ms {
			as, err := parseAttrs(m.attrs)
			if err != nil {
				return nil, fmt.Errorf("count rules: %w", err)
			}
			for _, a := range as {
				if a.typ == unix.NFTA_RULE_CHAIN {
					counts[a.str()]++
				}
			}
		}
	}
	return counts, nil
}
