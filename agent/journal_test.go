package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/op"
)

// TestJournalBounded: a journal that records far more operations than it
// keeps holds between journalSize and a quarter more, the newest last,
// and counts what it dropped.
func TestJournalBounded(t *testing.T) {
	var j journal
	total := 0
	for round := range 3 * journalSize / 7 {
		rep := &engine.Report{}
		for i := range 7 {
			rep.Results = append(rep.Results, engine.Result{Op: op.Op{Text: fmt.Sprintf("op %d.%d", round, i)}})
		}
		j.record(fmt.Sprintf("ADD ns/p%d", round), rep)
		total += 7
		if n := len(j.entries); n > journalSize+journalSize/4+7 {
			t.Fatalf("after %d operations the journal holds %d", total, n)
		}
		if len(j.entries)+j.dropped != total {
			t.Fatalf("after %d operations: %d held and %d dropped", total, len(j.entries), j.dropped)
		}
	}
	if len(j.entries) < journalSize {
		t.Errorf("the journal keeps %d operations, fewer than %d", len(j.entries), journalSize)
	}
	text := j.text()
	last := fmt.Sprintf("op %d.6", 3*journalSize/7-1)
	if !strings.HasSuffix(strings.TrimSpace(text), last) || !strings.HasPrefix(text, fmt.Sprintf("# %d older operations not kept", j.dropped)) {
		t.Errorf("the journal's text does not start with what it dropped and end with %q:\n%s...%s", last, text[:200], text[len(text)-200:])
	}
}
