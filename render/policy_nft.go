package render

import (
	"fmt"
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
	setHairpin     = "hairpin"
)

// podDirection is one direction of one target pod: the policies that
// isolate it, in name order.
type podDirection struct {
	policies []*compiledPolicy
}

// policyGroup is every target pod of one direction whose allowance is the
// same because the same policies select it and (for ingress) its named ports
// resolve the same way. Replicas of a Deployment share one group, so they
// share one chain and one pair of sets.
type policyGroup struct {
	key      string
	ns       string
	policies []string
	targets  []*podInfo
	anyPort  []span
	ports    []portAllow
}

// renderPolicies compiles every policy and renders table inet terway.
//
// The table is a static skeleton with dynamic data: two base chains accept
// established traffic, then dispatch through verdict maps keyed by pod IP to
// the chain of the pod's policy group for each direction it is isolated in.
// A group chain has three fixed rules: (address, protocol, port) in the
// group's ports set, address in its any-port set, else drop. All policies
// selecting the pods are merged into those two sets, so the per-packet cost is
// two set lookups, whatever the number of policies. Pods selected by no policy
// of a direction have no map entry for it and are not isolated that way.
//
// Exclusive-ENI pods are in the node's maps too (their veth1 crosses the
// node) and get a table of their own for their ENI (renderPodTables).
func (r *renderer) renderPolicies(policies []*networkingv1.NetworkPolicy) {
	c := newPolicyCompiler(r)
	dirs := map[string]map[*podInfo]*podDirection{dirIngress: {}, dirEgress: {}}
	add := func(dir string, t *podInfo, cp *compiledPolicy) {
		d := dirs[dir][t]
		if d == nil {
			d = &podDirection{}
			dirs[dir][t] = d
		}
		d.policies = append(d.policies, cp)
	}
	for _, np := range policies {
		cp := c.compile(np)
		if cp == nil {
			continue
		}
		for _, t := range cp.targets {
			if cp.isolatesIngress {
				add(dirIngress, t, cp)
			}
			if cp.isolatesEgress {
				add(dirEgress, t, cp)
			}
		}
	}
	t := r.baseTable()
	r.renderSourceValidation(t)
	for _, dir := range []string{dirIngress, dirEgress} {
		for _, g := range c.groups(dir, dirs[dir]) {
			r.groupChain(t, dir, g)
		}
	}
	r.hairpinElements(t)
	r.state.NFTables = t
	r.renderPodTables(t)
}

// hairpinElements lets each isolated pod reach itself through a Service.
//
// kube-proxy DNATs a pod's connection to its own Service back to the pod
// (nat prerouting, before us) and masquerades it to the node only at
// postrouting (after us), so our forward chain sees a packet from the pod's
// own address, arriving from its host veth and leaving by it again. The
// NetworkPolicy API lets a pod always reach itself (upstream's e2e probes
// through Services and expects the diagonal reachable under deny-all), so
// such a packet is accepted before either policy is looked at. The key is
// the arrival interface with the destination, not the source address: a
// packet from another pod that forges this pod's address arrives on another
// interface and is judged as usual.
func (r *renderer) hairpinElements(t *spec.NFTable) {
	s := t.Set(setHairpin)
	for _, p := range r.pods {
		if p.entry == nil || p.entry.IngressChain == "" && p.entry.EgressChain == "" {
			continue // not isolated: nothing to exempt
		}
		s.Elements = append(s.Elements, spec.NFTElement{Key: []string{p.entry.HostVeth, p.entry.IP}})
	}
}

// groups partitions the targets of one direction by what they allow, and
// computes each group's allowance once.
func (c *policyCompiler) groups(dir string, byPod map[*podInfo]*podDirection) []*policyGroup {
	byKey := map[string]*policyGroup{}
	var out []*policyGroup
	for _, t := range c.r.pods {
		d := byPod[t]
		if d == nil {
			continue
		}
		key := groupKey(dir, t, d.policies)
		g := byKey[key]
		if g == nil {
			ns, _ := splitKey(t.key)
			g = &policyGroup{key: key, ns: ns}
			for _, cp := range d.policies {
				g.policies = append(g.policies, cp.key)
				rules := cp.ingress
				if dir == dirEgress {
					rules = cp.egress
				}
				c.allow(g, t, dir, rules)
			}
			byKey[key] = g
			out = append(out, g)
		}
		g.targets = append(g.targets, t)
	}
	return out
}

