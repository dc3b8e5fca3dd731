// Package store is the agent's allocation store: one record (kind
// Allocation) per pod attachment, kept in a bbolt file and synced to disk
// before a CNI ADD is answered, so that an agent killed at any moment finds
// on restart exactly the attachments it has handed out — none lost, none
// given twice. It also holds the VPC-mode address allocator (AllocateVPC),
// which picks addresses inside the same transaction that records them.
//
// On-disk layout (schema version 1):
//
//	meta         "format"  = "terway-allocations"  marks the file as ours
//	             "schema"  = "1"                   decimal; newer is refused
//	             "podCIDR" = "10.244.1.0/24"       the VPC pool, once known
//	allocations  "<containerID>/<ifName>" = JSON of spec.Allocation
//	pods         "<namespace>/<name>"     = "<containerID>/<ifName>"
//	ips          16-byte address (IPv4 as ::ffff:a.b.c.d) = "<containerID>/<ifName>"
//
// The two index buckets are written in the same transactions as the records
// they index; Check verifies all three agree.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/terway-reconciler/terway/spec"
)

// Errors callers can test with errors.Is. Every returned error also names
// the file, pod, attachment or CIDR concerned.
var (
	// ErrCorrupt: the file is not a readable allocation store (random bytes,
	// truncated, inconsistent indexes, another program's bbolt file). The
	// agent must not guess: see MoveAside.
	ErrCorrupt = errors.New("allocation store is corrupt")
	// ErrNewerSchema: the file was written by a newer agent whose layout
	// this one does not know; downgrading would lose or misread records.
	ErrNewerSchema = errors.New("allocation store has a newer schema")
	// ErrLocked: another process (another agent) holds the store open.
	ErrLocked = errors.New("allocation store is locked by another process")
	// ErrExhausted: no free address is left in the pod CIDR.
	ErrExhausted = errors.New("pod CIDR exhausted")
	// ErrConflict: the write would give one address, pod or attachment two
	// owners.
	ErrConflict = errors.New("allocation conflict")
	// ErrCIDRChanged: a request names another pod CIDR than the one the
	// store allocates from; SetPodCIDR is the way to change it.
	ErrCIDRChanged = errors.New("pod CIDR changed")
	// ErrInvalid: the request itself is malformed (empty container ID,
	// unparsable IP...).
	ErrInvalid = errors.New("invalid allocation request")
)

// SchemaVersion is the layout this code writes and understands.
const SchemaVersion = 1

const formatName = "terway-allocations"

var (
	bucketMeta   = []byte("meta")
	bucketAllocs = []byte("allocations")
	bucketPods   = []byte("pods")
	bucketIPs    = []byte("ips")

	keyFormat  = []byte("format")
	keySchema  = []byte("schema")
	keyPodCIDR = []byte("podCIDR")
)

// DefaultLockTimeout bounds the wait for the file lock: a second agent on
// the same state directory fails within a second with ErrLocked instead of
// hanging, while a restarting agent whose predecessor is still exiting
// gets a moment to take over.
const DefaultLockTimeout = time.Second

// Options tune Open. The zero value is what the agent wants.
type Options struct {
	// LockTimeout is how long Open waits for the file lock; zero means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// ReadOnly opens an existing store for reading (terwayctl dumps) with a
	// shared lock; every write then fails.
	ReadOnly bool
}

// Store is an open allocation store. Its methods are safe for concurrent
// use: bbolt runs one writer at a time and readers alongside it.
type Store struct {
	path      string
	db        *bolt.DB
	closeOnce sync.Once
	closeErr  error

	// decoded keeps each record as last decoded, by key, with the bytes
	// it was decoded from: every render lists every allocation, and
	// decoding 250 records' JSON each time cost 0.9 ms. A record whose
	// bytes differ is decoded again.
	decodedMu sync.Mutex
	decoded   map[string]decodedRecord

	// listed is List's last answer, read in the transaction listedAt
	// names: bbolt gives a read transaction the id of the last write
	// committed, so while no write has been, List answers from it. Every
	// CNI ADD renders, and so lists every allocation: walking, comparing
	// and sorting 300 records cost it 0.45 ms on a node with 250 pods.
	listMu   sync.Mutex
	listed   []*spec.Allocation
	listedAt int
	// offer is a list Merge made from listed with the allocations a
	// caller is committing, for followWrites to keep rather than make the
	// same list again.
	offer *offeredList
	// writes are the allocations the write transaction under way put or
	// removed (bbolt runs one at a time): once it commits, List's last
	// answer follows them (followWrites) rather than being read again, as
	// every CNI ADD writes its allocation and then renders.
	writes *allocWrites
	// floor is where a walk for the pool's lowest free address starts
	// (floor.go).
	floor freeFloor
	// mutations counts the writes transactions began (txn.put, remove,
	// usePodCIDR), for a shared transaction to tell a member that failed
	// before writing from one that failed half way (updateGrouped).
	mutations int

	// groupMu guards group, the open write transaction allocations share
	// (updateGrouped).
	groupMu sync.Mutex
	group   *writeGroup
}

