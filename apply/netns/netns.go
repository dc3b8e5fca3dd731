// Package netns opens the network namespaces a document names and switches
// threads into them safely.
//
// A namespace switch happens only on a locked OS thread, and the thread is
// switched back before it is unlocked; if switching back fails, the thread is
// left locked so that the Go runtime discards it rather than reusing a thread
// in the wrong namespace.
package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
)

// Registry resolves document namespaces to handles. The host namespace ("")
// is HostPath when set (terwayctl --netns), else the namespace the process
// was in when the registry was made.
//
// What it holds per namespace (a descriptor, netlink sockets, namespace
// ids) keeps that namespace alive in the kernel: a deleted pod's namespace,
// and the id the node's namespace gives it, last as long as the registry
// holds a descriptor or a socket in it. So every handle has a lifetime:
//
//   - handles are keyed by the namespace's identity (device and inode);
//     a document's name for a namespace (its path) is bound to the
//     identity it named at its last use, and every use checks the path
//     again: a path that names another namespace now (a runtime re-created
//     a sandbox at the same path) or none is unbound from the old one, so
//     nothing is ever done in a dead namespace. Two paths of one namespace
//     share its handles;
//   - a namespace's handles are closed when no path is bound to it any
//     more: Forget unbinds a path (a pod's DEL, GC, a refused ADD), Retain
//     every path but the ones named (a full plan);
//   - a refused path (not a network namespace, the node's own) holds
//     nothing.
//
// Handles dropped while a plan may still be using them (between Hold and
// its release) are closed when the last holder releases, never under it:
// a closed descriptor number can be reused at once by another open.
type Registry struct {
	hostPath string

	mu sync.Mutex
	// bound maps each path in use ("" for the host) to the identity of the
	// namespace it named when last checked; open holds the namespaces.
	bound map[string]identity
	open  map[identity]*entry
	// nsids caches the ids namespaces give each other ([from, to]). An id
	// lasts as long as both namespaces, which the entries keep alive; a
	// closed entry takes its ids with it.
	nsids map[[2]identity]int
	// holders counts Hold calls not yet released; retired are entries
	// dropped meanwhile, closed when holders is back to 0.
	holders int
	retired []*entry
	// closed is set by Close: no handle is handed out after it (a closed
	// netlink handle would fall back to the calling thread's namespace,
	// the node's).
	closed bool
}

// entry is what the registry holds for one namespace.
type entry struct {
	fd     netns.NsHandle
	id     identity
	handle *netlink.Handle
	conn   *op.RouteConn
	// paths are the paths bound to it; the entry closes with the last.
	paths map[string]bool
}

// identity is a namespace's device and inode: two paths name the same
// namespace exactly when these are equal.
type identity struct{ dev, ino uint64 }

func (e *entry) close() {
	if e.handle != nil {
		e.handle.Close()
	}
	if e.conn != nil {
		e.conn.Close()
	}
	e.fd.Close()
}

// NewRegistry returns a registry. hostPath may be empty (the current
// namespace) or a namespace path or bare name (resolved under /var/run/netns).
func NewRegistry(hostPath string) *Registry {
	if hostPath != "" && hostPath[0] != '/' {
		hostPath = "/var/run/netns/" + hostPath
	}
	return &Registry{hostPath: hostPath, bound: map[string]identity{}, open: map[identity]*entry{}, nsids: map[[2]identity]int{}}
}

func (r *Registry) path(ns string) string {
	if ns == "" {
		return r.hostPath
	}
	return ns
}

// Hold keeps every handle the registry has handed out open until the
// returned release is called, even if its namespace is dropped meanwhile
// (a plan observes with handles fetched earlier). Calls nest.
func (r *Registry) Hold() (release func()) {
	r.mu.Lock()
	r.holders++
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.holders--
			if r.holders == 0 {
				for _, e := range r.retired {
					e.close()
				}
				r.retired = nil
			}
		})
	}
}

