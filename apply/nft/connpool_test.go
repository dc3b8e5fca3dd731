package nft

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestSyncsReuseTheirSocket: the syncs of a namespace use one socket, kept
// open between them, rather than opening one each and closing it: a close
// waits in the kernel for the namespace's commit mutex (connpool.go).
func TestSyncsReuseTheirSocket(t *testing.T) {
	e := newEnv(t, "pool")
	ps := pods(3)
	before := dials.Load()
	e.apply(testDoc(ps, nil))
	e.apply(testDoc(ps, map[int]int{1: 1}))
	if ops := e.plan(testDoc(ps, map[int]int{1: 1}), true); len(lines(ops)) != 0 {
		t.Fatalf("a full plan after the commits is not empty:\n%s", planText(ops))
	}
	e.apply(testDoc(ps[:2], nil))
	if got := dials.Load() - before; got != 1 {
		t.Errorf("three commits and a full observe opened %d sockets, want 1", got)
	}
}

// TestDroppingARecordClosesItsSockets: a socket keeps its namespace alive,
// so the sockets of a namespace whose record is dropped (a pod's DEL
// removing its table, Forget, Retain) are closed with it, and a socket
// still in use then is closed when it is given back.
func TestDroppingARecordClosesItsSockets(t *testing.T) {
	e := newEnv(t, "pooldrop")
	e.apply(testDoc(pods(2), nil))
	e.r.mu.Lock()
	rec := e.r.records[e.ns]
	e.r.mu.Unlock()
	if rec == nil {
		t.Fatal("no record after a commit")
	}
	c := rec.conns.take()
	if c == nil || c.fd < 0 {
		t.Fatal("no open socket kept after a commit")
	}
	in := rec.conns.take() // another user's, still open
	if in == nil {
		var err error
		if in, err = dial(e.reg, e.ns); err != nil {
			t.Fatal(err)
		}
	}
	rec.conns.put(c)

	e.r.Forget(e.ns)
	if c.fd >= 0 {
		t.Error("Forget left the namespace's idle socket open")
	}
	e.r.closeConn(e.ns, rec, in, true)
	if in.fd >= 0 {
		t.Error("a socket given back after its record was dropped stayed open")
	}

	// Removing the table drops the record, and its sockets, too.
	e.apply(testDoc(pods(2), nil))
	e.r.mu.Lock()
	rec = e.r.records[e.ns]
	e.r.mu.Unlock()
	if rec == nil {
		t.Fatal("no record after a commit")
	}
	c = rec.conns.take()
	if c == nil {
		t.Fatal("no socket kept after a commit")
	}
	rec.conns.put(c)
	e.apply(nil)
	if c.fd >= 0 {
		t.Error("removing the table left the namespace's socket open")
	}
}

// TestNamespaceMadeAgainAtItsPath: a runtime may make a sandbox's
// namespace again at the same path. Nothing recorded of the old one is
// there, and a socket kept from it would write to the dead namespace: the
// next plan starts a new record, and the table is made in the new one.
func TestNamespaceMadeAgainAtItsPath(t *testing.T) {
	e := newEnv(t, "again")
	doc := testDoc(pods(2), nil)
	e.apply(doc)
	e.apply(doc) // a socket kept, the record partial-ready
	name := nstest.Name(e.ns)
	for _, args := range [][]string{{"netns", "del", name}, {"netns", "add", name}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	if ops := e.apply(doc); len(ops) == 0 || lines(ops)[0] != "+ table inet terway" {
		t.Fatalf("the plan for the namespace made again at %s trusted the old record:\n%s", e.ns, planText(ops))
	}
	if out := e.nft("list", "tables"); !strings.Contains(out, "table inet terway") {
		t.Errorf("no table in the new namespace: %q", out)
	}
}

// TestPlanOnAReplacedRecordIsRefused: a plan made on a record that was
// replaced since (the namespace forgotten, or made again at its path) is
// refused as stale, even when the new record's version is the plan's:
// versions start again with a record, so they cannot tell.
func TestPlanOnAReplacedRecordIsRefused(t *testing.T) {
	e := newEnv(t, "replaced")
	ps := pods(2)
	doc, moved := testDoc(ps, nil), testDoc(ps, map[int]int{1: 1})
	e.apply(doc)
	e.r.mu.Lock()
	version := e.r.records[e.ns].version
	e.r.mu.Unlock()
	stale := e.plan(moved, false)

	e.r.Forget(e.ns)
	for i := 0; ; i++ {
		e.r.mu.Lock()
		rec := e.r.records[e.ns]
		at := rec != nil && rec.version == version
		e.r.mu.Unlock()
		if at {
			break
		}
		if i == 10 {
			t.Fatalf("the new record never reached version %d", version)
		}
		e.run(e.plan([]*spec.NFTable{doc, moved}[i%2], true))
	}
	err := stale[0].Exec(context.Background(), e.reg)
	if !errors.Is(err, ErrStale) {
		t.Errorf("a plan made on the replaced record committed: %v", err)
	}
}