// groupKey names what a target's allowance depends on: the policies (in name
// order) and, for ingress, how the target resolves the named ports they use.
func groupKey(dir string, t *podInfo, policies []*compiledPolicy) string {
	var b strings.Builder
	b.WriteString(dir)
	for _, cp := range policies {
		b.WriteString("|")
		b.WriteString(cp.key)
		if dir != dirIngress {
			continue
		}
		for _, rule := range cp.ingress {
			for _, port := range rule.ports {
				if port.name == "" {
					continue
				}
				n, ok := namedPort(t.pod, port.name, port.proto)
				fmt.Fprintf(&b, ",%s/%s=%d/%t", port.name, port.proto, n, ok)
			}
		}
	}
	return b.String()
}

// allow adds one policy's rules for one direction to a group, resolving
// ingress named ports against t, a member of the group.
func (c *policyCompiler) allow(g *policyGroup, t *podInfo, dir string, rules []*compiledRule) {
	for _, rule := range rules {
		addrs := c.ruleAddresses(rule)
		if rule.anyPort {
			g.anyPort = append(g.anyPort, addrs...)
			continue
		}
		for _, port := range rule.ports {
			switch {
			case port.name == "":
				g.ports = append(g.ports, portAllow{port.proto, port.rng, addrs})
			case dir == dirIngress:
				// A named port of an ingress rule is the target's own port.
				if n, ok := namedPort(t.pod, port.name, port.proto); ok {
					g.ports = append(g.ports, portAllow{port.proto, portRange{n, n}, addrs})
				}
			default:
				// A named port of an egress rule is each peer pod's port;
				// a name no peer has allows nothing.
				for _, peer := range c.egressNamedPortPeers(rule) {
					if n, ok := namedPort(peer.pod, port.name, port.proto); ok {
						g.ports = append(g.ports, portAllow{port.proto, portRange{n, n}, []span{addrSpan(c.peerIP(peer))}})
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

// baseTable is the static skeleton. Its base chains are filter chains at
// priority filter (0) in the forward and input hooks. kube-proxy's
// nftables mode shares the node's namespace (table ip kube-proxy): its
// filter-prerouting/-input/-forward/-output chains run at dstnat-10 (-110),
// its DNAT (nat-prerouting, nat-output) at dstnat (-100) and its masquerade
// (nat-postrouting) at srcnat (100). So a packet to a Service reaches our
// forward chain already DNATed to the backend pod, with its source not yet
// masqueraded: policy is judged on the backend pod and on the client's own
// address (for a NodePort, the external client's, also under
// externalTrafficPolicy Cluster). Traffic the node sends (kubelet probes,
// hostNetwork pods) goes through output, not forward, so it is never judged;
// only its replies come back, as established.
func (r *renderer) baseTable() *spec.NFTable {
	established := spec.NFTRule{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelCtState}, Values: []string{"established", "related"}}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}
	hairpin := spec.NFTRule{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelIIFName, spec.SelIPDaddr}, Set: setHairpin}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}
	egressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapEgressPods, Selectors: []string{spec.SelIPSaddr}}}
	ingressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapIngressPods, Selectors: []string{spec.SelIPDaddr}}}
	return &spec.NFTable{
		Family: spec.NFTFamily, Name: spec.NFTTable,
		Chains: []spec.NFTChain{
			{Name: chainForward, Hook: spec.HookForward, Policy: spec.VerdictAccept,
				Comment: "NetworkPolicy for traffic through the node: replies first, then the source pod's egress and the destination pod's ingress",
				Rules:   []spec.NFTRule{established, hairpin, egressDispatch, ingressDispatch}},
			{Name: chainInput, Hook: spec.HookInput, Policy: spec.VerdictAccept,
				Comment: "NetworkPolicy egress of pods towards the node itself",
				Rules:   []spec.NFTRule{established, egressDispatch}},
		},
		Sets: []spec.NFTSet{
			{Name: mapIngressPods, Type: []string{spec.TypeIPv4Addr}, Verdict: true,
				Comment: "pod IP to the chain of its ingress policy group, for pods isolated for ingress"},
			{Name: mapEgressPods, Type: []string{spec.TypeIPv4Addr}, Verdict: true,
				Comment: "pod IP to the chain of its egress policy group, for pods isolated for egress"},
			{Name: setHairpin, Type: []string{spec.TypeIfName, spec.TypeIPv4Addr},
				Comment: "isolated pods' host veth and IP: a pod reaching itself through a Service is always allowed"},
		},
	}
}

