package render

import (
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/terway-reconciler/terway/spec"
)

// Names of the static part of the table.
const (
	chainForward   = "forward"
	chainInput     = "input"
	mapIngressPods = "ingress-pods"
	mapEgressPods  = "egress-pods"
)

// podDirection accumulates what one direction of one pod allows.
type podDirection struct {
	policies []string
	anyPort  []span
	ports    []portAllow
}

// renderPolicies compiles every policy and renders table inet terway.
//
// The table is a static skeleton with dynamic data: two base chains accept
// established traffic, then dispatch through verdict maps keyed by pod IP to
// the pod's own chain for each direction it is isolated in. A pod's chain has
// three fixed rules: (address, protocol, port) in the pod's ports set, address
// in the pod's any-port set, else drop. All policies selecting the pod are
// merged into those two sets, so the per-packet cost is two set lookups,
// whatever the number of policies. Pods selected by no policy of a direction
// have no map entry for it and are not isolated in that direction.
func (r *renderer) renderPolicies(policies []*networkingv1.NetworkPolicy) {
	c := newPolicyCompiler(r)
	dirs := map[string]map[*podInfo]*podDirection{dirIngress: {}, dirEgress: {}}
	for _, np := range policies {
		cp := c.compile(np)
		if cp == nil {
			continue
		}
		for _, t := range cp.targets {
			if t.entry.Mode == spec.PodModeExclusiveENI {
				r.podProblem(t, "", "NetworkPolicy %s selects this exclusive-ENI pod, but policy is not enforced for exclusive-ENI pods yet (their traffic does not cross the host)", cp.key)
				continue
			}
			if cp.isolatesIngress {
				c.allow(dirs[dirIngress], t, cp.key, dirIngress, cp.ingress)
			}
			if cp.isolatesEgress {
				c.allow(dirs[dirEgress], t, cp.key, dirEgress, cp.egress)
			}
		}
	}
	r.state.NFTables = r.policyTable(dirs)
}

// allow adds one policy's rules for one direction of target t.
func (c *policyCompiler) allow(byPod map[*podInfo]*podDirection, t *podInfo, policy, dir string, rules []*compiledRule) {
	d := byPod[t]
	if d == nil {
		d = &podDirection{}
		byPod[t] = d
	}
	d.policies = append(d.policies, policy)
	for _, rule := range rules {
		addrs := c.ruleAddresses(rule)
		if rule.anyPort {
			d.anyPort = append(d.anyPort, addrs...)
			continue
		}
		for _, port := range rule.ports {
			switch {
			case port.name == "":
				d.ports = append(d.ports, portAllow{port.proto, port.rng, addrs})
			case dir == dirIngress:
				// A named port of an ingress rule is the target's own port.
				if n, ok := namedPort(t.pod, port.name, port.proto); ok {
					d.ports = append(d.ports, portAllow{port.proto, portRange{n, n}, addrs})
				}
			default:
				// A named port of an egress rule is each peer pod's port;
				// a name no peer has allows nothing.
				for _, peer := range c.egressNamedPortPeers(rule) {
					if n, ok := namedPort(peer.pod, port.name, port.proto); ok {
						d.ports = append(d.ports, portAllow{port.proto, portRange{n, n}, []span{addrSpan(c.peerIP(peer))}})
					}
				}
			}
		}
	}
}

// ruleAddresses is the merged address set of a rule's peers.
func (c *policyCompiler) ruleAddresses(rule *compiledRule) []span {
	if rule.anyPeer {
		return []span{allAddresses}
	}
	addrs := slices.Clone(rule.blocks)
	for _, p := range rule.pods {
		addrs = append(addrs, addrSpan(c.peerIP(p)))
	}
	return mergeSpans(addrs)
}

