package render

import (
	"fmt"
	"slices"
	"strconv"
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

// podDirection is one direction of one target pod (or pod awaiting its
// ADD): the policies that isolate it, in name order.
type podDirection struct {
	policies []*policyEntry
}

// policyGroup is every target pod (and pod awaiting its ADD) of one
// direction whose allowance is the same because the same policies select it
// and (for ingress) its named ports resolve the same way. Replicas of a
// Deployment share one group, so they share one chain and one pair of sets.
type policyGroup struct {
	key      string
	ns       string
	policies []*policyEntry
	targets  []*podInfo
	// awaiting are the pods of the group not set up yet
	// (podInfo.awaiting): the group renders for them, with their
	// dispatch entries keyed by the host veths their ADDs will make.
	awaiting []*podInfo
}

// member is a pod of the group that its chain and sets are made for: a
// target, else an awaiting pod (the group key holds how every one of
// them resolves its ingress named ports).
func (g *policyGroup) member() *podInfo {
	if len(g.targets) > 0 {
		return g.targets[0]
	}
	return g.awaiting[0]
}

// renderPolicies resolves every policy and renders table inet terway.
//
// The table is a static skeleton with dynamic data: two base chains accept
// established traffic, then dispatch through verdict maps keyed by the pod's
// host veth (the arrival interface for egress, the leaving one for ingress)
// to the chain of the pod's policy group for each direction it is isolated
// in. The key is the veth, not the pod's address, because the veth's name
// comes from the pod's key: a pod awaiting its ADD has its entries written
// with its groups, so its ADD writes no jump. A commit that adds a jump
// makes the kernel check every chain the table's base chains reach (its
// loop and hook check), which at 250 pods and 1,000 policies took longer
// than the rest of the ADD's nftables transaction; the ADD's elements of
// the hairpin and source sets carry no verdict and need no such check.
// (Antispoof has already tied a veth to its pod's one address, so the
// packets judged are the same as by address.)
// A group chain has three fixed rules: (address, protocol, port) in the
// group's ports set, address in its any-port set, else drop. All policies
// selecting the pods are merged into those two sets, so the per-packet cost is
// two set lookups, whatever the number of policies. Pods selected by no policy
// of a direction have no map entry for it and are not isolated that way.
//
// Policies are resolved, and groups' chains and sets rendered, through the
// Cache (cache.go): a part whose inputs did not change since the last
// render is reused as it was.
//
// Exclusive-ENI pods are in the node's maps too (their veth1 crosses the
// node) and get a table of their own for their ENI (renderPodTables).
func (r *renderer) renderPolicies(policies []*networkingv1.NetworkPolicy) {
	c := newPolicyCompiler(r)
	entries := r.cache.policies(c, policies)
	r.entries, r.groups, r.compiler = entries, map[string]*patchGroup{}, c
	dirs := map[string]map[*podInfo]*podDirection{dirIngress: {}, dirEgress: {}}
	add := func(dir string, t *podInfo, pe *policyEntry) {
		d := dirs[dir][t]
		if d == nil {
			d = &podDirection{}
			dirs[dir][t] = d
		}
		d.policies = append(d.policies, pe)
	}
	for _, pe := range entries {
		pp := pe.parsed
		r.state.Problems = append(r.state.Problems, pp.problems...)
		if pp.podSel == nil || !pe.res.rulesResolved {
			continue
		}
		// Rule problems show only while the policy selects a pod set up
		// here: a pod awaiting its ADD does not make them show.
		if len(pe.res.targets) > 0 {
			r.state.Problems = append(r.state.Problems, pp.ruleProblems...)
		}
		for _, key := range slices.Concat(pe.res.targets, pe.res.awaiting) {
			t := r.byKey[key]
			if pp.isolatesIngress {
				add(dirIngress, t, pe)
			}
			if pp.isolatesEgress {
				add(dirEgress, t, pe)
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
	r.cache.endGroups()
	r.hairpinElements(t)
	for _, name := range []string{mapIngressPods, mapEgressPods, setHairpin} {
		s := t.Set(name)
		s.Elements = r.sortDispatch(name, s.Elements)
	}
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
		if p.entry != nil && isolated(p.entry) { // else nothing to exempt
			s.Elements = append(s.Elements, vethElement(p.entry.HostVeth, p.entry.IP))
		}
	}
}

// isolated tells whether a pod is isolated in either direction: it then
// has a hairpin element.
func isolated(e *spec.Pod) bool { return e.IngressChain != "" || e.EgressChain != "" }

// vethElement is a pod's element of the hairpin and source validation
// sets: its host veth and its address.
func vethElement(veth, ip string) spec.NFTElement { return spec.NFTElement{Key: []string{veth, ip}} }

// jumpElement is a pod's element of a dispatch verdict map: its host veth
// to its policy group's chain.
func jumpElement(veth, chain string) spec.NFTElement {
	return spec.NFTElement{Key: []string{veth}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: chain}}
}

// groups partitions the targets and awaiting pods of one direction by
// what they allow.
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
			g = &policyGroup{key: key, ns: ns, policies: d.policies}
			byKey[key] = g
			out = append(out, g)
		}
		if t.entry != nil {
			g.targets = append(g.targets, t)
		} else {
			g.awaiting = append(g.awaiting, t)
		}
	}
	return out
}