// decodedRecord is one record's bytes and what they decode to.
type decodedRecord struct {
	raw   string
	alloc *spec.Allocation // shared: List's answers hold it
}

// Open opens the store at path, creating it (mode 0600, its directory 0700)
// if it does not exist. Before bbolt maps the file, its pages are checked
// (so a truncated or scribbled file is an ErrCorrupt naming the path, never
// a crash); then the schema and the indexes are verified with Check.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("open allocation store: path is empty: %w", ErrInvalid)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	created := false
	if !opts.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("open allocation store %s: create directory: %w", path, err)
		}
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			created = true
		}
	}
	if !created {
		if err := preflight(path, opts); err != nil {
			return nil, err
		}
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{path: path, db: db}
	if created {
		if err := syncDir(filepath.Dir(path)); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("open allocation store %s: sync directory: %w", path, err)
		}
	}
	if err := s.initSchema(opts.ReadOnly); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.Check(); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// openBolt opens the bbolt file, turning a fault or panic inside bbolt
// into ErrCorrupt and the lock timeout into ErrLocked.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	var file *os.File
	bopts := &bolt.Options{
		Timeout:  opts.LockTimeout,
		ReadOnly: opts.ReadOnly,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, mode)
			file = f
			return f, err
		},
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				_ = file.Close() // releases the lock bbolt took
			}
			db, err = nil, fmt.Errorf("open allocation store %s: bbolt failed reading it (%v): %w", path, r, ErrCorrupt)
		}
	}()
	db, err = bolt.Open(path, 0o600, bopts)
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open allocation store %s: no lock after %s (another terwayd running?): %w", path, opts.LockTimeout, ErrLocked)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch), errors.Is(err, berrors.ErrChecksum):
		return nil, fmt.Errorf("open allocation store %s: not a valid bbolt file: %w: %w", path, ErrCorrupt, err)
	default:
		return nil, fmt.Errorf("open allocation store %s: %w", path, err)
	}
}

// initSchema creates the buckets of an empty file, or verifies that the
// file is ours and of a schema this code understands.
func (s *Store) initSchema(readOnly bool) error {
	var names, foreign []string
	err := s.view(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			names = append(names, string(name))
			switch string(name) {
			case string(bucketMeta), string(bucketAllocs), string(bucketPods), string(bucketIPs):
			default:
				foreign = append(foreign, strconv.Quote(string(name)))
			}
			return nil
		})
	})
	if err != nil {
		return s.corrupt("list buckets", err)
	}
	empty := len(names) == 0
	if len(foreign) > 0 {
		return fmt.Errorf("allocation store %s: holds buckets %v that are not ours (another program's bbolt file?): %w", s.path, foreign, ErrCorrupt)
	}
	if empty {
		if readOnly {
			return fmt.Errorf("allocation store %s: file is empty and opened read-only: %w", s.path, ErrCorrupt)
		}
		return s.update(func(tx *bolt.Tx) error {
			meta, err := tx.CreateBucket(bucketMeta)
			if err != nil {
				return err
			}
			if err := meta.Put(keyFormat, []byte(formatName)); err != nil {
				return err
			}
			if err := meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion))); err != nil {
				return err
			}
			for _, b := range [][]byte{bucketAllocs, bucketPods, bucketIPs} {
				if _, err := tx.CreateBucket(b); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return s.view(func(tx *bolt.Tx) error { return s.checkSchema(tx) })
}

