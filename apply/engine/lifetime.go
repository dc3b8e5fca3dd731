package engine

import (
	"context"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// lifetimes is what a namespace registry offers to bound the lives of the
// handles it caches (netns.Registry does): a plan holds them while it
// observes and executes, and a full plan drops those of namespaces no pod
// has any more.
type lifetimes interface {
	Hold() (release func())
	Retain(keep []string)
}

// hold keeps the registry's handles open until the returned func runs.
func (e *Engine) hold() func() {
	if l, ok := e.ns.(lifetimes); ok {
		return l.Hold()
	}
	return func() {}
}

// withoutPods returns a copy of the document without any item of the taken
// pods: nothing of theirs is observed as wanted, so nothing is written for
// them. The caller's document is not changed.
func withoutPods(d *spec.NodeState, taken []links.Taken) *spec.NodeState {
	drop := map[string]bool{}
	for _, t := range taken {
		drop[t.Pod] = true
	}
	r := *d
	return withItemsOf(&r, d, func(pod string) bool { return !drop[pod] })
}

// refusedOps is one failing operation per taken pod, in place of the
// pod's link: the plan says what it will not do and why, and executing it
// fails the pod alone.
func refusedOps(taken []links.Taken) []op.Op {
	out := make([]op.Op, 0, len(taken))
	for _, t := range taken {
		err := fmt.Errorf("link %s: %s", t.Link.Key(), t.Reason)
		out = append(out, op.Op{
			Kind: links.Kind, Action: op.Create, Key: t.Link.Key(), Netns: t.Link.Peer.Netns, Pod: t.Pod,
			Text: "link veth " + t.Link.Name + " peer " + t.Link.Peer.Name + links.NetnsSuffix(t.Link.Peer.Netns) + ": refused, the name is another sandbox's",
			Exec: func(context.Context, op.Namespaces) error { return err },
		})
	}
	return out
}

// keepAliasedItems drops the deletions planned in a pod namespace that the
// document also names by another path (/proc/PID/ns/net beside
// /var/run/netns/NAME: a second sandbox recorded into a pod's namespace).
// Each path observes the other pod's items as its own stale ones, and
// there is no telling whose they are; the second pod's creations are
// refused as another sandbox's (FindTaken), and nothing is removed from
// that namespace until one of the paths leaves the document.
func keepAliasedItems(ns op.Namespaces, nss []string, ops []op.Op) []op.Op {
	type identity struct{ dev, ino uint64 }
	byID := map[identity][]string{}
	for _, n := range nss {
		if n == spec.HostNetns || !ns.Exists(n) {
			continue
		}
		fd, err := ns.Fd(n)
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil {
			continue
		}
		id := identity{uint64(st.Dev), st.Ino}
		byID[id] = append(byID[id], n)
	}
	aliased := map[string]bool{}
	for _, paths := range byID {
		if len(paths) > 1 {
			for _, p := range paths {
				aliased[p] = true
			}
		}
	}
	if len(aliased) == 0 {
		return ops
	}
	return slices.DeleteFunc(ops, func(o op.Op) bool { return o.Action == op.Delete && aliased[o.Netns] })
}