// groupKey names what a target's (or awaiting pod's) allowance depends on:
// the policies (in name order) and, for ingress, how the pod resolves the
// named ports they use.
func groupKey(dir string, t *podInfo, policies []*policyEntry) string {
	var b strings.Builder
	b.WriteString(dir)
	for _, pe := range policies {
		b.WriteString("|")
		b.WriteString(pe.parsed.key)
		if dir != dirIngress {
			continue
		}
		for _, rule := range pe.parsed.ingress {
			for _, port := range rule.ports {
				if port.name == "" {
					continue
				}
				n, ok := namedPort(t.pod, port.name, port.proto)
				// ",name/proto=port/found", without fmt: this runs for
				// every target pod on every render.
				b.WriteByte(',')
				b.WriteString(port.name)
				b.WriteByte('/')
				b.WriteString(port.proto)
				b.WriteByte('=')
				b.WriteString(strconv.FormatUint(uint64(n), 10))
				if ok {
					b.WriteString("/true")
				} else {
					b.WriteString("/false")
				}
			}
		}
	}
	return b.String()
}

// groupAllowance is what a group allows, before it becomes set elements.
type groupAllowance struct {
	anyPort [][]span // each rule's merged addresses
	ports   []portAllow
}

// allow adds one policy's resolved rules for one direction to a group's
// allowance, resolving ingress named ports against t, a member of the
// group (the group key holds how every member resolves them).
func (g *groupAllowance) allow(t *podInfo, dir string, rules []resolvedRule) {
	for _, rr := range rules {
		if rr.rule.anyPort {
			g.anyPort = append(g.anyPort, rr.addrs)
			continue
		}
		for _, port := range rr.rule.ports {
			switch {
			case port.name == "":
				g.ports = append(g.ports, portAllow{port.proto, port.rng, rr.addrs})
			case dir == dirIngress:
				// A named port of an ingress rule is the target's own port.
				if n, ok := namedPort(t.pod, port.name, port.proto); ok {
					g.ports = append(g.ports, portAllow{port.proto, portRange{n, n}, rr.addrs})
				}
			}
		}
		g.ports = append(g.ports, rr.egressNamed...)
	}
}

// egressNamedPortPeers lists the pods a named egress port is resolved
// against: the selected pods, and the pods whose address an ipBlock (or no
// peer at all, meaning everywhere) covers.
func (c *policyCompiler) egressNamedPortPeers(rule *parsedRule, selected []*podInfo) []*podInfo {
	out := slices.Clone(selected)
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
	egressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapEgressPods, Selectors: []string{spec.SelIIFName}}}
	ingressDispatch := spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: mapIngressPods, Selectors: []string{spec.SelOIFName}}}
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
		Sets: []*spec.NFTSet{
			{Name: mapIngressPods, Type: []string{spec.TypeIfName}, Verdict: true,
				Comment: "pod's host veth to the chain of its ingress policy group, for pods isolated for ingress"},
			{Name: mapEgressPods, Type: []string{spec.TypeIfName}, Verdict: true,
				Comment: "pod's host veth to the chain of its egress policy group, for pods isolated for egress"},
			{Name: setHairpin, Type: []string{spec.TypeIfName, spec.TypeIPv4Addr},
				Comment: "isolated pods' host veth and IP: a pod reaching itself through a Service is always allowed"},
		},
	}
}

// groupChain adds one policy group's chain and sets, and points its
// targets' and awaiting pods' map entries at the chain (an awaiting pod's
// veth is not there yet: its entry waits for it). The chain and sets come
// from the Cache while the group's policies allow the same as when they
// were made.
func (r *renderer) groupChain(t *spec.NFTable, dir string, g *policyGroup) {
	mapName, i := mapIngressPods, 0 // i: the direction's index in podInfo.groups
	if dir == dirEgress {
		mapName, i = mapEgressPods, 1
	}
	out := r.cache.group(g, func() *groupOutput { return renderGroup(dir, g) })
	t.Sets = append(t.Sets, out.sets...)
	t.Chains = append(t.Chains, out.chain)
	r.groups[g.key] = &patchGroup{out: out, members: len(g.targets), awaiting: len(g.awaiting)}
	m := t.Set(mapName)
	for _, p := range g.awaiting {
		p.groups[i] = g.key
		m.Elements = append(m.Elements, jumpElement(spec.HostVethName(p.key), out.chain.Name))
	}
	for _, p := range g.targets {
		if dir == dirEgress {
			p.entry.EgressChain = out.chain.Name
		} else {
			p.entry.IngressChain = out.chain.Name
		}
		p.groups[i] = g.key
		m.Elements = append(m.Elements, jumpElement(p.entry.HostVeth, out.chain.Name))
	}
}