// Fd returns the namespace's file descriptor, opened once per namespace
// and valid until the namespace is dropped (see Registry).
func (r *Registry) Fd(ns string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := r.entryLocked(ns)
	if err != nil {
		return -1, err
	}
	return int(e.fd), nil
}

// entryLocked returns the namespace's entry after checking that its path
// still names the namespace it was bound to; a path that names another
// namespace now is bound to that one (opened if needed). mu is held.
func (r *Registry) entryLocked(ns string) (*entry, error) {
	if r.closed {
		return nil, fmt.Errorf("network namespace %q: %w", displayName(ns), ErrClosed)
	}
	p := r.path(ns)
	if id, ok := r.bound[ns]; ok && p == "" {
		// The process's own namespace, which cannot change under it.
		return r.open[id], nil
	}
	if p == "" {
		h, err := netns.Get()
		if err != nil {
			return nil, fmt.Errorf("open network namespace %q: %w", displayName(ns), err)
		}
		return r.keepLocked(ns, h)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		r.unbindLocked(ns) // the namespace is gone: so are its handles
		return nil, fmt.Errorf("open network namespace %q: %w", displayName(ns), &os.PathError{Op: "stat", Path: p, Err: err})
	}
	id := identity{uint64(st.Dev), st.Ino}
	if old, ok := r.bound[ns]; ok {
		if old == id {
			return r.open[id], nil
		}
		r.unbindLocked(ns) // the path names another namespace now
	}
	if e, ok := r.open[id]; ok {
		// Already open under another path: a namespace, checked when it
		// was opened; only the refusals of a pod's apply again.
		if err := r.refuseLocked(ns, id); err != nil {
			return nil, err
		}
		r.bindLocked(ns, e)
		return e, nil
	}
	h, err := netns.GetFromPath(p)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %q: %w", displayName(ns), err)
	}
	return r.keepLocked(ns, h)
}

// keepLocked checks a freshly opened namespace and binds the path to it;
// a refused one is closed at once. mu is held.
func (r *Registry) keepLocked(ns string, h netns.NsHandle) (*entry, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		h.Close()
		return nil, fmt.Errorf("network namespace %q: %w", displayName(ns), err)
	}
	id := identity{uint64(st.Dev), st.Ino}
	if typ, err := unix.IoctlRetInt(int(h), nsGetNSType); err != nil || typ != unix.CLONE_NEWNET {
		h.Close()
		return nil, fmt.Errorf("%q is not a network namespace, %w", displayName(ns), ErrNotPodNamespace)
	}
	if err := r.refuseLocked(ns, id); err != nil {
		h.Close()
		return nil, err
	}
	e, ok := r.open[id]
	if ok {
		h.Close() // the path changed since its stat, to a namespace open already
	} else {
		e = &entry{fd: h, id: id, paths: map[string]bool{}}
		r.open[id] = e
	}
	r.bindLocked(ns, e)
	return e, nil
}

// refuseLocked refuses, as a pod's namespace, the node's namespace or
// this process's own: a runtime's bug, a hostNetwork sandbox sent to the
// CNI, or a /proc/PID/ns/net read before the process entered its
// namespace. Acting there as in a pod's would take the node's own links
// for the pod's (its eth0 for a stale one, to be moved out of the way) and
// cut the node off. mu is held.
func (r *Registry) refuseLocked(ns string, id identity) error {
	if ns == "" {
		return nil
	}
	host, err := r.entryLocked("")
	if err != nil {
		return err
	}
	switch {
	case id == host.id:
		return fmt.Errorf("network namespace %q is the node's own namespace, %w", displayName(ns), ErrNotPodNamespace)
	case id == identity{uint64(ownNamespace.Dev), ownNamespace.Ino}:
		return fmt.Errorf("network namespace %q is this process's own namespace, %w", displayName(ns), ErrNotPodNamespace)
	}
	return nil
}

func (r *Registry) bindLocked(ns string, e *entry) {
	r.bound[ns] = e.id
	e.paths[ns] = true
}

