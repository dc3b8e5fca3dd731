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
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
)

// Registry resolves document namespaces to handles. The host namespace ("")
// is HostPath when set (terwayctl --netns), else the namespace the process
// was in when the registry was made.
type Registry struct {
	hostPath string

	mu      sync.Mutex
	files   map[string]netns.NsHandle
	handles map[string]*netlink.Handle
	conns   map[string]*op.RouteConn
	// nsids caches the ids namespaces give each other ([from, to]). An id
	// lasts as long as both namespaces, which the open descriptors in files
	// keep alive; Forget drops a namespace's ids with its descriptor.
	nsids map[[2]string]int
}

// NewRegistry returns a registry. hostPath may be empty (the current
// namespace) or a namespace path or bare name (resolved under /var/run/netns).
func NewRegistry(hostPath string) *Registry {
	if hostPath != "" && hostPath[0] != '/' {
		hostPath = "/var/run/netns/" + hostPath
	}
	return &Registry{hostPath: hostPath, files: map[string]netns.NsHandle{}, handles: map[string]*netlink.Handle{},
		conns: map[string]*op.RouteConn{}, nsids: map[[2]string]int{}}
}

func (r *Registry) path(ns string) string {
	if ns == "" {
		return r.hostPath
	}
	return ns
}

// Fd returns the namespace's file descriptor, opened once and cached.
func (r *Registry) Fd(ns string) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fdLocked(ns)
}

func (r *Registry) fdLocked(ns string) (int, error) {
	if h, ok := r.files[ns]; ok {
		return int(h), nil
	}
	var (
		h   netns.NsHandle
		err error
	)
	if p := r.path(ns); p == "" {
		h, err = netns.Get()
	} else {
		h, err = netns.GetFromPath(p)
	}
	if err != nil {
		return -1, fmt.Errorf("open network namespace %q: %w", displayName(ns), err)
	}
	if ns != "" {
		if err := r.checkPodNamespace(ns, h); err != nil {
			h.Close()
			return -1, err
		}
	}
	r.files[ns] = h
	return int(h), nil
}

// checkPodNamespace refuses a pod namespace that is in fact the node's
// namespace or this process's own: a runtime's bug, a hostNetwork sandbox
// sent to the CNI, or a /proc/PID/ns/net read before the process entered
// its namespace. Acting there as in a pod's would take the node's own
// links for the pod's (its eth0 for a stale one, to be moved out of the
// way) and cut the node off. mu is held.
func (r *Registry) checkPodNamespace(ns string, h netns.NsHandle) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return fmt.Errorf("network namespace %q: %w", displayName(ns), err)
	}
	hostFd, err := r.fdLocked("")
	if err != nil {
		return err
	}
	var host unix.Stat_t
	if err := unix.Fstat(hostFd, &host); err != nil {
		return fmt.Errorf("network namespace of the node: %w", err)
	}
	switch {
	case st.Dev == host.Dev && st.Ino == host.Ino:
		return fmt.Errorf("network namespace %q is the node's own namespace, %w", displayName(ns), ErrNotPodNamespace)
	case st.Dev == ownNamespace.Dev && st.Ino == ownNamespace.Ino:
		return fmt.Errorf("network namespace %q is this process's own namespace, %w", displayName(ns), ErrNotPodNamespace)
	}
	return nil
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
	if h, ok := r.handles[ns]; ok {
		return h, nil
	}
	fd, err := r.fdLocked(ns)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(fd))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in namespace %q: %w", displayName(ns), err)
	}
	r.handles[ns] = h
	return h, nil
}

// RouteConn returns the namespace's op.RouteConn, opened once and cached.
func (r *Registry) RouteConn(ns string) (*op.RouteConn, error) {
	r.mu.Lock()
	c, ok := r.conns[ns]
	r.mu.Unlock()
	if ok {
		return c, nil
	}
	// Opened outside the lock: Do switches a thread into the namespace.
	err := r.Do(ns, func() error {
		var err error
		c, err = op.OpenRouteConn()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rtnetlink socket in namespace %q: %w", displayName(ns), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, ok := r.conns[ns]; ok {
		c.Close() // another caller won the race
		return prev, nil
	}
	r.conns[ns] = c
	return c, nil
}

// NetnsID returns the id namespace from gives namespace to, or -1. Ids
// are cached: a full plan checks every veth pair both ways, two requests a
// pod, and an id does not change while both namespaces live.
func (r *Registry) NetnsID(from, to string) (int, error) {
	k := [2]string{from, to}
	r.mu.Lock()
	id, ok := r.nsids[k]
	r.mu.Unlock()
	if ok {
		return id, nil
	}
	h, err := r.Handle(from)
	if err != nil {
		return 0, err
	}
	fd, err := r.Fd(to)
	if err != nil {
		return 0, err
	}
	id, err = h.GetNetNsIdByFd(fd)
	if err != nil {
		return 0, fmt.Errorf("netns id of %s in %s: %w", displayName(to), displayName(from), err)
	}
	if id >= 0 {
		// No id yet is not cached: the kernel assigns one when a veth
		// end first names the other namespace.
		r.mu.Lock()
		r.nsids[k] = id
		r.mu.Unlock()
	}
	return id, nil
}

// Exists reports whether the namespace can be opened. A namespace refused
// as a pod's (ErrNotPodNamespace) does not exist for a plan: it is not
// observed, so its pod's items plan as creations that fail alone, naming
// the refusal, and the rest of the node converges.
func (r *Registry) Exists(ns string) bool {
	p := r.path(ns)
	if p == "" {
		return true
	}
	if _, err := os.Stat(p); err != nil {
		return false
	}
	_, err := r.Fd(ns)
	return !errors.Is(err, ErrNotPodNamespace)
}

// Do runs fn on a locked OS thread inside the namespace.
func (r *Registry) Do(ns string, fn func() error) error {
	fd, err := r.Fd(ns)
	if err != nil {
		return err
	}
	return Do(fd, fn)
}

// Forget closes and drops the cached handles of a namespace, for a pod
// namespace that was deleted.
func (r *Registry) Forget(ns string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.handles[ns]; ok {
		h.Close()
		delete(r.handles, ns)
	}
	if c, ok := r.conns[ns]; ok {
		c.Close()
		delete(r.conns, ns)
	}
	for k := range r.nsids {
		if k[0] == ns || k[1] == ns {
			delete(r.nsids, k)
		}
	}
	if f, ok := r.files[ns]; ok {
		f.Close()
		delete(r.files, ns)
	}
}

// Close releases every handle.
func (r *Registry) Close() {
	r.mu.Lock()
	nss := make([]string, 0, len(r.files))
	for ns := range r.files {
		nss = append(nss, ns)
	}
	r.mu.Unlock()
	for _, ns := range nss {
		r.Forget(ns)
	}
}

// Do runs fn on a locked OS thread switched into the namespace fd.
func Do(fd int, fn func() error) error {
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

func displayName(ns string) string {
	if ns == "" {
		return "host"
	}
	return ns
}