// groupOutput is a group's rendered chain and its sets, elements sorted.
type groupOutput struct {
	chain spec.NFTChain
	sets  []*spec.NFTSet
}

// renderGroup renders a group's chain and sets from its policies'
// resolved rules.
//
// The chain returns (allows) when the peer is in the group's any-port set
// or the (peer, protocol, port) triple is allowed, and drops otherwise. The
// triples are one concatenated interval set (CHAIN-ports) or, for a group
// whose allowance is a few port lists each shared by many peers, one rule
// per list with an address set (CHAIN-aN) and a (protocol, port) set
// (CHAIN-pN): see profiles.go.
func renderGroup(dir string, g *policyGroup) *groupOutput {
	prefix, peerSel, peerWord := "in", spec.SelIPSaddr, "sources"
	if dir == dirEgress {
		prefix, peerSel, peerWord = "eg", spec.SelIPDaddr, "destinations"
	}
	var allow groupAllowance
	names := make([]string, 0, len(g.policies))
	for _, pe := range g.policies {
		names = append(names, pe.parsed.key)
		rules := pe.res.ingress
		if dir == dirEgress {
			rules = pe.res.egress
		}
		allow.allow(g.member(), dir, rules)
	}
	chain := groupChainName(prefix, g.ns, g.key)
	out := &groupOutput{chain: spec.NFTChain{
		Name:    chain,
		Comment: policiesComment(dir+" of pods isolated by NetworkPolicy ", names),
	}}
	pieces := portPieces(allow.ports)
	if profiles := splitProfiles(pieces); profiles != nil {
		for i, p := range profiles {
			addrSet, portSet := chain+"-a"+strconv.Itoa(i+1), chain+"-p"+strconv.Itoa(i+1)
			a := &spec.NFTSet{Name: addrSet, Type: []string{spec.TypeIPv4Addr}, Interval: true,
				Comment: fmt.Sprintf("%s group %s: %s allowed the ports of %s", dir, chain, peerWord, portSet)}
			for _, s := range p.addrs {
				a.Elements = append(a.Elements, spec.NFTElement{Key: []string{s.String()}})
			}
			ps := &spec.NFTSet{Name: portSet, Type: []string{spec.TypeProto, spec.TypeService}, Interval: true,
				Comment: fmt.Sprintf("%s group %s: protocols and ports allowed to the %s in %s", dir, chain, peerWord, addrSet)}
			for _, e := range p.ports {
				ps.Elements = append(ps.Elements, spec.NFTElement{Key: []string{protoName(e), e.ports().String()}})
			}
			out.sets = append(out.sets, a, ps)
			out.chain.Rules = append(out.chain.Rules, spec.NFTRule{
				Match: []spec.NFTMatch{
					{Selectors: []string{peerSel}, Set: addrSet},
					{Selectors: []string{spec.SelL4Proto, spec.SelTHDport}, Set: portSet},
				},
				Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}})
		}
	} else {
		ports := &spec.NFTSet{
			Name: chain + "-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService}, Interval: true,
			Comment: dir + " group " + chain + ": " + peerWord + ", protocols and ports allowed",
		}
		n := rectangleCount(pieces) // exactly as many as eachRectangle emits
		if n > 0 {
			ports.Elements = make([]spec.NFTElement, 0, n)
		}
		keys := make([]string, 3*n) // one allocation for every key
		eachRectangle(pieces, func(e rect) {
			i := len(ports.Elements)
			key := keys[3*i : 3*i+3 : 3*i+3]
			key[0], key[1], key[2] = e.addrs.String(), e.proto, e.portsText
			ports.Elements = append(ports.Elements, spec.NFTElement{Key: key})
		})
		out.sets = append(out.sets, ports)
		out.chain.Rules = append(out.chain.Rules, spec.NFTRule{
			Match:   []spec.NFTMatch{{Selectors: []string{peerSel, spec.SelL4Proto, spec.SelTHDport}, Set: ports.Name}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}})
	}
	all := &spec.NFTSet{
		Name: chain + "-all", Type: []string{spec.TypeIPv4Addr}, Interval: true,
		Comment: dir + " group " + chain + ": " + peerWord + " allowed on every port",
	}
	for _, s := range unionSpans(allow.anyPort) {
		all.Elements = append(all.Elements, spec.NFTElement{Key: []string{s.String()}})
	}
	// eachRectangle, splitProfiles and unionSpans emit their elements in the
	// document's canonical order already: no sort (TestCacheMatchesRender
	// checks it).
	out.sets = append(out.sets, all)
	out.chain.Rules = append(out.chain.Rules,
		spec.NFTRule{Match: []spec.NFTMatch{{Selectors: []string{peerSel}, Set: all.Name}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
		spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}})
	return out
}

// protoName is the name the document prints for a profile entry's protocol.
func protoName(e protoPorts) string {
	n := uint64(e >> 32)
	for name, num := range spec.ProtoNumbers {
		if num == n {
			return name
		}
	}
	return strconv.FormatUint(n, 10)
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
