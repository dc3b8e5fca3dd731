package netns_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/internal/nstest"
)

// TestRefusesHostAsPodNamespace: a pod namespace that is the node's, or
// this process's own (the machine's, in a test), is refused by every way
// into it: opening only, nothing is written.
func TestRefusesHostAsPodNamespace(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	pod := nstest.Netns(t, "reg-pod")
	reg := netns.NewRegistry(node)
	t.Cleanup(reg.Close)
	if _, err := reg.Fd(pod); err != nil || !reg.Exists(pod) {
		t.Fatalf("a pod's namespace: %v", err)
	}
	for _, tc := range []struct{ path, want string }{
		{node, "is the node's own namespace"},
		{"/proc/self/ns/net", "is this process's own namespace"},
		{"/proc/thread-self/ns/net", "is this process's own namespace"},
	} {
		_, errFd := reg.Fd(tc.path)
		_, errHandle := reg.Handle(tc.path)
		errDo := reg.Do(tc.path, func() error {
			t.Errorf("ran inside %s", tc.path)
			return nil
		})
		_, errConn := reg.RouteConn(tc.path)
		if reg.Exists(tc.path) {
			t.Errorf("%s exists for a plan; a refused namespace must not be observed", tc.path)
		}
		for i, err := range []error{errFd, errHandle, errDo, errConn} {
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Errorf("%s, way %d: %v, want an error naming it and saying it %s", tc.path, i, err, tc.want)
			}
		}
	}
}

