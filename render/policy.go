package render

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/spec"
)

// direction names used in fields, chain names and comments.
const (
	dirIngress = "ingress"
	dirEgress  = "egress"
)

// parsedPolicy is one NetworkPolicy with its selectors and ports parsed: a
// function of the policy object alone, kept by the Cache while the object
// is the same.
type parsedPolicy struct {
	key, ns string
	np      *networkingv1.NetworkPolicy
	podSel  labels.Selector
	ingress []*parsedRule
	egress  []*parsedRule
	// isolates tells which directions the policy isolates its targets in.
	isolatesIngress, isolatesEgress bool
	// problems are reported on every render; ruleProblems (its peers and
	// ports) only while the policy selects a pod set up here: its peers
	// are resolved for pods awaiting their ADD too, but a problem shows
	// once a pod depends on the rules.
	problems, ruleProblems []spec.Problem
	// everyPod is set when a named port of an egress rule is resolved
	// against every pod an ipBlock (or no peer) covers: then any pod's
	// change may change the policy.
	everyPod bool
}

// parsedRule is one ingress or egress rule. A rule whose peers were all
// invalid has anyPeer false and no peers: it allows nothing.
type parsedRule struct {
	anyPeer bool
	peers   []parsedPeer
	blocks  []span // the ipBlock peers' spans, merged
	anyPort bool
	ports   []policyPort
}

// parsedPeer is one valid pod or namespace selector peer.
type parsedPeer struct {
	podSel labels.Selector // labels.Everything() when absent
	// nsSel selects the peer's namespaces; nil means the policy's own.
	nsSel labels.Selector
}

// policyPort is a validated port entry: a protocol and either a numeric
// range, a name, or every port (all true).
type policyPort struct {
	proto string
	all   bool
	name  string
	rng   portRange
}

// parsePolicy parses one policy. Its podSel is nil when the policy cannot
// select anything (an invalid podSelector); a problem then says so.
func parsePolicy(np *networkingv1.NetworkPolicy) *parsedPolicy {
	pp := &parsedPolicy{key: np.Namespace + "/" + np.Name, ns: np.Namespace, np: np}
	always := func(field, format string, args ...any) {
		pp.problems = append(pp.problems, spec.Problem{Kind: "NetworkPolicy", Namespace: np.Namespace, Name: np.Name,
			Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	ruleProb := func(field, format string, args ...any) {
		pp.ruleProblems = append(pp.ruleProblems, spec.Problem{Kind: "NetworkPolicy", Namespace: np.Namespace, Name: np.Name,
			Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		always("spec.podSelector", "%v; the policy is ignored", err)
		return pp
	}
	pp.podSel = sel
	if len(np.Spec.PolicyTypes) == 0 {
		// The API server's default: ingress always, egress when rules exist.
		pp.isolatesIngress = true
		pp.isolatesEgress = len(np.Spec.Egress) > 0
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			pp.isolatesIngress = true
		case networkingv1.PolicyTypeEgress:
			pp.isolatesEgress = true
		default:
			always(fmt.Sprintf("spec.policyTypes[%d]", i), "%q is not Ingress or Egress; ignored", t)
		}
	}
	if pp.isolatesIngress {
		for i, rule := range np.Spec.Ingress {
			pp.ingress = append(pp.ingress, parseRule(np, fmt.Sprintf("spec.ingress[%d]", i), "from", rule.From, rule.Ports, ruleProb))
		}
	}
	if pp.isolatesEgress {
		for i, rule := range np.Spec.Egress {
			r := parseRule(np, fmt.Sprintf("spec.egress[%d]", i), "to", rule.To, rule.Ports, ruleProb)
			pp.egress = append(pp.egress, r)
			if r.anyPeer || len(r.blocks) > 0 {
				for _, port := range r.ports {
					pp.everyPod = pp.everyPod || port.name != ""
				}
			}
		}
	}
	return pp
}

type problemFunc func(field, format string, args ...any)

func parseRule(np *networkingv1.NetworkPolicy, field, peersField string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, prob problemFunc) *parsedRule {
	pr := &parsedRule{anyPeer: len(peers) == 0, anyPort: len(ports) == 0}
	for i, peer := range peers {
		// The field is named only in a problem: a policy of 50,000
		// ipBlocks would otherwise format 50,000 names for nothing.
		pf := func() string { return fmt.Sprintf("%s.%s[%d]", field, peersField, i) }
		sel, blocks, ok := parsePeer(pf, peer, prob)
		switch {
		case !ok:
		case sel != nil:
			pr.peers = append(pr.peers, *sel)
		default:
			pr.blocks = append(pr.blocks, blocks...)
		}
	}
	pr.blocks = mergeSpans(pr.blocks)
	for i, port := range ports {
		if pp, ok := parsePolicyPort(fmt.Sprintf("%s.ports[%d]", field, i), port, prob); ok {
			pr.ports = append(pr.ports, pp)
		}
	}
	return pr
}

// parsePeer parses one peer: a selector peer, or an ipBlock's spans. ok is
// false for an invalid peer, which then allows nothing.
func parsePeer(fieldOf func() string, peer networkingv1.NetworkPolicyPeer, prob problemFunc) (sel *parsedPeer, blocks []span, ok bool) {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			prob(fieldOf(), "ipBlock cannot be combined with podSelector or namespaceSelector; this peer allows nothing")
			return nil, nil, false
		}
		spans, err := ipBlockSpans(peer.IPBlock)
		if err != nil {
			prob(fieldOf()+".ipBlock"+err.field, "%s; this peer allows nothing", err.reason)
			return nil, nil, false
		}
		return nil, spans, true
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		prob(fieldOf(), "a peer needs podSelector, namespaceSelector or ipBlock; this peer allows nothing")
		return nil, nil, false
	}
	out := &parsedPeer{podSel: labels.Everything()}
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			prob(fieldOf()+".podSelector", "%v; this peer allows nothing", err)
			return nil, nil, false
		}
		out.podSel = s
	}
	if peer.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			prob(fieldOf()+".namespaceSelector", "%v; this peer allows nothing", err)
			return nil, nil, false
		}
		out.nsSel = s
	}
	return out, nil, true
}

