package inputs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/load"
)

// FilesOptions tunes a Files source. The zero value is ready to use.
type FilesOptions struct {
	// Logger receives one line per decision (a file read, a file failing);
	// nil means slog.Default().
	Logger *slog.Logger
	// Debounce is how long the folder must stay quiet after a change before
	// it is read again. Editors, `cp` and tests write a file in several
	// steps; reading between them would see half a file. Default 100ms.
	Debounce time.Duration
	// Resync is the period of a full re-read that catches what change
	// notifications miss (an overflowed event queue, a filesystem that sends
	// none). Default 30s; negative turns it off.
	Resync time.Duration
}

const (
	defaultDebounce = 100 * time.Millisecond
	defaultResync   = 30 * time.Second
	// pollWithoutNotify is the re-read period used when the system cannot
	// give us change notifications at all (inotify instances exhausted).
	pollWithoutNotify = 2 * time.Second
	// maxDebounceFactor bounds how long a stream of events can postpone a
	// read: a file rewritten without pause is still read every
	// Debounce*maxDebounceFactor.
	maxDebounceFactor = 10
)

// Files is the standalone source: the objects in the .yaml, .yml and .json
// files under a folder, read with the load package (the same reader as
// `terwayctl render`), followed as the files change.
//
// Change detection: fsnotify watches the folder and each subfolder; any
// event starts a short debounce, after which the whole folder is walked and
// every file read and hashed. Only files whose content hash changed are
// parsed again, and Changed fires only when the objects or the errors did
// change. A slow periodic walk (Resync) is the safety net for missed events;
// when notifications are unavailable the folder is polled instead.
//
// Names beginning with "." are skipped, files and folders alike: editors'
// lock and swap files live there, and so do the timestamped copies a
// Kubernetes ConfigMap volume keeps beside its "..data" link (reading those
// would count every object twice). The terway/v1 kinds (Allocation, ENI,
// Config) that load also reads are ignored here: the agent owns those.
//
// One bad file never costs the others their objects: a file that cannot be
// read or parsed keeps the objects last read from it (none if it never
// parsed) and is named, with the reason, in Snapshot.Errors until it parses.
type Files struct {
	dir      string
	nodeName string
	log      *slog.Logger
	debounce time.Duration
	resync   time.Duration
	changed  chan struct{}

	// mu guards what readers see.
	mu      sync.Mutex
	started bool
	synced  bool
	snap    Snapshot // rebuilt after every change

	// Only the run goroutine uses these.
	files   map[string]*fileState // by path
	walkErr error                 // the last walk's failure, nil when it succeeded
	watched map[string]bool       // folders given to the watcher
	read    bool                  // a complete read has happened (synced, for this goroutine)
}

// fileState is what one file last gave.
type fileState struct {
	sum  [sha256.Size]byte // content last parsed, good or bad
	objs *load.Objects     // objects of the last content that parsed; nil if none ever did
	err  error             // why the current content gives no objects; nil when it parsed
}

// NewFiles returns a source reading the folder dir for the node nodeName.
// It reads nothing until Start.
func NewFiles(dir, nodeName string, opts FilesOptions) (*Files, error) {
	if dir == "" {
		return nil, fmt.Errorf("kube inputs: folder: the path is empty")
	}
	if nodeName == "" {
		return nil, fmt.Errorf("kube inputs %s: node name is empty: the source must know which Node is this one", dir)
	}
	f := &Files{
		dir:      filepath.Clean(dir),
		nodeName: nodeName,
		log:      opts.Logger,
		debounce: opts.Debounce,
		resync:   opts.Resync,
		changed:  make(chan struct{}, 1),
		files:    map[string]*fileState{},
		watched:  map[string]bool{},
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	f.log = f.log.With("source", "files", "dir", f.dir)
	if f.debounce <= 0 {
		f.debounce = defaultDebounce
	}
	if f.resync == 0 {
		f.resync = defaultResync
	}
	return f, nil
}

// Start checks that the folder exists and begins reading and following it
// in the background until ctx ends. The first read signals Changed.
func (f *Files) Start(ctx context.Context) error {
	info, err := os.Stat(f.dir)
	if err != nil {
		return fmt.Errorf("kube inputs folder %s: %w", f.dir, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("kube inputs folder %s: not a folder", f.dir)
	}
	f.mu.Lock()
	if f.started {
		f.mu.Unlock()
		return fmt.Errorf("kube inputs folder %s: source already started", f.dir)
	}
	f.started = true
	f.mu.Unlock()

	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.log.Warn("no change notifications; polling the folder instead", "every", pollWithoutNotify, "err", err)
		w = nil
	}
	go f.run(ctx, w)
	return nil
}

// Synced reports whether the folder has been read completely once.
func (f *Files) Synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// Changed is signalled after every read that changed the objects or errors.
func (f *Files) Changed() <-chan struct{} { return f.changed }

// Snapshot returns the objects of the last read.
func (f *Files) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.snap
	s.Pods = slices.Clone(s.Pods)
	s.Namespaces = slices.Clone(s.Namespaces)
	s.Policies = slices.Clone(s.Policies)
	s.Errors = slices.Clone(s.Errors)
	return s
}

