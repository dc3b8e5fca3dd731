package netns_test

import (
	"strings"
	"testing"

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