// covers tells whether the peer looks for pods in namespace ns.
func (p *parsedPeer) covers(pp *parsedPolicy, ns string, nsLabels map[string]labels.Set) bool {
	if p.nsSel == nil {
		return ns == pp.ns
	}
	set, known := nsLabels[ns]
	return known && p.nsSel.Matches(set)
}

// resolution is a parsed policy resolved against the render's pods: what
// the Cache keeps until a pod or namespace it depends on changes. It holds
// keys and addresses, not the render's pod objects, so that it outlives
// the render that made it.
type resolution struct {
	// targets are the keys of the local pods with a network that the
	// policy selects, in key order.
	targets []string
	// awaiting are the keys of the pods scheduled here, not set up yet,
	// that the policy selects (podInfo.awaiting), in key order.
	awaiting []string
	// rulesResolved tells that ingress and egress are resolved: in a full
	// render, because the policy has targets or awaiting pods; a patch
	// resolves them for a pod it sets up or awaits (resolveRules) and
	// leaves them resolved when its pods go.
	rulesResolved bool
	ingress       []resolvedRule
	egress        []resolvedRule
}

// resolvedRule is a rule's peers as addresses.
type resolvedRule struct {
	rule *parsedRule
	// addrs are the peers' addresses merged: every address for a rule
	// with no peer.
	addrs []span
	// egressNamed are the rule's named ports resolved against each peer
	// pod of an egress rule: a name is each peer's own port.
	egressNamed []portAllow
}

// sameRules tells whether two resolutions allow the same, whatever their
// targets: groups made from them render the same sets.
func (a *resolution) sameRules(b *resolution) bool {
	same := func(x, y []resolvedRule) bool {
		return slices.EqualFunc(x, y, func(p, q resolvedRule) bool {
			return p.rule == q.rule && slices.Equal(p.addrs, q.addrs) && slices.EqualFunc(p.egressNamed, q.egressNamed, portAllow.equal)
		})
	}
	return same(a.ingress, b.ingress) && same(a.egress, b.egress)
}

// policyCompiler resolves parsed policies against the render's pods and
// namespaces.
type policyCompiler struct {
	r        *renderer
	nsLabels map[string]labels.Set
	nsNames  []string // every namespace known, sorted
}

func newPolicyCompiler(r *renderer) *policyCompiler {
	c := &policyCompiler{r: r, nsLabels: namespaceLabels(r)}
	c.nsNames = sortedKeys(c.nsLabels)
	return c
}

