package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
)

// These tests drive execute with operations that record when they run
// and touch no kernel: what is tested is the order and overlap execute
// gives them. The kernel kinds' own tests run the real operations.

// execLog records which operations ran, in order.
type execLog struct {
	mu  sync.Mutex
	ran []string
}

func (l *execLog) op(kind string, action op.Action, key string, run func() error) op.Op {
	return op.Op{Kind: kind, Action: action, Key: key, Pod: "x/a", Writes: 1, Exec: func(context.Context, op.Namespaces) error {
		l.mu.Lock()
		l.ran = append(l.ran, key)
		l.mu.Unlock()
		if run != nil {
			return run()
		}
		return nil
	}}
}

// TestExecuteSendsNFTBesideCreations: in a plan that deletes nothing (a
// CNI ADD's), the nftables transaction runs while the link is being
// created, not after the pod's other operations; the report keeps the
// plan's order and counts the writes of both.
func TestExecuteSendsNFTBesideCreations(t *testing.T) {
	var l execLog
	nftStarted, linkDone := make(chan struct{}), make(chan struct{})
	waitFor := func(c chan struct{}, what string) error {
		select {
		case <-c:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("timed out waiting for " + what)
		}
	}
	ops := []op.Op{
		l.op(links.Kind, op.Create, "link", func() error {
			// Still creating the link when the transaction starts.
			defer close(linkDone)
			return waitFor(nftStarted, "the nftables transaction to start beside the link")
		}),
		l.op("address", op.Create, "address", nil),
		l.op(nft.Kind, op.Create, "nft chain", func() error {
			close(nftStarted)
			return waitFor(linkDone, "the link (the transaction must not hold it back)")
		}),
		l.op(nft.Kind, op.Update, "nft commit", nil),
	}
	rep := &Report{}
	execute(context.Background(), nil, ops, rep)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range rep.Results {
		keys = append(keys, r.Op.Key)
	}
	if want := []string{"link", "address", "nft chain", "nft commit"}; !slices.Equal(keys, want) {
		t.Errorf("report order %q, want the plan's %q", keys, want)
	}
	if rep.Writes != len(ops) {
		t.Errorf("writes %d, want %d", rep.Writes, len(ops))
	}
	if len(l.ran) != len(ops) {
		t.Errorf("ran %q, want every operation once", l.ran)
	}
}

// TestExecuteKeepsOrderWhenDeleting: a plan that deletes runs every
// operation in the plan's order, nftables included.
func TestExecuteKeepsOrderWhenDeleting(t *testing.T) {
	var l execLog
	ops := order([]op.Op{
		l.op(links.Kind, op.Create, "link b", nil),
		l.op(nft.Kind, op.Create, "nft chain b", nil),
		l.op(links.Kind, op.Delete, "link a", nil),
		l.op(nft.Kind, op.Delete, "nft chain a", nil),
	})
	rep := &Report{}
	execute(context.Background(), nil, ops, rep)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"nft chain a", "link a", "link b", "nft chain b"}; !slices.Equal(l.ran, want) {
		t.Errorf("ran %q, want %q", l.ran, want)
	}
}

// TestExecuteLinkFailureBesideNFT: with the transaction beside, a pod
// whose link failed still gets none of its later kernel operations but
// the transaction, which carries every pod's nftables objects at once.
func TestExecuteLinkFailureBesideNFT(t *testing.T) {
	var l execLog
	ops := []op.Op{
		l.op(links.Kind, op.Create, "link", func() error { return errors.New("name taken") }),
		l.op("route", op.Create, "route", nil),
		l.op(nft.Kind, op.Update, "nft commit", nil),
	}
	rep := &Report{}
	execute(context.Background(), nil, ops, rep)
	if slices.Contains(l.ran, "route") {
		t.Errorf("the route was written after its link failed: ran %q", l.ran)
	}
	if len(rep.Results) != len(ops) || rep.Results[1].Err == nil {
		t.Fatalf("results %+v: want the route not attempted", rep.Results)
	}
	if rep.Writes != 1 {
		t.Errorf("writes %d, want 1 (the transaction)", rep.Writes)
	}
}