// nsGetNSType is NS_GET_NSTYPE (linux/nsfs.h: _IO(0xb7, 0x3)), which
// x/sys/unix does not define: it returns the CLONE_NEW* type of a
// namespace descriptor and fails on any other file.
const nsGetNSType = 0xb703

// unbindLocked forgets what a path named; a namespace no path names any
// more is closed, with the ids cached for it: now, or when the last holder
// releases. mu is held.
func (r *Registry) unbindLocked(ns string) {
	id, ok := r.bound[ns]
	if !ok {
		return
	}
	delete(r.bound, ns)
	e := r.open[id]
	delete(e.paths, ns)
	if len(e.paths) > 0 {
		return
	}
	delete(r.open, id)
	for k := range r.nsids {
		if k[0] == id || k[1] == id {
			delete(r.nsids, k)
		}
	}
	if r.holders > 0 {
		r.retired = append(r.retired, e)
		return
	}
	e.close()
}

// ErrNotPodNamespace is why a pod namespace is refused.
var ErrNotPodNamespace = errors.New("not a pod's: refusing to act in it")

// ownNamespace identifies the namespace the process started in, read
// before any thread could switch.
var ownNamespace = func() unix.Stat_t {
	var st unix.Stat_t
	_ = unix.Stat("/proc/self/ns/net", &st)
	return st
}()

// Handle returns a netlink handle bound to the namespace.
func (r *Registry) Handle(ns string) (*netlink.Handle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := r.entryLocked(ns)
	if err != nil {
		return nil, err
	}
	if e.handle == nil {
		h, err := netlink.NewHandleAt(e.fd)
		if err != nil {
			return nil, fmt.Errorf("netlink handle in namespace %q: %w", displayName(ns), err)
		}
		e.handle = h
	}
	return e.handle, nil
}

// RouteConn returns the namespace's op.RouteConn, opened once per
// namespace.
func (r *Registry) RouteConn(ns string) (*op.RouteConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := r.entryLocked(ns)
	if err != nil {
		return nil, err
	}
	if e.conn == nil {
		// Under the lock: the entry's descriptor stays open meanwhile, and
		// opening a socket in a namespace takes microseconds.
		err := Do(int(e.fd), func() error {
			var err error
			e.conn, err = op.OpenRouteConn()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("rtnetlink socket in namespace %q: %w", displayName(ns), err)
		}
	}
	return e.conn, nil
}

// NetnsID returns the id namespace from gives namespace to, or -1. Ids
// are cached: a full plan checks every veth pair both ways, two requests a
// pod, and an id does not change while both namespaces live (both paths
// are checked first, so a re-created namespace never gets the old id).
func (r *Registry) NetnsID(from, to string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ef, err := r.entryLocked(from)
	if err != nil {
		return 0, err
	}
	et, err := r.entryLocked(to)
	if err != nil {
		return 0, err
	}
	k := [2]identity{ef.id, et.id}
	if id, ok := r.nsids[k]; ok {
		return id, nil
	}
	if ef.handle == nil {
		if ef.handle, err = netlink.NewHandleAt(ef.fd); err != nil {
			return 0, fmt.Errorf("netlink handle in namespace %q: %w", displayName(from), err)
		}
	}
	id, err := ef.handle.GetNetNsIdByFd(int(et.fd))
	if err != nil {
		return 0, fmt.Errorf("netns id of %s in %s: %w", displayName(to), displayName(from), err)
	}
	if id >= 0 {
		// No id yet is not cached: the kernel assigns one when a veth
		// end first names the other namespace.
		r.nsids[k] = id
	}
	return id, nil
}

// Exists reports whether the namespace can be opened. A namespace refused
// as a pod's (ErrNotPodNamespace) does not exist for a plan: it is not
// observed, so its pod's items plan as creations that fail alone, naming
// the refusal, and the rest of the node converges.
func (r *Registry) Exists(ns string) bool {
	if r.path(ns) == "" {
		return true
	}
	_, err := r.Fd(ns)
	return err == nil || !(errors.Is(err, ErrNotPodNamespace) || errors.Is(err, fs.ErrNotExist))
}

// Do runs fn on a locked OS thread inside the namespace.
func (r *Registry) Do(ns string, fn func() error) error {
	release := r.Hold() // the descriptor stays open while fn runs
	defer release()
	fd, err := r.Fd(ns)
	if err != nil {
		return err
	}
	return Do(fd, fn)
}

// Forget drops the handles of a namespace: its pod was deleted, or its ADD
// refused. A later use opens the path again.
func (r *Registry) Forget(ns string) {
	if ns == "" {
		return // the node's namespace lives as long as the registry
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unbindLocked(ns)
}

// Retain drops the handles of every pod namespace not in keep: after a
// full plan, those are namespaces no pod of the document has any more.
func (r *Registry) Retain(keep []string) {
	want := make(map[string]bool, len(keep))
	for _, k := range keep {
		want[k] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ns := range r.bound {
		if ns != "" && !want[ns] {
			r.unbindLocked(ns)
		}
	}
}

// Held returns the pod namespace paths the registry holds handles of,
// sorted, for tests and for status.
func (r *Registry) Held() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.bound))
	for ns := range r.bound {
		if ns != "" {
			out = append(out, ns)
		}
	}
	slices.Sort(out)
	return out
}