// namespaceLabels are the labels selectors see on each namespace known,
// from its object or, for a namespace only pods name, its name alone.
func namespaceLabels(r *renderer) map[string]labels.Set {
	out := map[string]labels.Set{}
	for _, ns := range r.nsList {
		set := labels.Set{}
		for k, v := range ns.Labels {
			set[k] = v
		}
		// The API server sets this label on every namespace; objects read
		// from files may lack it.
		set[corev1.LabelMetadataName] = ns.Name
		out[ns.Name] = set
	}
	for ns := range r.byNS {
		if _, ok := out[ns]; !ok {
			out[ns] = labels.Set{corev1.LabelMetadataName: ns}
		}
	}
	return out
}

// resolve finds a policy's targets and awaiting pods and, when it has
// any, its rules' peers.
func (c *policyCompiler) resolve(pp *parsedPolicy) *resolution {
	res := &resolution{}
	for _, p := range c.r.byNS[pp.ns] {
		switch {
		case c.isTarget(pp, p):
			res.targets = append(res.targets, p.key)
		case p.awaiting() && pp.podSel.Matches(labels.Set(p.pod.Labels)):
			res.awaiting = append(res.awaiting, p.key)
		}
	}
	if len(res.targets)+len(res.awaiting) == 0 {
		return res // selects no pod here: no need to resolve peers
	}
	res.rulesResolved = true
	for _, rule := range pp.ingress {
		res.ingress = append(res.ingress, c.resolveRule(pp, rule, false))
	}
	for _, rule := range pp.egress {
		res.egress = append(res.egress, c.resolveRule(pp, rule, true))
	}
	return res
}

// isTarget tells whether the policy selects p as one of its pods here.
func (c *policyCompiler) isTarget(pp *parsedPolicy, p *podInfo) bool {
	return p.entry != nil && p.pod != nil && pp.podSel.Matches(labels.Set(p.pod.Labels))
}

func (c *policyCompiler) resolveRule(pp *parsedPolicy, rule *parsedRule, egress bool) resolvedRule {
	rr := resolvedRule{rule: rule}
	var pods []*podInfo
	for i := range rule.peers {
		pods = append(pods, c.peerPods(pp, &rule.peers[i])...)
	}
	if rule.anyPeer {
		rr.addrs = []span{allAddresses}
	} else {
		addrs := slices.Clone(rule.blocks)
		for _, p := range pods {
			addrs = append(addrs, c.peerSpan(p))
		}
		rr.addrs = mergeSpans(addrs)
	}
	if !egress || rule.anyPort {
		return rr
	}
	var peers []*podInfo
	for _, port := range rule.ports {
		if port.name == "" {
			continue
		}
		if peers == nil {
			peers = c.egressNamedPortPeers(rule, pods)
		}
		// A named port of an egress rule is each peer pod's port; a name
		// no peer has allows nothing.
		for _, peer := range peers {
			if n, ok := namedPort(peer.pod, port.name, port.proto); ok {
				rr.egressNamed = append(rr.egressNamed, portAllow{port.proto, portRange{n, n}, []span{c.peerSpan(peer)}})
			}
		}
	}
	return rr
}

// peerPods are the pods a selector peer selects.
func (c *policyCompiler) peerPods(pp *parsedPolicy, peer *parsedPeer) []*podInfo {
	var pods []*podInfo
	namespaces := []string{pp.ns}
	if peer.nsSel != nil {
		namespaces = namespaces[:0]
		for _, ns := range c.nsNames {
			if peer.nsSel.Matches(c.nsLabels[ns]) {
				namespaces = append(namespaces, ns)
			}
		}
	}
	for _, ns := range namespaces {
		for _, p := range c.r.byNS[ns] {
			if c.isPeer(peer, p) {
				pods = append(pods, p)
			}
		}
	}
	return pods
}

// isPeer tells whether a selector peer selects p, a pod of a namespace the
// peer covers.
func (c *policyCompiler) isPeer(peer *parsedPeer, p *podInfo) bool {
	return p.pod != nil && c.peerIP(p).IsValid() && peer.podSel.Matches(labels.Set(p.pod.Labels))
}

// peerIP is the address a pod has as a policy peer: local pods only once
// their network rendered and they are not held back (Inputs.PeersHeldBack),
// or while departing (Inputs.PeersDeparting), other pods by status.podIP.
func (c *policyCompiler) peerIP(p *podInfo) netip.Addr { return c.r.peerIP(p) }