// openFds counts this process's open file descriptors.
func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRefusedPathHoldsNothing: a path that is no network namespace (a
// runtime's CNI_NETNS=/etc/passwd) is refused, does not exist for a plan,
// and leaves no descriptor open.
func TestRefusedPathHoldsNothing(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	reg := netns.NewRegistry(node)
	t.Cleanup(reg.Close)
	if _, err := reg.Fd(""); err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	for range 3 {
		_, err := reg.Handle("/etc/passwd")
		if err == nil || !strings.Contains(err.Error(), "/etc/passwd") || !strings.Contains(err.Error(), "is not a network namespace") {
			t.Fatalf("Handle(/etc/passwd): %v, want a refusal naming it", err)
		}
		if reg.Exists("/etc/passwd") {
			t.Error("/etc/passwd exists for a plan")
		}
	}
	if got := openFds(t); got != before {
		t.Errorf("open descriptors %d → %d after refusing /etc/passwd", before, got)
	}
	if h := reg.Held(); len(h) != 0 {
		t.Errorf("registry holds %v", h)
	}
}

// TestForgetReleasesNamespace: everything opened for a pod namespace (the
// descriptor, netlink and rtnetlink sockets, namespace ids) is closed by
// Forget, so that the deleted namespace and the id the node gives it go;
// under Hold, only when the holder releases.
func TestForgetReleasesNamespace(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	reg := netns.NewRegistry(node)
	t.Cleanup(reg.Close)
	if _, err := reg.Handle(""); err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	use := func(pod string) {
		t.Helper()
		if _, err := reg.Handle(pod); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.RouteConn(pod); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.NetnsID("", pod); err != nil {
			t.Fatal(err)
		}
		if _, err := reg.Handle(pod); err != nil { // cached: no new socket
			t.Fatal(err)
		}
	}
	pod := nstest.Netns(t, "reg-pod")
	use(pod)
	if got := openFds(t); got <= before {
		t.Fatalf("nothing opened for the pod namespace (%d → %d)", before, got)
	}
	reg.Forget(pod)
	if got := openFds(t); got != before {
		t.Errorf("open descriptors %d → %d after Forget", before, got)
	}

	use(pod)
	release := reg.Hold()
	reg.Forget(pod)
	if got := openFds(t); got == before {
		t.Error("Forget under Hold closed handles a holder may be using")
	}
	release()
	if got := openFds(t); got != before {
		t.Errorf("open descriptors %d → %d after the holder released", before, got)
	}

	use(pod)
	reg.Retain([]string{"/var/run/netns/other"})
	if got := openFds(t); got != before || len(reg.Held()) != 0 {
		t.Errorf("open descriptors %d → %d, held %v after Retain without the pod", before, got, reg.Held())
	}
}

// TestRecreatedNamespaceIsReopened: a path whose namespace was deleted and
// created again names the new namespace at the next use: the handle acts
// in it, never in the dead one, and the old handles are closed.
func TestRecreatedNamespaceIsReopened(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	pod := nstest.Netns(t, "reg-again")
	reg := netns.NewRegistry(node)
	t.Cleanup(reg.Close)
	if _, err := reg.Handle(""); err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	h, err := reg.Handle(pod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RouteConn(pod); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("lo"); err != nil {
		t.Fatal(err)
	}
	name := nstest.Name(pod)
	for _, args := range [][]string{{"netns", "del", name}, {"netns", "add", name}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	nstest.Run(t, pod, "ip", "link", "add", "marker0", "type", "veth", "peer", "name", "marker1")
	h, err = reg.Handle(pod)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("marker0"); err != nil {
		t.Errorf("the handle does not act in the re-created namespace: %v", err)
	}
	var ran bool
	err = reg.Do(pod, func() error {
		_, err := os.Stat("/proc/sys/net/ipv4/conf/marker0")
		ran = err == nil
		return nil
	})
	if err != nil || !ran {
		t.Errorf("Do did not run in the re-created namespace: %v", err)
	}
	if _, err := reg.RouteConn(pod); err != nil {
		t.Fatal(err)
	}
	reg.Forget(pod)
	if got := openFds(t); got != before {
		t.Errorf("open descriptors %d → %d: the dead namespace's handles stayed open", before, got)
	}
}

// TestTwoPathsShareANamespace: handles are the namespace's, not the
// path's: two paths of one namespace share them, and they close when the
// last path is forgotten.
func TestTwoPathsShareANamespace(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	pod := nstest.Netns(t, "reg-pod")
	link := filepath.Join(t.TempDir(), "pod-netns")
	if err := os.Symlink(pod, link); err != nil {
		t.Fatal(err)
	}
	reg := netns.NewRegistry(node)
	t.Cleanup(reg.Close)
	if _, err := reg.Handle(""); err != nil {
		t.Fatal(err)
	}
	before := openFds(t)
	h1, err := reg.Handle(pod)
	if err != nil {
		t.Fatal(err)
	}
	opened := openFds(t)
	h2, err := reg.Handle(link)
	if err != nil {
		t.Fatal(err)
	}
	if h1 != h2 || openFds(t) != opened {
		t.Errorf("a second path of the namespace opened it again (%d → %d descriptors)", opened, openFds(t))
	}
	reg.Forget(pod)
	if got := openFds(t); got != opened {
		t.Errorf("Forget of one path closed the namespace another path still names (%d → %d)", opened, got)
	}
	reg.Forget(link)
	if got := openFds(t); got != before {
		t.Errorf("open descriptors %d → %d after both paths were forgotten", before, got)
	}
}

// TestCloseUnderAHolder: Close while a plan holds handles closes them only
// when the plan releases (a closed netlink handle falls back to the
// calling thread's namespace, the node's), and hands out nothing after.
func TestCloseUnderAHolder(t *testing.T) {
	node := nstest.Netns(t, "reg-node")
	pod := nstest.Netns(t, "reg-pod")
	reg := netns.NewRegistry(node)
	release := reg.Hold()
	fd, err := reg.Fd(pod)
	if err != nil {
		t.Fatal(err)
	}
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	var during unix.Stat_t
	if err := unix.Fstat(fd, &during); err != nil || during.Ino != before.Ino {
		t.Fatalf("the held descriptor was closed under its holder: %v", err)
	}
	if _, err := reg.Fd(pod); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("Fd after Close: %v, want ErrClosed", err)
	}
	if _, err := reg.Handle(pod); !errors.Is(err, netns.ErrClosed) {
		t.Errorf("Handle after Close: %v, want ErrClosed", err)
	}
	release()
	if err := unix.Fstat(fd, &during); err == nil && during.Ino == before.Ino {
		t.Errorf("descriptor %d still open after the last holder released", fd)
	}
}

// TestDoSwitchesOnlyWhenItMust: Do runs fn on the calling thread when fd
// is the process's own namespace and no Do has a thread switched away,
// and on a thread switched into the namespace otherwise (nested in
// another Do, back to the process's own too); fn always runs in the
// namespace.
func TestDoSwitchesOnlyWhenItMust(t *testing.T) {
	nstest.RequireRoot(t)
	open := func(path string) int {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(fd) })
		return fd
	}
	ino := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	// where runs Do and tells on which thread fn ran, in which namespace.
	where := func(fd int) (tid int, ns uint64) {
		if err := netns.Do(fd, func() error {
			tid, ns = unix.Gettid(), ino("/proc/thread-self/ns/net")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return tid, ns
	}
	other := nstest.Netns(t, "do")
	otherFd, otherIno := open(other), ino(other)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ownFd, ownIno := open("/proc/thread-self/ns/net"), ino("/proc/thread-self/ns/net")
	if tid, ns := where(ownFd); tid != unix.Gettid() || ns != ownIno {
		t.Errorf("Do in the caller's namespace ran on thread %d in %d, want the caller's %d in %d", tid, ns, unix.Gettid(), ownIno)
	}
	if tid, ns := where(otherFd); tid == unix.Gettid() || ns != otherIno {
		t.Errorf("Do in another namespace ran on thread %d in %d, want another thread in %d", tid, ns, otherIno)
	}
	err := netns.Do(otherFd, func() error {
		if _, ns := where(otherFd); ns != otherIno {
			t.Errorf("nested Do in the same namespace ran in %d, want %d", ns, otherIno)
		}
		if tid, ns := where(ownFd); tid == unix.Gettid() || ns != ownIno {
			t.Errorf("nested Do back in the caller's namespace ran on thread %d in %d, want another thread in %d", tid, ns, ownIno)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