// Close releases every handle, the host's too (those a holder still uses
// when it releases them), and hands out none after: the registry is done.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for id, e := range r.open {
		delete(r.open, id)
		if r.holders > 0 {
			r.retired = append(r.retired, e) // closed with the last holder
			continue
		}
		e.close()
	}
	clear(r.bound)
	clear(r.nsids)
	if r.holders == 0 {
		for _, e := range r.retired {
			e.close()
		}
		r.retired = nil
	}
}

// ErrClosed is why a closed registry hands out nothing.
var ErrClosed = errors.New("the namespace registry is closed")

// Do runs fn on a locked OS thread switched into the namespace fd; on the
// calling goroutine when fd is the process's own namespace and no thread
// is switched away (the agent's own namespace is usually the node's).
func Do(fd int, fn func() error) error {
	if switchedThreads.Load() == 0 && isOwnNetns(fd) {
		return fn()
	}
	switchedThreads.Add(1)
	defer switchedThreads.Add(-1)
	var (
		wg     sync.WaitGroup
		result error
	)
	wg.Add(1)
	// A fresh goroutine keeps the caller's thread out of it; if restoring
	// fails, the goroutine exits still locked and the runtime kills the thread.
	go func() {
		defer wg.Done()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			result = fmt.Errorf("get current network namespace: %w", err)
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			result = fmt.Errorf("enter network namespace: %w", err)
			runtime.UnlockOSThread()
			return
		}
		result = fn()
		if err := unix.Setns(int(orig), unix.CLONE_NEWNET); err != nil {
			result = fmt.Errorf("restore network namespace: %w (thread discarded)", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	wg.Wait()
	return result
}

// switchedThreads counts the Do calls that may have a thread switched
// away from the process's own namespace. While it is 0, every thread is
// in that namespace: a thread is only switched locked to Do's goroutine,
// and switched back before it is unlocked (or it ends with it), so the
// calling goroutine's thread, and any it moves to, is in it. While it is
// not, the caller may be fn of another Do, on a switched thread, and Do
// switches as it always did.
var switchedThreads atomic.Int64

// ownNetns is the process's own namespace, read at start, before any Do.
var ownNetns = func() identity {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return identity{} // no handle matches: Do always switches
	}
	return identity{st.Dev, st.Ino}
}()

// isOwnNetns reports whether fd is the process's own namespace.
func isOwnNetns(fd int) bool {
	var st unix.Stat_t
	return ownNetns != (identity{}) && unix.Fstat(fd, &st) == nil && (identity{st.Dev, st.Ino}) == ownNetns
}

func displayName(ns string) string {
	if ns == "" {
		return "host"
	}
	return ns
}