func (r *renderer) peerIP(p *podInfo) netip.Addr {
	switch {
	case p.departing.IsValid():
		return p.departing
	case p.local && (p.entry == nil || r.heldBack[p.key]):
		return netip.Addr{}
	}
	return p.ip
}

// peerPinned tells whether a pod's peer address is pinned (see span): a
// pod on this node with its network, or departing from it.
func peerPinned(p *podInfo) bool { return p.local && p.entry != nil || p.departing.IsValid() }

// peerSpan is a peer pod's address as a span, pinned when the pod is on
// this node (see span).
func (c *policyCompiler) peerSpan(p *podInfo) span {
	s := addrSpan(c.peerIP(p))
	s.pin = peerPinned(p)
	return s
}

func ipBlockSpans(b *networkingv1.IPBlock) ([]span, *fieldError) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	switch {
	case err != nil:
		return nil, &fieldError{".cidr", fmt.Sprintf("%q is not a CIDR", b.CIDR)}
	case !cidr.Addr().Is4():
		return nil, &fieldError{".cidr", fmt.Sprintf("%q is IPv6, which this node does not support", b.CIDR)}
	}
	whole := prefixSpan(cidr)
	var except []span
	for i, e := range b.Except {
		p, err := netip.ParsePrefix(e)
		field := fmt.Sprintf(".except[%d]", i)
		switch {
		case err != nil:
			return nil, &fieldError{field, fmt.Sprintf("%q is not a CIDR", e)}
		case !p.Addr().Is4():
			return nil, &fieldError{field, fmt.Sprintf("%q is IPv6, which this node does not support", e)}
		}
		s := prefixSpan(p)
		if s.lo < whole.lo || s.hi > whole.hi || s == whole {
			return nil, &fieldError{field, fmt.Sprintf("%q must be strictly inside cidr %q", e, b.CIDR)}
		}
		except = append(except, s)
	}
	return subtractSpans([]span{whole}, mergeSpans(except)), nil
}

var protoNames = map[corev1.Protocol]string{corev1.ProtocolTCP: "tcp", corev1.ProtocolUDP: "udp", corev1.ProtocolSCTP: "sctp"}

func parsePolicyPort(field string, p networkingv1.NetworkPolicyPort, prob problemFunc) (policyPort, bool) {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	pp := policyPort{proto: protoNames[proto]}
	if pp.proto == "" {
		prob(field+".protocol", "%q is not TCP, UDP or SCTP; this port allows nothing", proto)
		return pp, false
	}
	switch {
	case p.Port == nil:
		if p.EndPort != nil {
			prob(field+".endPort", "endPort needs a numeric port; this port allows nothing")
			return pp, false
		}
		pp.all, pp.rng = true, allPorts
	case p.Port.Type == intstr.String:
		if p.EndPort != nil {
			prob(field+".endPort", "endPort cannot be used with the named port %q; this port allows nothing", p.Port.StrVal)
			return pp, false
		}
		if p.Port.StrVal == "" || strings.TrimSpace(p.Port.StrVal) != p.Port.StrVal {
			prob(field+".port", "%q is not a port name; this port allows nothing", p.Port.StrVal)
			return pp, false
		}
		pp.name = p.Port.StrVal
	default:
		port := p.Port.IntVal
		if port < 1 || port > 65535 {
			prob(field+".port", "%d is outside 1-65535; this port allows nothing", port)
			return pp, false
		}
		end := port
		if p.EndPort != nil {
			end = *p.EndPort
			if end < port || end > 65535 {
				prob(field+".endPort", "%d must be between port %d and 65535; this port allows nothing", end, port)
				return pp, false
			}
		}
		pp.rng = portRange{uint16(port), uint16(end)}
	}
	return pp, true
}

// namedPort resolves a port name against a pod's containerPorts, matching
// the protocol too.
func namedPort(pod *corev1.Pod, name, proto string) (uint16, bool) {
	if pod == nil {
		return 0, false
	}
	for _, ctr := range pod.Spec.Containers {
		for _, cp := range ctr.Ports {
			p := cp.Protocol
			if p == "" {
				p = corev1.ProtocolTCP
			}
			if cp.Name == name && protoNames[p] == proto && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				return uint16(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}
