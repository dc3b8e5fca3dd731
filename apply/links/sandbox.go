package links

import (
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Taken is a pod whose pod-side interface name is held, in the pod's
// namespace, by a link that is not that pod's: most likely another
// sandbox's eth0 (a second ADD, with another container id, into a
// namespace that already holds a pod).
type Taken struct {
	// Pod is the pod whose link is in the way (namespace/name).
	Pod string
	// Link is the document's veth item of the pod.
	Link spec.Link
	// Reason says what holds the name.
	Reason string
}

// FindTaken returns, in document order, the pods whose pod-side veth end
// the document wants in a namespace where a link of that name exists and
// is not the peer of the pod's host end. Such a link was not created for
// this pod: nothing of the pod may be written on it (an address, the
// gateway neighbour, a route, a qdisc), whatever its name says. Ownership
// of a pod-side end is the pairing with the pod's host veth, whose name
// derives from the pod's key; a name in a pod namespace is not enough. It
// only reads (through the plan's snapshot when ns is one).
func FindTaken(ns op.Namespaces, namespaces []string, desired *spec.NodeState) ([]Taken, error) {
	var out []Taken
	for _, d := range desired.Links {
		if d.Kind != spec.LinkVeth || d.Peer == nil || d.Pod == "" || d.Netns != spec.HostNetns ||
			d.Peer.Netns == spec.HostNetns || !slices.Contains(namespaces, d.Peer.Netns) || !ns.Exists(d.Peer.Netns) {
			continue
		}
		b, err := linkNamed(ns, d.Peer.Netns, d.Peer.Name)
		if err != nil || b == nil {
			if err != nil {
				return nil, fmt.Errorf("link %s: %w", d.Key(), err)
			}
			continue // free: the pair is created there
		}
		a, err := linkNamed(ns, d.Netns, d.Name)
		if err != nil {
			return nil, fmt.Errorf("link %s: %w", d.Key(), err)
		}
		if a != nil {
			isPair, err := paired(ns, d.Netns, a, d.Peer.Netns, b)
			if err != nil {
				return nil, fmt.Errorf("link %s: check veth peer %s in %s: %w", d.Key(), d.Peer.Name, NetnsName(d.Peer.Netns), err)
			}
			if isPair {
				continue
			}
		}
		out = append(out, Taken{Pod: d.Pod, Link: d, Reason: fmt.Sprintf(
			"%s %s in %s is not the peer of the pod's host veth %s: it belongs to another sandbox, so nothing of pod %s is written there",
			b.Type(), d.Peer.Name, NetnsName(d.Peer.Netns), d.Name, d.Pod)})
	}
	return out, nil
}

// linkNamed returns the link called name in netns as the (snapshot's) list
// has it, or nil.
func linkNamed(ns op.Namespaces, netns, name string) (netlink.Link, error) {
	all, err := op.LinkList(ns, netns)
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", NetnsName(netns), err)
	}
	for _, l := range all {
		if l.Attrs().Name == name {
			return l, nil
		}
	}
	return nil, nil
}
