package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/terway-reconciler/terway/apply/addrs"
	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/neigh"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/apply/routes"
	"github.com/terway-reconciler/terway/apply/rules"
	"github.com/terway-reconciler/terway/apply/sysctl"
	"github.com/terway-reconciler/terway/apply/tc"
	"github.com/terway-reconciler/terway/spec"
)

// PlanOffline plans, without a kernel, what applying desired would change
// on a node that has realised current exactly: current plays the observed
// state of every kind, and each kind's own Diff plans (nftables through the
// same differ as a sync, nft.PlanBetween). So the plan reads as Plan's
// would on a converged node, and a change of inputs can be judged before
// it is made (terwayctl what-if). It reads nothing and writes nothing; its
// operations cannot be executed.
//
// What only a kernel knows is out of it: drift from current, a link
// holding a pod's interface name, an ENI not attached yet.
func PlanOffline(current, desired *spec.NodeState) (*Plan, error) {
	if current == nil || desired == nil {
		return nil, errors.New("offline plan: both documents are needed")
	}
	if err := validate(desired); err != nil {
		return nil, err
	}
	// A full plan observes the node and the namespaces desired names: the
	// items of a namespace that goes (a deleted pod's) are not observed,
	// they go with it. So current's items there are not either.
	stays := map[string]bool{spec.HostNetns: true}
	for _, n := range desired.Namespaces() {
		stays[n] = true
	}
	current = withItemsIn(current, stays)
	var ops []op.Op
	ops = append(ops, links.Diff(desired.Links, observedLinks(current.Links, stays))...)
	ops = append(ops, sysctl.Diff(desired.Sysctls, current.Sysctls)...)
	ops = append(ops, addrs.Diff(desired.Addresses, current.Addresses)...)
	ops = append(ops, neigh.Diff(desired.Neighbors, current.Neighbors)...)
	ops = append(ops, routes.Diff(desired.Routes, current.Routes)...)
	ops = append(ops, rules.Diff(desired.Rules, current.Rules)...)
	ops = append(ops, tc.Diff(desired.TC, current.TC)...)
	host, err := nft.PlanBetween(spec.HostNetns, current.NFTables, desired.NFTables)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	ops = append(ops, host...)
	ops = append(ops, offlinePodTables(current, desired)...)
	for i := range ops {
		ops[i].Exec = notExecutable
	}
	return &Plan{Ops: order(ops)}, nil
}

// offlinePodTables plans the tables inside pods' namespaces (exclusive-ENI
// pods) as planPodTables does: each wanted table against the current one
// of the same namespace, and the table of a namespace that stays but wants
// none removed (current holds only namespaces that stay).
func offlinePodTables(current, desired *spec.NodeState) []op.Op {
	have := map[string]*spec.PodNFTable{}
	for i := range current.PodNFTables {
		have[current.PodNFTables[i].Netns] = &current.PodNFTables[i]
	}
	var out []op.Op
	wanted := map[string]bool{}
	for i := range desired.PodNFTables {
		pt := &desired.PodNFTables[i]
		wanted[pt.Netns] = true
		var cur *spec.NFTable
		if h := have[pt.Netns]; h != nil {
			cur = &h.Table
		}
		ops, err := nft.PlanBetween(pt.Netns, cur, &pt.Table)
		out = append(out, podTableOps(pt.Pod, pt.Netns, ops, err)...)
	}
	for i := range current.PodNFTables {
		pt := &current.PodNFTables[i]
		if wanted[pt.Netns] {
			continue
		}
		ops, err := nft.PlanBetween(pt.Netns, &pt.Table, nil)
		out = append(out, podTableOps(pt.Pod, pt.Netns, ops, err)...)
	}
	return out
}

// observedLinks is what observing a node that realised links would give:
// every link up, with the MACs in the form observation reports them, and
// no peer for a veth whose peer is in a namespace that goes (the plan does
// not look there).
func observedLinks(ls []spec.Link, stays map[string]bool) []links.Observed {
	out := make([]links.Observed, len(ls))
	for i, l := range ls {
		l.MAC = links.NormalMAC(l.MAC)
		if l.Peer != nil && !stays[l.Peer.Netns] {
			l.Peer = nil
		}
		if l.Peer != nil {
			p := *l.Peer
			p.MAC = links.NormalMAC(p.MAC)
			l.Peer = &p
		}
		out[i] = links.Observed{Link: l, Up: true, PeerUp: true, PeerMTU: l.MTU}
	}
	return out
}

func notExecutable(context.Context, op.Namespaces) error { return nft.ErrOffline }

// withItemsIn returns d with only the kernel items in the namespaces of in.
func withItemsIn(d *spec.NodeState, in map[string]bool) *spec.NodeState {
	r := *d
	r.Links = filterItems(d.Links, func(x spec.Link) bool { return in[x.Netns] })
	r.Addresses = filterItems(d.Addresses, func(x spec.Address) bool { return in[x.Netns] })
	r.Routes = filterItems(d.Routes, func(x spec.Route) bool { return in[x.Netns] })
	r.Rules = filterItems(d.Rules, func(x spec.Rule) bool { return in[x.Netns] })
	r.Neighbors = filterItems(d.Neighbors, func(x spec.Neighbor) bool { return in[x.Netns] })
	r.Sysctls = filterItems(d.Sysctls, func(x spec.Sysctl) bool { return in[x.Netns] })
	r.TC = filterItems(d.TC, func(x spec.Qdisc) bool { return in[x.Netns] })
	r.PodNFTables = filterItems(d.PodNFTables, func(x spec.PodNFTable) bool { return in[x.Netns] })
	return &r
}
