package nft

import (
	"context"
	"errors"
	"fmt"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// ErrOffline is returned by the Exec of an operation planned offline: such
// a plan says what would change, and there is no kernel behind it to change.
var ErrOffline = errors.New("planned offline: nothing to execute")

// PlanBetween plans, without a kernel, the changes that turn a table equal
// to current (nil: no table) into desired (nil: no table), as a sync of
// netns would plan them against a kernel holding exactly current: the same
// differ, the same operations and lines, the same last commit line. It is
// what-if's kernel plan: a proposed document against the one the node has.
// The operations cannot be executed (their Exec returns ErrOffline).
func PlanBetween(netns string, current, desired *spec.NFTable) ([]op.Op, error) {
	var want, have *table
	var err error
	if desired != nil {
		if want, _, err = canonical(desired, nil); err != nil {
			return nil, err
		}
	}
	if current != nil {
		if have, _, err = canonical(current, nil); err != nil {
			return nil, fmt.Errorf("current table: %w", err)
		}
	}
	// The record is what the kernel holds: it only names the pods of
	// objects no longer wanted.
	p, err := diff(netns, want, have, have, DefaultReplaceCost, stageMinElems, nil)
	if err != nil {
		return nil, err
	}
	ops := p.ops()
	if len(ops) == 0 {
		return nil, nil
	}
	exec := func(context.Context, op.Namespaces) error { return ErrOffline }
	for i := range ops {
		ops[i].Exec = exec
	}
	commit := op.Op{
		Kind: Kind, Action: op.Update, Key: CommitKey, Netns: netns, Writes: 1, Exec: exec,
		Text: fmt.Sprintf("nft commit table inet terway: %d changes in 1 transaction (%d messages, %s sync)", len(ops), len(p.messages()), "offline"),
	}
	return append(ops, commit), nil
}
