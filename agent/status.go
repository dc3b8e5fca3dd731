package agent

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// ItemStatus is an item of the node's document the agent could not
// realise: what it is, the last error and how often it was tried. Items
// that are realised have no status (statedb's "done").
type ItemStatus struct {
	// Kind is the engine's kind (link, route, nft, ...), or render and
	// observe for the steps before any item.
	Kind string `json:"kind"`
	// Key is the item's key in the document (it names its namespace);
	// every nftables change is one item, the table, because the table is
	// written in one transaction that succeeds or fails whole.
	Key string `json:"key"`
	// Pod is the pod the item belongs to; empty for node-level items,
	// whose failure affects every pod (readiness counts only these).
	Pod string `json:"pod,omitempty"`
	// Error is the last attempt's error.
	Error string `json:"error"`
	// Attempts counts the failed attempts in a row.
	Attempts int `json:"attempts"`
	// Since is the first failed attempt of the row; LastAttempt the last.
	Since       time.Time `json:"since"`
	LastAttempt time.Time `json:"lastAttempt"`
	// NextRetry is when a sync tries the item again (a full resync tries
	// every item whatever its backoff).
	NextRetry time.Time `json:"nextRetry"`

	// text is the operation that failed: a different operation for the
	// same item (its desired state changed) is tried at once.
	text string
}

// Status is the agent's state as GET /status serves it and `terwayctl
// status` prints it.
type Status struct {
	Node string `json:"node"`
	// Ready is /readyz: serving (inputs synced, first sync done) and
	// enforcing (no node-level item failing).
	Ready bool `json:"ready"`
	// Reasons say why the agent is not ready, the first errors first.
	Reasons      []string  `json:"reasons,omitempty"`
	LastSync     time.Time `json:"lastSync,omitempty"`
	LastFullSync time.Time `json:"lastFullSync,omitempty"`
	Syncs        int       `json:"syncs"`
	// Failing lists every item not realised, node-level items first.
	Failing []ItemStatus `json:"failing"`
}

// Retry backoff per item: doubling from retryBase up to retryMax. The
// periodic full resync tries every item anyway, so its interval is the
// effective cap when it is shorter.
const (
	retryBase = time.Second
	retryMax  = 2 * time.Minute
)

// Items that are not kernel objects: the steps a sync goes through before
// it has items to apply. Both are node-level.
const (
	kindRender  = "render"
	kindObserve = "observe"
)

// nftItemKey is the key of the one item all nftables changes of a
// namespace share.
const nftItemKey = "table inet terway"

type itemKey struct{ kind, key string }

// statusTracker keeps the status of every failing item, as statedb's
// reconciler does: writers of the kernel report what they tried, and
// health is a summary of what is in error.
type statusTracker struct {
	clock clock.PassiveClock
	mu    sync.Mutex
	items map[itemKey]*ItemStatus
	// lastSync, lastFull and syncs describe the runner's runs.
	lastSync, lastFull time.Time
	syncs              int
}

func newStatusTracker(clk clock.PassiveClock) *statusTracker {
	return &statusTracker{clock: clk, items: map[itemKey]*ItemStatus{}}
}

// keyOf is the item an operation works on.
func keyOf(o op.Op) itemKey {
	if o.Kind == nft.Kind {
		return itemKey{nft.Kind, nftItemKey + nsSuffix(o.Netns)}
	}
	return itemKey{o.Kind, o.Key}
}

// podOf is the pod an item belongs to: the node's table holds every pod's
// policy, so it is a node-level item whatever op of it failed first; a
// table inside a pod's namespace (an exclusive-ENI pod's) is that pod's.
func podOf(o op.Op) string {
	if o.Kind == nft.Kind && o.Netns == spec.HostNetns {
		return ""
	}
	return o.Pod
}

func nsSuffix(netns string) string {
	if netns == spec.HostNetns {
		return ""
	}
	return " in " + netns
}

