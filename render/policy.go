package render

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// direction names used in fields, chain names and comments.
const (
	dirIngress = "ingress"
	dirEgress  = "egress"
)

// compiledPolicy is one NetworkPolicy with its selectors parsed and its
// rules resolved to pods and address spans.
type compiledPolicy struct {
	key     string
	targets []*podInfo // local pods with a network that the policy selects
	ingress []*compiledRule
	egress  []*compiledRule
	// isolates tells which directions the policy isolates its targets in.
	isolatesIngress, isolatesEgress bool
}

// compiledRule is one ingress or egress rule. A rule whose peers were all
// invalid has anyPeer false and nothing in pods or blocks: it allows nothing.
type compiledRule struct {
	anyPeer bool
	pods    []*podInfo
	blocks  []span
	anyPort bool
	ports   []policyPort
}

// policyPort is a validated port entry: a protocol and either a numeric
// range, a name, or every port (all true).
type policyPort struct {
	proto string
	all   bool
	name  string
	rng   portRange
}

// policyCompiler resolves policies against the render's pods and namespaces.
type policyCompiler struct {
	r        *renderer
	nsLabels map[string]labels.Set
	nsNames  []string // every namespace known, sorted
}

func newPolicyCompiler(r *renderer) *policyCompiler {
	c := &policyCompiler{r: r, nsLabels: map[string]labels.Set{}}
	for _, ns := range r.nsList {
		set := labels.Set{}
		for k, v := range ns.Labels {
			set[k] = v
		}
		// The API server sets this label on every namespace; objects read
		// from files may lack it.
		set[corev1.LabelMetadataName] = ns.Name
		c.nsLabels[ns.Name] = set
	}
	for ns := range r.byNS {
		if _, ok := c.nsLabels[ns]; !ok {
			c.nsLabels[ns] = labels.Set{corev1.LabelMetadataName: ns}
		}
	}
	c.nsNames = sortedKeys(c.nsLabels)
	return c
}

// compile parses one policy. It returns nil when the policy cannot select
// anything (an invalid podSelector), after recording the problem.
func (c *policyCompiler) compile(np *networkingv1.NetworkPolicy) *compiledPolicy {
	prob := func(field, format string, args ...any) {
		c.r.problem("NetworkPolicy", np.Namespace, np.Name, field, format, args...)
	}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		prob("spec.podSelector", "%v; the policy is ignored", err)
		return nil
	}
	cp := &compiledPolicy{key: np.Namespace + "/" + np.Name}
	for _, p := range c.r.byNS[np.Namespace] {
		if p.entry != nil && p.pod != nil && sel.Matches(labels.Set(p.pod.Labels)) {
			cp.targets = append(cp.targets, p)
		}
	}
	if len(np.Spec.PolicyTypes) == 0 {
		// The API server's default: ingress always, egress when rules exist.
		cp.isolatesIngress = true
		cp.isolatesEgress = len(np.Spec.Egress) > 0
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			cp.isolatesIngress = true
		case networkingv1.PolicyTypeEgress:
			cp.isolatesEgress = true
		default:
			prob(fmt.Sprintf("spec.policyTypes[%d]", i), "%q is not Ingress or Egress; ignored", t)
		}
	}
	if len(cp.targets) == 0 {
		return cp // selects no pod here: no need to resolve peers
	}
	if cp.isolatesIngress {
		for i, rule := range np.Spec.Ingress {
			cp.ingress = append(cp.ingress, c.rule(np, fmt.Sprintf("spec.ingress[%d]", i), "from", rule.From, rule.Ports, prob))
		}
	}
	if cp.isolatesEgress {
		for i, rule := range np.Spec.Egress {
			cp.egress = append(cp.egress, c.rule(np, fmt.Sprintf("spec.egress[%d]", i), "to", rule.To, rule.Ports, prob))
		}
	}
	return cp
}

type problemFunc func(field, format string, args ...any)

func (c *policyCompiler) rule(np *networkingv1.NetworkPolicy, field, peersField string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, prob problemFunc) *compiledRule {
	cr := &compiledRule{anyPeer: len(peers) == 0, anyPort: len(ports) == 0}
	for i, peer := range peers {
		pf := fmt.Sprintf("%s.%s[%d]", field, peersField, i)
		pods, blocks, ok := c.peer(np, pf, peer, prob)
		if ok {
			cr.pods = append(cr.pods, pods...)
			cr.blocks = append(cr.blocks, blocks...)
		}
	}
	cr.blocks = mergeSpans(cr.blocks)
	for i, port := range ports {
		if pp, ok := parsePolicyPort(fmt.Sprintf("%s.ports[%d]", field, i), port, prob); ok {
			cr.ports = append(cr.ports, pp)
		}
	}
	return cr
}

// peer resolves one peer to pods and address spans. ok is false for an
// invalid peer, which then allows nothing.
func (c *policyCompiler) peer(np *networkingv1.NetworkPolicy, field string, peer networkingv1.NetworkPolicyPeer, prob problemFunc) (pods []*podInfo, blocks []span, ok bool) {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			prob(field, "ipBlock cannot be combined with podSelector or namespaceSelector; this peer allows nothing")
			return nil, nil, false
		}
		spans, err := ipBlockSpans(peer.IPBlock)
		if err != nil {
			prob(field+".ipBlock"+err.field, "%s; this peer allows nothing", err.reason)
			return nil, nil, false
		}
		return nil, spans, true
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		prob(field, "a peer needs podSelector, namespaceSelector or ipBlock; this peer allows nothing")
		return nil, nil, false
	}
	podSel := labels.Everything()
	if peer.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
		if err != nil {
			prob(field+".podSelector", "%v; this peer allows nothing", err)
			return nil, nil, false
		}
		podSel = s
	}
	namespaces := []string{np.Namespace}
	if peer.NamespaceSelector != nil {
		nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			prob(field+".namespaceSelector", "%v; this peer allows nothing", err)
			return nil, nil, false
		}
		namespaces = namespaces[:0]
		for _, ns := range c.nsNames {
			if nsSel.Matches(c.nsLabels[ns]) {
				namespaces = append(namespaces, ns)
			}
		}
	}
	for _, ns := range namespaces {
		for _, p := range c.r.byNS[ns] {
			if p.pod != nil && c.peerIP(p).IsValid() && podSel.Matches(labels.Set(p.pod.Labels)) {
				pods = append(pods, p)
			}
		}
	}
	return pods, nil, true
}

// peerIP is the address a pod has as a policy peer: local pods only once
// their network rendered, other pods by status.podIP.
func (c *policyCompiler) peerIP(p *podInfo) netip.Addr {
	if p.local && p.entry == nil {
		return netip.Addr{}
	}
	return p.ip
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
