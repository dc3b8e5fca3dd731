// Package inputs delivers the Kubernetes objects the agent renders from —
// its Node, every Pod, the Namespaces and the NetworkPolicies — from one of
// two sources behind one interface: the API server through client-go
// informers (Kubernetes), or a folder of YAML/JSON files for machines
// without a cluster (Files, `terwayd --kube-inputs DIR`).
//
// Both sources say when they have read everything once (Synced): the agent
// must never prune the node before that, because an empty cache would
// otherwise look like "no pods" and wipe a live node.
package inputs

import (
	"cmp"
	"context"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Source delivers the Kubernetes objects render needs for one node.
type Source interface {
	// Start begins watching; it returns at once. Changed is signalled
	// (non-blocking, coalesced: a buffered chan of 1) after every change.
	Start(ctx context.Context) error
	// Synced reports whether the first complete listing has been received.
	// The agent never prunes before this is true (an empty cache must not
	// wipe a live node).
	Synced() bool
	// Snapshot returns the current objects: this node, all pods (on this
	// node and elsewhere: other pods are NetworkPolicy peers), namespaces,
	// network policies. The caller may keep them; see Snapshot.
	Snapshot() Snapshot
	// Changed is signalled after every change the source sees, including
	// the first complete read. Signals coalesce: one pending signal stands
	// for any number of changes, so a receiver takes a fresh Snapshot.
	Changed() <-chan struct{}
}

// PodGetter finds one pod by namespace and name without building a whole
// Snapshot: the CNI path asks for the pod of an ADD and must not pay for a
// copy of every pod in the cluster. Both sources implement it.
type PodGetter interface {
	// Pod returns the pod, or false when the source does not have it.
	// The object is shared and read-only, as in a Snapshot.
	Pod(namespace, name string) (*corev1.Pod, bool)
}

// NodeGetter finds this node without building a whole Snapshot, for the
// same reason. Both sources implement it.
type NodeGetter interface {
	// Node returns this node, or nil when the source does not have it.
	// The object is shared and read-only, as in a Snapshot.
	Node() *corev1.Node
}

// Snapshot is the source's view at one moment. Its slices are the caller's
// own (appending or reordering never affects the source), and each list is
// sorted by namespace/name so that equal views compare equal. The objects
// themselves are shared with the source and never modified by it (an update
// replaces an object, it does not change it): the caller may keep them but
// must not modify them; DeepCopy gives a private copy.
type Snapshot struct {
	// Node is this node, nil when the source has no Node of that name (an
	// error in Errors then says so).
	Node       *corev1.Node
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
	// Errors are the source's current problems (a file that does not parse,
	// the Node not found, a failing watch), each naming what it concerns.
	// They do not make the other objects less valid.
	Errors []error
}

// DeepCopy returns a snapshot whose objects the caller may modify.
func (s Snapshot) DeepCopy() Snapshot {
	out := Snapshot{Errors: slices.Clone(s.Errors)}
	if s.Node != nil {
		out.Node = s.Node.DeepCopy()
	}
	out.Pods = deepCopyAll(s.Pods, (*corev1.Pod).DeepCopy)
	out.Namespaces = deepCopyAll(s.Namespaces, (*corev1.Namespace).DeepCopy)
	out.Policies = deepCopyAll(s.Policies, (*networkingv1.NetworkPolicy).DeepCopy)
	return out
}

func deepCopyAll[T any](in []*T, cp func(*T) *T) []*T {
	if in == nil {
		return nil
	}
	out := make([]*T, len(in))
	for i, o := range in {
		out[i] = cp(o)
	}
	return out
}

// namespacedName is what the snapshot lists are sorted by.
type namespacedName interface {
	GetNamespace() string
	GetName() string
}

func sortByKey[T namespacedName](items []T) {
	slices.SortStableFunc(items, func(a, b T) int { return compareKeys(a, b) })
}

// compareKeys orders objects by namespace, then name.
func compareKeys[A, B namespacedName](a A, b B) int {
	if c := cmp.Compare(a.GetNamespace(), b.GetNamespace()); c != 0 {
		return c
	}
	return cmp.Compare(a.GetName(), b.GetName())
}

// signal wakes a receiver of ch without blocking: ch has room for one
// signal, and a signal already pending covers this change too.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
