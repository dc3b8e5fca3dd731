package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// RuleCounter is the kernel's count for one rule of ours with a counter
// statement (spec.NFTRule.Counter).
type RuleCounter struct {
	Chain   string
	Comment string
	Packets uint64
	Bytes   uint64
}

// ReadCounters reads the counters of chain's rules in table inet terway in
// netns, in rule order. No table or no chain is no counters, not an error:
// a node before its first sync has counted nothing.
//
// The counters are anonymous statements of the rules, so a rule that is
// rewritten (its chain's rules changed, or the table replaced) starts again
// from zero; readers treat a smaller value as a reset, as Prometheus does.
func ReadCounters(ns op.Namespaces, netns, chainName string) ([]RuleCounter, error) {
	c, err := dial(ns, netns)
	if err != nil {
		return nil, err
	}
	defer c.close()
	a := append(attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable), attrStr(unix.NFTA_RULE_CHAIN, chainName)...)
	ms, err := c.dump(unix.NFT_MSG_GETRULE, familyInet, a)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list rules of chain %s of table inet terway in %s: %w", chainName, nsName(netns), err)
	}
	var out []RuleCounter
	for _, m := range ms {
		name, exprs, _, comment, err := decodeRule(m)
		if err != nil {
			return nil, fmt.Errorf("decode a rule of chain %s in %s: %w", chainName, nsName(netns), err)
		}
		if name != chainName {
			continue
		}
		for _, e := range exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out = append(out, RuleCounter{Chain: name, Comment: comment, Packets: ctr.Packets, Bytes: ctr.Bytes})
			}
		}
	}
	return out, nil
}