// Node implements NodeGetter: this node from the last read.
func (f *Files) Node() *corev1.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap.Node
}

// Pod returns the pod namespace/name from the last read.
func (f *Files) Pod(namespace, name string) (*corev1.Pod, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pods := f.snap.Pods
	i, ok := slices.BinarySearchFunc(pods, [2]string{namespace, name}, func(p *corev1.Pod, key [2]string) int {
		if c := strings.Compare(p.Namespace, key[0]); c != 0 {
			return c
		}
		return strings.Compare(p.Name, key[1])
	})
	if !ok {
		return nil, false
	}
	return pods[i], true
}

// run reads the folder now, then again after each quiet spell following a
// change and at every resync, until ctx ends.
func (f *Files) run(ctx context.Context, w *fsnotify.Watcher) {
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	period := f.resync
	if w != nil {
		defer w.Close()
		events, watchErrs = w.Events, w.Errors
	} else if period < 0 || period > pollWithoutNotify {
		period = pollWithoutNotify
	}
	var tick <-chan time.Time
	if period > 0 {
		t := time.NewTicker(period)
		defer t.Stop()
		tick = t.C
	}
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	var pendingSince time.Time // first change not yet read; zero when none

	if f.scan(w) {
		quiet.Reset(f.debounce)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			now := time.Now()
			if pendingSince.IsZero() {
				pendingSince = now
			}
			if now.Sub(pendingSince) < f.debounce*maxDebounceFactor {
				quiet.Reset(f.debounce)
			}
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			// An overflow or a watcher fault may have lost events: read
			// everything again once things are quiet.
			f.log.Warn("change notification failed; re-reading the folder", "err", err)
			if pendingSince.IsZero() {
				pendingSince = time.Now()
			}
			quiet.Reset(f.debounce)
		case <-quiet.C:
			pendingSince = time.Time{}
			if f.scan(w) {
				quiet.Reset(f.debounce)
			}
		case <-tick:
			if f.scan(w) {
				quiet.Reset(f.debounce)
			}
		}
	}
}

// scan walks the folder, reads every file and, when anything changed,
// rebuilds the snapshot and signals Changed. It reports whether it began
// watching a new folder: a file written there between the walk and the
// watch sent no event, so the caller reads once more.
func (f *Files) scan(w *fsnotify.Watcher) (newWatches bool) {
	paths, dirs, walkErr := f.walk()
	if w != nil {
		newWatches = f.watchDirs(w, dirs)
	}

	changed := !f.read && walkErr == nil
	if errString(walkErr) != errString(f.walkErr) {
		changed = true
		if walkErr != nil {
			f.log.Error("cannot list the folder; keeping the objects last read", "err", walkErr)
		}
	}
	f.walkErr = walkErr

	seen := make(map[string]bool, len(paths))
	for _, p := range paths {
		fileChanged, gone := f.readFile(p)
		seen[p] = !gone
		changed = changed || fileChanged
	}
	// A partial walk does not prove a file is gone: only prune after a
	// complete one.
	if walkErr == nil {
		for p := range f.files {
			if !seen[p] {
				delete(f.files, p)
				f.log.Info("file removed; its objects are gone", "file", p)
				changed = true
			}
		}
	}
	if !changed {
		return newWatches
	}
	if walkErr == nil && !f.read {
		f.read = true
		f.log.Info("first complete read of the folder", "files", len(f.files))
	}
	snap := f.build()
	f.mu.Lock()
	f.snap, f.synced = snap, f.read
	f.mu.Unlock()
	signal(f.changed)
	return newWatches
}