// groupChain adds one policy group's chain and sets, and points its pods'
// map entries at the chain.
func (r *renderer) groupChain(t *spec.NFTable, dir string, g *policyGroup) {
	prefix, peerSel, mapName, peerWord := "in", spec.SelIPSaddr, mapIngressPods, "sources"
	if dir == dirEgress {
		prefix, peerSel, mapName, peerWord = "eg", spec.SelIPDaddr, mapEgressPods, "destinations"
	}
	chain := groupChainName(prefix, g.ns, g.key)
	portsSet, anySet := chain+"-ports", chain+"-all"
	portSet := spec.NFTSet{
		Name: portsSet, Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
		Comment: dir + " group " + chain + ": " + peerWord + ", protocols and ports allowed",
	}
	for _, e := range rectangles(g.ports) {
		portSet.Elements = append(portSet.Elements, spec.NFTElement{Key: []string{e.addrs.String(), e.proto, e.ports.String()}})
	}
	allSet := spec.NFTSet{
		Name: anySet, Type: []string{spec.TypeIPv4Addr}, Interval: true,
		Comment: dir + " group " + chain + ": " + peerWord + " allowed on every port",
	}
	for _, s := range mergeSpans(g.anyPort) {
		allSet.Elements = append(allSet.Elements, spec.NFTElement{Key: []string{s.String()}})
	}
	t.Sets = append(t.Sets, portSet, allSet)
	t.Chains = append(t.Chains, spec.NFTChain{
		Name:    chain,
		Comment: policiesComment(dir+" of pods isolated by NetworkPolicy ", g.policies),
		Rules: []spec.NFTRule{
			{Match: []spec.NFTMatch{{Selectors: []string{peerSel, spec.SelL4Proto, spec.SelTHDport}, Set: portsSet}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
			{Match: []spec.NFTMatch{{Selectors: []string{peerSel}, Set: anySet}},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
			{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}},
		},
	})
	m := t.Set(mapName)
	for _, p := range g.targets {
		if dir == dirEgress {
			p.entry.EgressChain = chain
		} else {
			p.entry.IngressChain = chain
		}
		m.Elements = append(m.Elements, spec.NFTElement{
			Key: []string{p.entry.IP}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: chain}})
	}
}

// nftCommentMax is nft's limit on a comment, which apply enforces.
const nftCommentMax = 128

// policiesComment is prefix and the policies' names, cut to as many names
// as fit in an nft comment followed by how many more: a group of a few
// dozen policies (or one with a 253-byte name) would otherwise make a
// comment apply refuses, and no reconcile of the node would succeed.
func policiesComment(prefix string, names []string) string {
	if s := prefix + strings.Join(names, ", "); len(s) <= nftCommentMax {
		return s
	}
	s := prefix
	for i, n := range names {
		sep := ", "
		if i == 0 {
			sep = ""
		}
		// Room for this name and, after it, the count of the rest.
		more := fmt.Sprintf(" and %d more", len(names)-i-1)
		if len(s)+len(sep)+len(n)+len(more) > nftCommentMax {
			if i == 0 && len(names) == 1 {
				return prefix + "(1 policy, its name too long to show)"
			}
			if i == 0 {
				return prefix + fmt.Sprintf("(%d policies)", len(names))
			}
			return s + fmt.Sprintf(" and %d more", len(names)-i)
		}
		s += sep + n
	}
	return s
}