// checkSchema verifies the meta bucket: our format marker and a schema
// version no newer than SchemaVersion. (Version 1 is the first; an older
// one would be migrated here.)
func (s *Store) checkSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return fmt.Errorf("allocation store %s: bucket %q is missing: %w", s.path, bucketMeta, ErrCorrupt)
	}
	if f := meta.Get(keyFormat); string(f) != formatName {
		return fmt.Errorf("allocation store %s: meta.format is %q, want %q (another program's bbolt file?): %w", s.path, f, formatName, ErrCorrupt)
	}
	raw := meta.Get(keySchema)
	v, err := strconv.Atoi(string(raw))
	if err != nil || v < 1 {
		return fmt.Errorf("allocation store %s: meta.schema is %q, want a version number: %w", s.path, raw, ErrCorrupt)
	}
	if v > SchemaVersion {
		return fmt.Errorf("allocation store %s: schema version %d was written by a newer terwayd; this one understands up to %d (upgrade the agent, or move the file aside to start empty): %w", s.path, v, SchemaVersion, ErrNewerSchema)
	}
	for _, b := range [][]byte{bucketAllocs, bucketPods, bucketIPs} {
		if tx.Bucket(b) == nil {
			return fmt.Errorf("allocation store %s: bucket %q is missing: %w", s.path, b, ErrCorrupt)
		}
	}
	return nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// Close releases the file and its lock. It is safe to call twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close allocation store %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// errNoChange rolls back a write transaction that found nothing to do,
// sparing the commit's fsync.
var errNoChange = errors.New("no change")

// update runs fn in a write transaction, committed (and fsynced by bbolt)
// before it returns. A panic or memory fault inside bbolt becomes an
// ErrCorrupt error rather than a crash of the agent.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	commit, err := s.updateDeferred(fn)
	if err != nil || commit == nil {
		return err
	}
	return commit()
}

// updateDeferred runs fn in a write transaction, with update's guard, and
// hands back its commit instead of committing: the transaction, and with
// it the store's writer lock, stays open until commit is called (once, from
// any goroutine: a transaction is used by one goroutine at a time). commit
// is nil when fn found nothing to do (errNoChange) or failed.
func (s *Store) updateDeferred(fn func(tx *bolt.Tx) error) (commit func() error, err error) {
	// An open shared transaction holds the writer lock until its commit:
	// start that now rather than wait for its members' (updateGrouped).
	s.closeGroup()
	tx, w, err := s.begin(fn)
	if err != nil || tx == nil {
		return nil, err
	}
	return func() error { return s.commitTx(tx, w) }, nil
}