// walk lists the files to read and the folders to watch, skipping names
// that begin with ".".
func (f *Files) walk() (paths, dirs []string, err error) {
	err = filepath.WalkDir(f.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != f.dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		err = fmt.Errorf("kube inputs folder %s: listing: %w", f.dir, err)
	}
	slices.Sort(paths)
	return paths, dirs, err
}

// watchDirs makes the watcher cover exactly the folders found, and reports
// whether it added any. A folder created later produces an event in its
// parent, whose re-read adds it.
func (f *Files) watchDirs(w *fsnotify.Watcher, dirs []string) (added bool) {
	want := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		want[d] = true
		if f.watched[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			f.log.Warn("cannot watch folder; its changes are seen at the next resync", "folder", d, "err", err)
			continue
		}
		f.watched[d] = true
		added = true
	}
	for d := range f.watched {
		if !want[d] {
			_ = w.Remove(d) // gone already, most likely; nothing to undo
			delete(f.watched, d)
		}
	}
	return added
}

// readFile reads one file and records what it gives; it reports whether
// the file's objects or error changed, and whether the file is gone (deleted
// since the walk: the caller forgets it like a file the walk did not see).
func (f *Files) readFile(path string) (changed, gone bool) {
	st := f.files[path]
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, true
	}
	if err != nil {
		if st == nil {
			st = &fileState{}
			f.files[path] = st
		}
		err = fmt.Errorf("kube inputs file %s: reading: %w", path, err)
		if errString(err) == errString(st.err) {
			return false, false
		}
		st.sum = [sha256.Size]byte{}
		st.err = f.keeping(st, err)
		f.log.Error("cannot read file", "file", path, "err", err)
		return true, false
	}
	sum := sha256.Sum256(data)
	if st != nil && st.sum == sum && (st.objs != nil || st.err != nil) {
		return false, false
	}
	if st == nil {
		st = &fileState{}
		f.files[path] = st
	}
	st.sum = sum
	objs := &load.Objects{}
	if err := objs.Read(path, bytes.NewReader(data)); err != nil {
		st.err = f.keeping(st, fmt.Errorf("kube inputs file %w", err))
		f.log.Error("file does not parse", "file", path, "err", st.err)
		return true, false
	}
	st.objs, st.err = objs, nil
	f.log.Info("file read", "file", path, "nodes", len(objs.Nodes), "pods", len(objs.Pods),
		"namespaces", len(objs.Namespaces), "policies", len(objs.Policies), "skipped", len(objs.Skipped))
	return true, false
}

// keeping says, in err, what happens to the file's earlier objects.
func (f *Files) keeping(st *fileState, err error) error {
	if st.objs == nil {
		return fmt.Errorf("%w (the file gives no objects until it is fixed)", err)
	}
	return fmt.Errorf("%w (the objects last read from it are kept)", err)
}

// build makes a snapshot from every file's objects.
func (f *Files) build() Snapshot {
	s := Snapshot{}
	if f.walkErr != nil {
		s.Errors = append(s.Errors, f.walkErr)
	}
	paths := make([]string, 0, len(f.files))
	for p := range f.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	nodeFile := ""
	for _, p := range paths {
		st := f.files[p]
		if st.err != nil {
			s.Errors = append(s.Errors, st.err)
		}
		if st.objs == nil {
			continue
		}
		for _, n := range st.objs.Nodes {
			if n.Name != f.nodeName {
				continue
			}
			if s.Node != nil {
				s.Errors = append(s.Errors, fmt.Errorf("kube inputs file %s: Node %s: also defined in %s, whose copy is used", p, n.Name, nodeFile))
				continue
			}
			s.Node, nodeFile = n, p
		}
		s.Pods = append(s.Pods, st.objs.Pods...)
		s.Namespaces = append(s.Namespaces, st.objs.Namespaces...)
		s.Policies = append(s.Policies, st.objs.Policies...)
	}
	if s.Node == nil {
		s.Errors = append(s.Errors, fmt.Errorf("kube inputs folder %s: Node %s: not found in any file", f.dir, f.nodeName))
	}
	sortByKey(s.Pods)
	sortByKey(s.Namespaces)
	sortByKey(s.Policies)
	return s
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