// backoff is the wait after the n-th failure in a row.
func backoff(n int) time.Duration {
	d := retryBase
	for i := 1; i < n && d < retryMax; i++ {
		d *= 2
	}
	return min(d, retryMax)
}

// conflict reports an error that says another writer changed nftables
// between our read and our commit (the kernel's generation moved, or our
// own reconciler refused a plan a later commit made stale): not the
// item's fault, nothing was written, it is simply planned again.
func conflict(err error) bool { return errors.Is(err, unix.ERESTART) || errors.Is(err, nft.ErrStale) }

// fail records a failed attempt at an item.
func (s *statusTracker) fail(k itemKey, pod, text string, err error) {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[k]
	if it == nil {
		it = &ItemStatus{Kind: k.kind, Key: k.key, Since: now}
		s.items[k] = it
	}
	it.Pod, it.Error, it.text = pod, err.Error(), text
	it.Attempts++
	it.LastAttempt = now
	it.NextRetry = now.Add(backoff(it.Attempts))
}

// ok records that an item is realised.
func (s *statusTracker) ok(k itemKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.items, k)
}

// record takes a report's results: failed items get an attempt more,
// the others are realised. It returns whether a conflict cut the report
// short (the caller plans again).
func (s *statusTracker) record(rep *engine.Report) (conflicted bool) {
	conflicted, _ = s.recordOf(rep, false)
	return conflicted
}

// recordScoped takes the report of a CNI request's plan, scoped to its
// pods. Its failures count like a sync's; its successes realise the pods'
// own items only. The table inet terway item is the node's: a scoped
// commit that wrote one pod's elements says nothing of the rest of the
// table, and clearing a sync's failure there would turn /readyz green
// until the next sync fails again (a flapping node).
//
// A node-level item that was failing and that such a commit wrote is due
// for a retry at once (recheck): writes work again, maybe the table too,
// and a sync, not the backoff, should say so.
func (s *statusTracker) recordScoped(rep *engine.Report) (recheck bool) {
	_, recheck = s.recordOf(rep, true)
	return recheck
}

func (s *statusTracker) recordOf(rep *engine.Report, scoped bool) (conflicted, recheck bool) {
	if rep == nil {
		return false, false
	}
	failed := map[itemKey]bool{}
	for _, r := range rep.Results {
		k := keyOf(r.Op)
		switch {
		case r.Err != nil && conflict(r.Err):
			conflicted = true
		case r.Err != nil:
			if !failed[k] { // an nft transaction's ops all carry its error
				failed[k] = true
				s.fail(k, podOf(r.Op), r.Op.String(), r.Err)
			}
		case scoped && podOf(r.Op) == "":
			// A node-level item: left to the syncs, retried now.
			recheck = s.retryNow(k) || recheck
		case !failed[k]:
			s.ok(k)
		}
	}
	return conflicted, recheck
}

// retryNow makes a failing item due for a retry now; it reports whether
// the item was waiting for a later one.
func (s *statusTracker) retryNow(k itemKey) bool {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if it := s.items[k]; it != nil && it.NextRetry.After(now) {
		it.NextRetry = now
		return true
	}
	return false
}

// settle ends a sync that planned the whole node: every kernel item it
// did not plan is realised, except those kept (skipped in backoff, or
// left to a CNI request that changed the same pod meanwhile).
func (s *statusTracker) settle(rep *engine.Report, kept map[itemKey]bool, full bool) {
	planned := map[itemKey]bool{}
	if rep != nil {
		for _, r := range rep.Results {
			planned[keyOf(r.Op)] = true
		}
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.items {
		if k.kind != kindRender && k.kind != kindObserve && !planned[k] && !kept[k] {
			delete(s.items, k)
		}
	}
	s.syncs++
	s.lastSync = now
	if full {
		s.lastFull = now
	}
}

// waiting reports whether the item failed and its retry is not due, so
// that a sync between full resyncs leaves it alone. An operation unlike
// the one that failed (the item's desired state changed) is due at once.
func (s *statusTracker) waiting(k itemKey, text string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[k]
	return it != nil && now.Before(it.NextRetry) && (text == "" || text == it.text)
}

// nextRetry is the earliest retry of a failing item (zero: none).
func (s *statusTracker) nextRetry() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, it := range s.items {
		if next.IsZero() || it.NextRetry.Before(next) {
			next = it.NextRetry
		}
	}
	return next
}