// begin opens a write transaction and runs fn in it, with update's guard.
// It hands the transaction back open, nil when fn found nothing to do
// (errNoChange) or failed.
func (s *Store) begin(fn func(tx *bolt.Tx) error) (_ *bolt.Tx, _ *allocWrites, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverInto(&err)
	tx, err := s.db.Begin(true)
	if err != nil {
		return nil, nil, err
	}
	handed := false
	defer func() {
		if !handed {
			_ = tx.Rollback() // also on a panic: the writer lock goes
		}
	}()
	w := &allocWrites{}
	s.writes = w
	defer func() { s.writes = nil }()
	if err := fn(tx); err != nil {
		if errors.Is(err, errNoChange) {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	w.txID = tx.ID()
	handed = true
	return tx, w, nil
}

// commitTx commits a write transaction handed out by updateDeferred or
// shared by updateGrouped, with update's guard, and has List follow its
// writes.
func (s *Store) commitTx(tx *bolt.Tx, w *allocWrites) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverInto(&err)
	defer func() { _ = tx.Rollback() }() // a no-op once committed
	if err := tx.Commit(); err != nil {
		return err
	}
	if len(w.changed) > 0 {
		s.followWrites(w)
	}
	for _, r := range w.raises {
		s.floor.raise(r)
	}
	return nil
}

// groupMaxOpen bounds how long a shared transaction waits for a member's
// commit to start it: its members' commits start when their batch of ADDs
// is taken (agent/add_batch.go), which nothing else may hold up for long.
// A variable for tests.
var groupMaxOpen = 5 * time.Millisecond

// writeGroup is a write transaction that allocations share until one of
// them commits it (updateGrouped).
type writeGroup struct {
	tx     *bolt.Tx
	writes *allocWrites
	// failed is a member's write that failed half way: the transaction
	// rolls back, and every member's commit fails with it.
	failed error
	closed bool        // no member joins any more (under Store.groupMu)
	timer  *time.Timer // under Store.groupMu
	once   sync.Once
	err    error
}

// commit closes the group and commits it, once; every call returns the
// outcome.
func (g *writeGroup) commit(s *Store) error {
	g.once.Do(func() {
		s.groupMu.Lock()
		s.closeLocked(g)
		failed, timer := g.failed, g.timer
		s.groupMu.Unlock()
		if timer != nil {
			timer.Stop()
		}
		if failed != nil {
			_ = g.tx.Rollback()
			g.err = failed
			return
		}
		g.err = s.commitTx(g.tx, g.writes)
	})
	return g.err
}

// closeLocked closes g to new members; groupMu is held.
func (s *Store) closeLocked(g *writeGroup) {
	g.closed = true
	if s.group == g {
		s.group = nil
	}
}

// closeGroup starts the commit of the open shared transaction, if any.
func (s *Store) closeGroup() {
	s.groupMu.Lock()
	g := s.group
	if g != nil {
		s.closeLocked(g)
	}
	s.groupMu.Unlock()
	if g != nil {
		go func() { _ = g.commit(s) }()
	}
}

// updateGrouped is updateDeferred for allocations that may share one
// write transaction, and so one commit and its two fdatasyncs: ADDs that
// arrive together each waited for the commit before theirs to take the
// writer lock, one fsync after another (8 at once: 1.1 to 2.5 ms each
// before it even allocated). While a transaction is open and none of its
// members has started its commit, fn runs in it; otherwise fn opens one
// as updateDeferred does. Every member's commit commits the whole
// transaction once and returns its outcome: a member's allocation is
// durable only with all the others'. A member whose fn fails before
// writing leaves the others alone; one that fails having written fails
// them all, as the transaction must roll back. A member that finds
// nothing to do (errNoChange: an allocation made earlier in the shared
// transaction, say) still gets the commit to wait for it. Other writers
// start an open transaction's commit first (updateDeferred), and one left
// open commits after groupMaxOpen.
func (s *Store) updateGrouped(fn func(tx *bolt.Tx) error) (commit func() error, err error) {
	s.groupMu.Lock()
	if g := s.group; g != nil && !g.closed {
		defer s.groupMu.Unlock()
		return s.join(g, fn)
	}
	s.groupMu.Unlock()
	tx, w, err := s.begin(fn)
	if err != nil || tx == nil {
		return nil, err
	}
	g := &writeGroup{tx: tx, writes: w}
	// Published and timed under groupMu, which the timer's commit takes
	// first. While g holds the writer lock no other group can be open.
	s.groupMu.Lock()
	g.timer = time.AfterFunc(groupMaxOpen, func() { _ = g.commit(s) })
	if s.group == nil {
		s.group = g
	}
	s.groupMu.Unlock()
	return func() error { return g.commit(s) }, nil
}

// join runs fn in g's transaction; groupMu is held.
func (s *Store) join(g *writeGroup, fn func(tx *bolt.Tx) error) (commit func() error, err error) {
	before := s.mutations
	s.writes = g.writes
	defer func() { s.writes = nil }()
	err = func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer s.recoverInto(&err)
		return fn(g.tx)
	}()
	switch {
	case err == nil || errors.Is(err, errNoChange):
		return func() error { return g.commit(s) }, nil
	case s.mutations != before || errors.Is(err, ErrCorrupt):
		g.failed = fmt.Errorf("a write of an allocation sharing its transaction failed: %w", err)
		s.closeLocked(g)
		go func() { _ = g.commit(s) }()
	}
	return nil, err
}

// Settle waits until no write transaction is under way: an allocation
// whose commit AllocateVPCDeferred handed out is then committed (or
// failed), and readers see it. Nothing is written.
func (s *Store) Settle() error {
	return s.update(func(*bolt.Tx) error { return errNoChange })
}

// view runs fn in a read transaction, with the same guard as update.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.recoverInto(&err)
	return s.db.View(fn)
}

func (s *Store) recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("allocation store %s: bbolt failed (%v): %w", s.path, r, ErrCorrupt)
	}
}

func (s *Store) corrupt(what string, err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("allocation store %s: %s: %w: %w", s.path, what, ErrCorrupt, err)
}

// syncDir makes a newly created file's directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
