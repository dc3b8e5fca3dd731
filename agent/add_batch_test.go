package agent

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/cni/wire"
)

// TestAddBatchPanicFreesTheLock: a panic in an ADD batch reaches the
// leader's caller (the CNI server recovers it) and leaves the agent's lock
// free. Before, the batch took the lock without a defer: every later ADD,
// DEL and resync would have waited on it for ever.
func TestAddBatchPanicFreesTheLock(t *testing.T) {
	a, src, _, podNetns := syncedPodAgent(t)
	src.mu.Lock()
	src.pods["x/a"] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "a", UID: "uid-a"}, Spec: corev1.PodSpec{NodeName: "node-1"}}
	src.mu.Unlock()
	a.setUpWritten = func() { panic("boom") }
	var got any
	func() {
		defer func() { got = recover() }()
		_, _ = a.Add(context.Background(), &wire.Request{Command: wire.CmdAdd, ContainerID: "ctr-a", Netns: podNetns, IfName: "eth0",
			Args: wire.PodArgs{Namespace: "x", Name: "a", UID: "uid-a"}})
	}()
	a.setUpWritten = nil
	if got != "boom" {
		t.Fatalf("the ADD's panic reached its caller as %v, want boom", got)
	}
	free := make(chan struct{})
	go func() {
		a.mu.Lock()
		a.mu.Unlock()
		close(free)
	}()
	select {
	case <-free:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent's lock stayed held after the ADD batch's panic")
	}
}
