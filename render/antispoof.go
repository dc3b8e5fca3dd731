package render

import (
	"github.com/terway-reconciler/terway/spec"
)

// Names of the source validation part of the table. The counters' comments
// are how the agent tells the two drop rules apart (agent/metrics.go).
const (
	chainAntispoof = "antispoof"
	setPodSources  = "pod-sources"
	// PriorityAntispoof is nft's "raw" priority: before conntrack (-200)
	// and before any DNAT (kube-proxy's nat chains run at -100).
	PriorityAntispoof = -300
	// CommentSpoofed marks the rule that drops IPv4 packets from a pod
	// veth whose source is not that pod's address.
	CommentSpoofed = "spoofed IPv4 source"
	// CommentNotIPv4 marks the rule that drops everything else a pod veth
	// sends: IPv6 (link-local included) and any other non-IPv4 protocol.
	CommentNotIPv4 = "not IPv4: pods are IPv4-only"
)

// ChainAntispoof is the chain whose counters hold the drops, for readers
// of the kernel's counters.
const ChainAntispoof = chainAntispoof

// renderSourceValidation adds the anti-spoofing chain and the set of
// (host veth, pod address) pairs to the table.
//
// Every packet a pod sends enters the node through the host end of its veth
// ("tw" and a hash). At prerouting, priority raw, before conntrack and
// before any policy chain:
//
//  1. iifname . ip saddr in @pod-sources: the pod's own address on its own
//     veth; accept ends this chain only, policy still judges the packet.
//  2. any other IPv4 packet from a "tw*" link: dropped and counted.
//  3. anything else from a "tw*" link (IPv6, whatever is not IPv4): dropped
//     and counted apart. Pods are IPv4-only in this document, so IPv6 from
//     a pod, link-local router solicitations and MLD reports included,
//     has no business on the node; dropping it also keeps a pod from
//     reaching the node's IPv6 addresses around every IPv4 check.
//
// Why established flows cannot be ridden: the check reads no conntrack
// state and runs before conntrack, so a forged packet that matches a flow
// another pod established is dropped like any other; it never even creates
// a conntrack entry. Replies to the node and to other pods come back from
// the pod's own address and pass rule 1. Traffic of the node itself (output
// hook) and from other links (the uplink, ENIs, lo) never matches "tw*"
// and costs one failed lookup and one prefix comparison.
//
// ARP is not IP: inet hooks never see it (the pod resolves its gateway
// from a permanent neighbour entry anyway). DHCP is not used by our pods
// (static /32); a DHCP request's source 0.0.0.0 is not the pod's and is
// dropped by rule 2.
//
// Exclusive-ENI pods: their ENI traffic never crosses the node; the host
// end of their Service veth (veth1) is validated like any pod veth, with
// the ENI's primary IP, which is the source the pod uses on it (its only
// address). Per-packet cost is one hash lookup whatever the number of pods;
// a pod's ADD or DEL adds or removes its one element (the key holds its
// address, so scoped plans carry it: apply/nft/scoped.go).
func (r *renderer) renderSourceValidation(t *spec.NFTable) {
	var pairs []SourcePair
	for _, p := range r.pods {
		if p.entry == nil || p.entry.HostVeth == "" || !p.local {
			continue
		}
		pairs = append(pairs, SourcePair{HostVeth: p.entry.HostVeth, IP: p.entry.IP})
	}
	set, chain := sourceValidation(pairs)
	set.Elements = r.sortDispatch(setPodSources, set.Elements)
	t.Sets = append(t.Sets, &set)
	t.Chains = append(t.Chains, chain)
}

// SourcePair is a pod's host veth and the address the pod may send from.
type SourcePair struct{ HostVeth, IP string }

// SourceValidation is the anti-spoofing set and chain for these pairs (see
// renderSourceValidation). terwayctl bench measures it against its absence.
func SourceValidation(pairs []SourcePair) (spec.NFTSet, spec.NFTChain) {
	set, chain := sourceValidation(pairs)
	spec.SortElements(set.Elements)
	return set, chain
}

// sourceValidation is SourceValidation with the set's elements in the
// order of pairs.
func sourceValidation(pairs []SourcePair) (spec.NFTSet, spec.NFTChain) {
	set := spec.NFTSet{
		Name: setPodSources, Type: []string{spec.TypeIfName, spec.TypeIPv4Addr},
		Comment: "host veth of each pod and the one source address it may send from",
	}
	for _, p := range pairs {
		set.Elements = append(set.Elements, vethElement(p.HostVeth, p.IP))
	}
	podLinks := spec.NFTMatch{Selectors: []string{spec.SelIIFName}, Values: []string{spec.HostVethPrefix + "*"}}
	source := []string{spec.SelIIFName, spec.SelIPSaddr}
	chain := spec.NFTChain{
		Name: chainAntispoof, Hook: spec.HookPrerouting, Priority: PriorityAntispoof, Policy: spec.VerdictAccept,
		Comment: "source validation: a pod veth carries only its pod's address, checked before conntrack and policy",
		Rules: []spec.NFTRule{
			{Match: []spec.NFTMatch{{Selectors: source, Set: setPodSources}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept}},
			{Match: []spec.NFTMatch{podLinks, {Selectors: source, Negate: true, Set: setPodSources}}, Counter: true,
				Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}, Comment: CommentSpoofed},
			{Match: []spec.NFTMatch{podLinks}, Counter: true,
				Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}, Comment: CommentNotIPv4},
		},
	}
	return set, chain
}