// failing returns the failing items, node-level first, then by kind and key.
func (s *statusTracker) failing() []ItemStatus {
	s.mu.Lock()
	out := make([]ItemStatus, 0, len(s.items))
	for _, it := range s.items {
		out = append(out, *it)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ItemStatus) int {
		return cmp.Or(cmp.Compare(a.Pod, b.Pod),
			cmp.Compare(kindRank(a.Kind), kindRank(b.Kind)), cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// kindRank puts the steps before the kernel items, nftables (the
// policy) first among those.
func kindRank(kind string) int {
	switch kind {
	case kindRender:
		return 0
	case kindObserve:
		return 1
	case nft.Kind:
		return 2
	}
	return 3
}

// enforcing reports whether the node realises its document as far as
// every pod is concerned: no node-level item fails (the nftables table
// holding every pod's policy, the node's sysctls and routes, the render
// and the observation themselves). A pod-level failure concerns one pod
// and shows in /status and on the pod, not in the node's readiness. The
// reasons are the first few failures, one line each.
func (s *statusTracker) enforcing() (bool, []string) {
	var reasons []string
	n := 0
	for _, it := range s.failing() {
		if it.Pod != "" {
			break // node-level items sort first
		}
		n++
		if len(reasons) < maxReasons {
			reasons = append(reasons, it.line())
		}
	}
	if n > maxReasons {
		reasons = append(reasons, fmt.Sprintf("and %d more failing node-level items (GET /status)", n-maxReasons))
	}
	return n == 0, reasons
}

// maxReasons bounds the errors /readyz prints.
const maxReasons = 5

// line is the item in one line: an nftables error lists every message of
// the refused transaction, one a line; the first says enough here.
func (it ItemStatus) line() string {
	msg, rest, more := strings.Cut(it.Error, "\n")
	if more {
		msg += fmt.Sprintf(" (and %d more lines: GET /status)", strings.Count(rest, "\n")+1)
	}
	return fmt.Sprintf("%s %s: %s (%d attempts since %s)", it.Kind, it.Key, msg, it.Attempts, it.Since.UTC().Format(time.RFC3339))
}

// snapshot is the tracker's part of Status.
func (s *statusTracker) snapshot(st *Status) {
	st.Failing = s.failing()
	s.mu.Lock()
	defer s.mu.Unlock()
	st.LastSync, st.LastFullSync, st.Syncs = s.lastSync, s.lastFull, s.syncs
}

// FormatStatus prints a Status for people: readiness and its reasons,
// then one line per failing item.
func FormatStatus(st Status) string {
	var b strings.Builder
	state := "ready"
	if !st.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(&b, "node %s: %s\n", st.Node, state)
	for _, r := range st.Reasons {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	fmt.Fprintf(&b, "syncs: %d, last %s, last full %s\n", st.Syncs, when(st.LastSync), when(st.LastFullSync))
	if len(st.Failing) == 0 {
		b.WriteString("failing items: none\n")
		return b.String()
	}
	fmt.Fprintf(&b, "failing items: %d\n", len(st.Failing))
	for _, it := range st.Failing {
		owner := "node"
		if it.Pod != "" {
			owner = "pod " + it.Pod
		}
		fmt.Fprintf(&b, "  %-8s %s [%s] attempts=%d since=%s next=%s\n    %s\n", it.Kind, it.Key, owner, it.Attempts,
			when(it.Since), when(it.NextRetry), it.Error)
	}
	return b.String()
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
