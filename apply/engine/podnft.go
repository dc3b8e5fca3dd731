package engine

import (
	"context"
	"fmt"
	"slices"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// planPodTables plans the tables inet terway inside pods' namespaces
// (spec.PodNFTable: the policy of exclusive-ENI pods), each in its own
// namespace with the same nftables reconciler as the node's table, so each
// has its own record, partial and full syncs and staleness checks.
//
// Each pod's table is its own item: a pod whose table cannot be observed
// gets one failing operation (its Pod set, so it fails that pod alone), and
// the other tables plan on. A pod whose namespace is gone plans nothing (its
// table went with it) and its record is dropped. The namespaces of deleted
// pods (PlanOptions.Namespaces) that the document gives no table lose ours:
// a DEL leaves nothing of ours in a namespace that outlives it.
//
// A plan of the whole node (whole) also drops the records of namespaces
// it wants no table in: pods gone without a DEL.
func (e *Engine) planPodTables(desired *spec.NodeState, opts PlanOptions, whole bool) []op.Op {
	var out []op.Op
	wanted := map[string]bool{}
	for i := range desired.PodNFTables {
		pt := &desired.PodNFTables[i]
		wanted[pt.Netns] = true
		if !e.ns.Exists(pt.Netns) {
			e.nft.Forget(pt.Netns)
			continue
		}
		plan := e.nft.Plan
		if opts.Full {
			plan = e.nft.PlanFull
		}
		ops, err := plan(e.ns, pt.Netns, &pt.Table)
		out = append(out, podTableOps(pt.Pod, pt.Netns, ops, err)...)
	}
	for _, n := range opts.Namespaces {
		if n == spec.HostNetns || wanted[n] || !e.ns.Exists(n) {
			continue
		}
		ops, err := e.nft.PlanFull(e.ns, n, nil)
		if err == nil && len(ops) == 0 {
			// No table there (a veth pod's namespace): keep no record
			// of it. A commit that removes one drops its record itself.
			e.nft.Forget(n)
		}
		out = append(out, podTableOps("", n, ops, err)...)
	}
	if whole {
		keep := slices.Clone(opts.Namespaces)
		for n := range wanted {
			keep = append(keep, n)
		}
		e.nft.Retain(keep)
	}
	return out
}

// podTableOps marks a pod table's operations as the pod's and says in
// each line which namespace it is in; a planning error becomes one failing
// operation.
func podTableOps(pod, netns string, ops []op.Op, err error) []op.Op {
	where := " (pod " + pod + links.NetnsSuffix(netns) + ")"
	if pod == "" {
		where = " (deleted pod's" + links.NetnsSuffix(netns) + ")"
	}
	if err != nil {
		err = fmt.Errorf("pod %s: %w", pod, err)
		return []op.Op{{
			Kind: nft.Kind, Action: op.Update, Key: nft.CommitKey, Netns: netns, Pod: pod,
			Text: "nft table inet terway" + where + ": cannot be planned",
			Exec: func(context.Context, op.Namespaces) error { return err },
		}}
	}
	for i := range ops {
		ops[i].Pod = pod
		ops[i].Text += where
	}
	return ops
}