// egressNamedPortPeers lists the pods a named egress port is resolved
// against: the selected pods, and the pods whose address an ipBlock (or no
// peer at all, meaning everywhere) covers.
func (c *policyCompiler) egressNamedPortPeers(rule *compiledRule) []*podInfo {
	out := slices.Clone(rule.pods)
	blocks := rule.blocks
	if rule.anyPeer {
		blocks = []span{allAddresses}
	}
	if len(blocks) == 0 {
		return out
	}
	for _, p := range c.r.pods {
		ip := c.peerIP(p)
		if !ip.IsValid() || p.pod == nil {
			continue
		}
		n := addrNum(ip)
		for _, b := range blocks {
			if b.lo <= n && n <= b.hi {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func (r *renderer) policyTable(dirs map[string]map[*podInfo]*podDirection) *spec.NFTable {
	established := spec.NFTRule{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelCtState}, Values: []string{"established", "related"}}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}
	egressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapEgressPods, Selectors: []string{spec.SelIPSaddr}}}
	ingressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapIngressPods, Selectors: []string{spec.SelIPDaddr}}}
	t := &spec.NFTable{
		Family: spec.NFTFamily, Name: spec.NFTTable,
		Chains: []spec.NFTChain{
			{Name: chainForward, Hook: spec.HookForward, Policy: spec.VerdictAccept,
				Comment: "NetworkPolicy for traffic through the node: replies first, then the source pod's egress and the destination pod's ingress",
				Rules:   []spec.NFTRule{established, egressDispatch, ingressDispatch}},
			{Name: chainInput, Hook: spec.HookInput, Policy: spec.VerdictAccept,
				Comment: "NetworkPolicy egress of pods towards the node itself",
				Rules:   []spec.NFTRule{established, egressDispatch}},
		},
		Sets: []spec.NFTSet{
			{Name: mapIngressPods, Type: []string{spec.TypeIPv4Addr}, Verdict: true,
				Comment: "pod IP to the chain of its ingress policy, for pods isolated for ingress"},
			{Name: mapEgressPods, Type: []string{spec.TypeIPv4Addr}, Verdict: true,
				Comment: "pod IP to the chain of its egress policy, for pods isolated for egress"},
		},
	}
	for _, dir := range []string{dirIngress, dirEgress} {
		for p, d := range dirs[dir] {
			r.podPolicyChain(t, p, dir, d)
		}
	}
	return t
}

// podPolicyChain adds one pod's chain and sets for one direction.
func (r *renderer) podPolicyChain(t *spec.NFTable, p *podInfo, dir string, d *podDirection) {
	prefix, peerSel, mapName := "in", spec.SelIPSaddr, mapIngressPods
	if dir == dirEgress {
		prefix, peerSel, mapName = "eg", spec.SelIPDaddr, mapEgressPods
		p.entry.EgressIsolated = true
	} else {
		p.entry.IngressIsolated = true
	}
	chain := policyChainName(prefix, p.key)
	portsSet, anySet := chain+"-ports", chain+"-all"
	peerWord := "sources"
	if dir == dirEgress {
		peerWord = "destinations"
	}
	slices.Sort(d.policies)
	portSet := spec.NFTSet{
		Name: portsSet, Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true, Pod: p.key,
		Comment: dir + " of pod " + p.key + ": " + peerWord + ", protocols and ports allowed",
	}
	for _, e := range rectangles(d.ports) {
		portSet.Elements = append(portSet.Elements, spec.NFTElement{Key: []string{e[0], e[1], e[2]}})
	}
	allSet := spec.NFTSet{
		Name: anySet, Type: []string{spec.TypeIPv4Addr}, Interval: true, Pod: p.key,
		Comment: dir + " of pod " + p.key + ": " + peerWord + " allowed on every port",
	}
	for _, s := range mergeSpans(d.anyPort) {
		allSet.Elements = append(allSet.Elements, spec.NFTElement{Key: []string{s.String()}})
	}
	t.Sets = append(t.Sets, portSet, allSet)
	t.Chains = append(t.Chains, spec.NFTChain{
		Name: chain, Pod: p.key,
		Comment: dir + " of pod " + p.key + ", isolated by NetworkPolicy " + strings.Join(d.policies, ", "),
		Rules: []spec.NFTRule{
			{Match: []spec.NFTMatch{{Selectors: []string{peerSel, spec.SelL4Proto, spec.SelTHDport}, Set: portsSet}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
			{Match: []spec.NFTMatch{{Selectors: []string{peerSel}, Set: anySet}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
			{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}},
		},
	})
	m := t.Set(mapName)
	m.Elements = append(m.Elements, spec.NFTElement{
		Key: []string{p.entry.IP}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: chain}})
}
