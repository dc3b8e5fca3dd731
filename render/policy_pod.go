package render

import (
	"github.com/terway-reconciler/terway/spec"
)

// Names of the base chains of a pod's own table and of the interfaces its
// rules name.
const (
	chainPodInput  = "input"
	chainPodOutput = "output"
	// serviceIf is the exclusive-ENI pod's veth to the node (datapath.go).
	serviceIf  = "veth1"
	loopbackIf = "lo"
)

// renderPodTables renders table inet terway inside the namespace of every
// exclusive-ENI pod, after the node's table t.
//
// Such a pod's eth0 is an ENI in the VPC: traffic between it and the VPC
// (other nodes' pods, other exclusive-ENI pods, this node's pods by way of
// the vswitch) never crosses the node's forward chain, so the node's table
// cannot judge it. The pod's table does, with the same policy groups: its
// input chain jumps to the pod's ingress group chain, its output chain to
// its egress group chain, and both chains and their sets are copies of the
// node's (same names, same elements), so that a pod is judged by one
// allowance wherever its traffic is seen.
//
// What the pod's table accepts before asking the policy, and why:
//   - replies of established flows (ct state), as the node's table does;
//   - loopback: a pod reaching itself never leaves its namespace, as on a
//     veth pod, where it never reaches the node;
//   - veth1, both ways: everything on it crosses the node's stack, where
//     the node's table judges it by the pod's host veth (the pod is in the
//     node's verdict maps like any other), and where traffic the node sends
//     itself (kubelet probes) is never isolated.
//
// A pod selected by no policy of a direction gets no jump that way and
// is not isolated; a pod with no policy at all still gets its table, so a
// policy arriving later changes only the chains' rules and the sets'
// elements, never whether the table exists.
func (r *renderer) renderPodTables(t *spec.NFTable) {
	for _, p := range r.pods {
		e := p.entry
		if e == nil || e.Mode != spec.PodModeExclusiveENI {
			continue
		}
		pt := spec.PodNFTable{Pod: e.Key, Netns: e.Netns, Table: spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable}}
		established := spec.NFTRule{
			Match:   []spec.NFTMatch{{Selectors: []string{spec.SelCtState}, Values: []string{"established", "related"}}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
		}
		accept := func(sel, ifName, why string) spec.NFTRule {
			return spec.NFTRule{Match: []spec.NFTMatch{{Selectors: []string{sel}, Values: []string{ifName}}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}, Comment: why}
		}
		in := spec.NFTChain{Name: chainPodInput, Hook: spec.HookInput, Policy: spec.VerdictAccept,
			Comment: "NetworkPolicy ingress of pod " + e.Key + " for traffic arriving on its own ENI",
			Rules: []spec.NFTRule{established,
				accept(spec.SelIIFName, loopbackIf, "the pod itself"),
				accept(spec.SelIIFName, serviceIf, "crossed the node, whose table judged it")}}
		out := spec.NFTChain{Name: chainPodOutput, Hook: spec.HookOutput, Policy: spec.VerdictAccept,
			Comment: "NetworkPolicy egress of pod " + e.Key + " for traffic leaving by its own ENI",
			Rules: []spec.NFTRule{established,
				accept(spec.SelOIFName, loopbackIf, "the pod itself"),
				accept(spec.SelOIFName, serviceIf, "crosses the node, whose table judges it")}}
		for _, g := range []struct {
			chain string
			base  *spec.NFTChain
		}{{e.IngressChain, &in}, {e.EgressChain, &out}} {
			if g.chain == "" {
				continue
			}
			copyGroupChain(&pt.Table, t, g.chain)
			g.base.Rules = append(g.base.Rules, spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictJump, Chain: g.chain}})
		}
		pt.Table.Chains = append(pt.Table.Chains, in, out)
		r.state.PodNFTables = append(r.state.PodNFTables, pt)
	}
}

// copyGroupChain copies a group chain of the node's table, and the sets
// its rules match, into a pod's table.
func copyGroupChain(dst, node *spec.NFTable, name string) {
	c := node.Chain(name)
	if c == nil {
		return // groupChain made every chain a pod entry names
	}
	cc := *c
	cc.Rules = append([]spec.NFTRule(nil), c.Rules...)
	for _, rule := range c.Rules {
		for _, m := range rule.Match {
			if m.Set == "" || dst.Set(m.Set) != nil {
				continue
			}
			if s := node.Set(m.Set); s != nil {
				sc := *s
				sc.Elements = append([]spec.NFTElement(nil), s.Elements...)
				dst.Sets = append(dst.Sets, &sc)
			}
		}
	}
	dst.Chains = append(dst.Chains, cc)
}
