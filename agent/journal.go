package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/spec"
)

// journal keeps the operations the agent executed, newest last, so that an
// operator (and `make demo`) can read what was changed on the node and
// why, after the fact: /applied prints it. It is bounded: a busy node keeps
// its last journalSize operations, and at most a quarter more.
type journal struct {
	mu      sync.Mutex
	entries []journalEntry
	dropped int
}

const journalSize = 5000

type journalEntry struct {
	at     time.Time
	reason string // "resync", "full resync", "ADD ns/name", ...
	text   string
	err    error
}

func (j *journal) record(reason string, rep *engine.Report) {
	if rep == nil || len(rep.Results) == 0 {
		return
	}
	now := time.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range rep.Results {
		j.entries = append(j.entries, journalEntry{at: now, reason: reason, text: r.Op.Text, err: r.Err})
	}
	// Drop the oldest a quarter at a time: dropping the few over the bound
	// on every record copied the whole journal on every CNI ADD of a busy
	// node. It so holds between journalSize and 5/4 of it.
	if over := len(j.entries) - journalSize; over > journalSize/4 {
		j.dropped += over
		j.entries = append(make([]journalEntry, 0, journalSize+journalSize/4+len(rep.Results)), j.entries[over:]...)
	}
}

// text prints one operation a line, grouped under the round that ran it.
func (j *journal) text() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var b strings.Builder
	if j.dropped > 0 {
		fmt.Fprintf(&b, "# %d older operations not kept\n", j.dropped)
	}
	var last journalEntry
	for i, e := range j.entries {
		if i == 0 || e.at != last.at || e.reason != last.reason {
			fmt.Fprintf(&b, "# %s %s\n", e.at.UTC().Format(time.RFC3339Nano), e.reason)
		}
		b.WriteString(e.text)
		if e.err != nil {
			fmt.Fprintf(&b, "   # FAILED: %v", e.err)
		}
		b.WriteByte('\n')
		last = e
	}
	return b.String()
}

// apply converges the kernel toward state and records what it did. It is
// the CNI path's (called with the agent's lock held): the pods it writes
// are noted for a resync planning meanwhile (resync.go), and its results
// update the items' status. An ADD that writes the nftables table again
// does not clear a failure a resync saw (its commit wrote one pod's part
// of the table: /readyz would flap), but makes a sync check it now rather
// than after its backoff.
func (a *Agent) apply(ctx context.Context, reason string, state *spec.NodeState, opts engine.PlanOptions) (*engine.Report, error) {
	rep, err := a.eng.Apply(ctx, state, opts)
	a.journal.record(reason, rep)
	a.writes.note(state, opts)
	if a.status.recordScoped(rep) && a.runner != nil {
		a.runner.Run()
	}
	a.healthChanged()
	return rep, err
}
