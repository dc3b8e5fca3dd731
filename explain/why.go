package explain

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Direction is one side's policy story: the source pod's egress or the
// destination pod's ingress.
type Direction struct {
	Direction string `json:"direction"`
	Pod       string `json:"pod"`
	// Isolated comes from the document: the pod's IP has an element in the
	// direction's verdict map.
	Isolated bool   `json:"isolated"`
	Chain    string `json:"chain,omitempty"`
	// Policies isolate the pod in this direction, read from the policies.
	Policies []string `json:"policies,omitempty"`
	// Allowed is the kernel's decision in the pod's group chain.
	Allowed bool `json:"allowed"`
	// Set and Element are the lookup in the group chain that admitted.
	Set     string `json:"set,omitempty"`
	Element string `json:"element,omitempty"`
	// Admitted lists the rules, peers and ports that admit the connection;
	// Refused says for each candidate rule why it does not.
	Admitted []string `json:"admitted,omitempty"`
	Refused  []string `json:"refused,omitempty"`
	// AdmittedBy names the policies of Admitted, once each, sorted: what
	// what-if compares to say which policy a flip is due to.
	AdmittedBy []string `json:"admittedBy,omitempty"`
}

// direction reads one direction from the trace and explains it from the
// policies. mapName is the direction's verdict map.
func (m *Model) direction(dir, mapName string, self, peer Endpoint, proto string, port uint16, dst Endpoint, res Result) *Direction {
	d := &Direction{Direction: dir, Pod: self.Key, Allowed: true}
	for i, s := range res.Trace {
		if s.Set != mapName || !s.Matched || !strings.HasPrefix(s.Verdict, "jump ") {
			continue
		}
		d.Isolated = true
		d.Chain = strings.TrimPrefix(s.Verdict, "jump ")
		for _, g := range res.Trace[i+1:] {
			if g.Chain != d.Chain || !g.Matched {
				continue
			}
			d.Allowed = g.Verdict != "drop"
			if d.Allowed {
				d.Set, d.Element = g.Set, g.Element
			}
			break
		}
	}
	if self.Pod == nil {
		return d
	}
	for _, np := range m.Inputs.Policies {
		if np.Namespace != self.Pod.Namespace || !isolates(np, dir) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !sel.Matches(labels.Set(self.Pod.Labels)) {
			continue
		}
		name := np.Namespace + "/" + np.Name
		d.Policies = append(d.Policies, name)
		m.rules(d, np, name, dir, peer, proto, port, dst)
	}
	slices.Sort(d.Policies)
	slices.Sort(d.AdmittedBy)
	return d
}

func isolates(np *networkingv1.NetworkPolicy, dir string) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return dir == "ingress" || len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		if strings.EqualFold(string(t), dir) {
			return true
		}
	}
	return false
}

// rules explains each rule of one policy for the connection.
func (m *Model) rules(d *Direction, np *networkingv1.NetworkPolicy, name, dir string, peer Endpoint, proto string, port uint16, dst Endpoint) {
	type rule struct {
		peers []networkingv1.NetworkPolicyPeer
		ports []networkingv1.NetworkPolicyPort
	}
	var rs []rule
	field, peerField := "ingress", "from"
	if dir == "ingress" {
		for _, r := range np.Spec.Ingress {
			rs = append(rs, rule{r.From, r.Ports})
		}
	} else {
		field, peerField = "egress", "to"
		for _, r := range np.Spec.Egress {
			rs = append(rs, rule{r.To, r.Ports})
		}
	}
	if len(rs) == 0 {
		d.Refused = append(d.Refused, fmt.Sprintf("%s has no %s rules: it allows nothing %s", name, field, map[string]string{"ingress": "in", "egress": "out"}[dir]))
	}
	for i, r := range rs {
		where := fmt.Sprintf("%s %s[%d]", name, field, i)
		peerOK, peerWhy := m.peers(np, r.peers, peerField, peer)
		portOK, portWhy := ports(r.ports, proto, port, dst)
		switch {
		case peerOK && portOK:
			d.Admitted = append(d.Admitted, fmt.Sprintf("%s: %s; %s", where, peerWhy, portWhy))
			if !slices.Contains(d.AdmittedBy, name) {
				d.AdmittedBy = append(d.AdmittedBy, name)
			}
		case !peerOK:
			d.Refused = append(d.Refused, fmt.Sprintf("%s: %s", where, peerWhy))
		default:
			d.Refused = append(d.Refused, fmt.Sprintf("%s: %s", where, portWhy))
		}
	}
}

// peers says whether any peer of a rule covers the other end, and why (the
// one that does, or why each does not).
func (m *Model) peers(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, field string, e Endpoint) (bool, string) {
	if len(peers) == 0 {
		return true, "no " + field + ": every peer"
	}
	var why []string
	for i, p := range peers {
		ok, s := m.peer(np, p, e)
		s = fmt.Sprintf("%s[%d] %s", field, i, s)
		if ok {
			return true, s
		}
		why = append(why, s)
	}
	return false, strings.Join(why, "; ")
}

func (m *Model) peer(np *networkingv1.NetworkPolicy, p networkingv1.NetworkPolicyPeer, e Endpoint) (bool, string) {
	if p.IPBlock != nil {
		cidr, err := netip.ParsePrefix(p.IPBlock.CIDR)
		if err != nil {
			return false, fmt.Sprintf("ipBlock %q is invalid", p.IPBlock.CIDR)
		}
		if !cidr.Contains(e.IP) {
			return false, fmt.Sprintf("ipBlock %s does not contain %s", cidr, e.IP)
		}
		for _, x := range p.IPBlock.Except {
			if xp, err := netip.ParsePrefix(x); err == nil && xp.Contains(e.IP) {
				return false, fmt.Sprintf("ipBlock %s contains %s but its except %s removes it", cidr, e.IP, xp)
			}
		}
		return true, fmt.Sprintf("ipBlock %s contains %s", cidr, e.IP)
	}
	if e.Pod == nil {
		return false, fmt.Sprintf("selects pods, and %s is not a known pod", e.Key)
	}
	var parts []string
	if p.NamespaceSelector == nil {
		if e.Pod.Namespace != np.Namespace {
			return false, fmt.Sprintf("selects pods of namespace %s only (no namespaceSelector), and %s is in %s", np.Namespace, e.Key, e.Pod.Namespace)
		}
	} else {
		nsLabels := labels.Set{corev1.LabelMetadataName: e.Pod.Namespace}
		for _, ns := range m.Inputs.Namespaces {
			if ns.Name == e.Pod.Namespace {
				for k, v := range ns.Labels {
					nsLabels[k] = v
				}
			}
		}
		if ok, s := selectorWhy(p.NamespaceSelector, nsLabels, "namespace "+e.Pod.Namespace); !ok {
			return false, "namespaceSelector: " + s
		}
		parts = append(parts, "namespaceSelector matches namespace "+e.Pod.Namespace)
	}
	if p.PodSelector != nil {
		if ok, s := selectorWhy(p.PodSelector, labels.Set(e.Pod.Labels), "pod "+e.Key); !ok {
			return false, "podSelector: " + s
		}
		parts = append(parts, "podSelector matches pod "+e.Key)
	}
	return true, strings.Join(parts, ", ")
}

// selectorWhy names the first requirement of sel that the labels fail.
func selectorWhy(ls *metav1.LabelSelector, set labels.Set, what string) (bool, string) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return false, fmt.Sprintf("invalid (%v)", err)
	}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if !r.Matches(set) {
			have := "has no label " + r.Key()
			if v, ok := set[r.Key()]; ok {
				have = fmt.Sprintf("has %s=%s", r.Key(), v)
			}
			return false, fmt.Sprintf("requires %s, and %s %s", r.String(), what, have)
		}
	}
	return true, ""
}

// ports says whether any port entry admits proto/port on the destination,
// resolving names against the destination pod's container ports.
func ports(ps []networkingv1.NetworkPolicyPort, proto string, port uint16, dst Endpoint) (bool, string) {
	if len(ps) == 0 {
		return true, "no ports: every port"
	}
	var why []string
	for i, p := range ps {
		pp := "TCP"
		if p.Protocol != nil {
			pp = string(*p.Protocol)
		}
		where := fmt.Sprintf("ports[%d]", i)
		if !strings.EqualFold(pp, proto) {
			why = append(why, fmt.Sprintf("%s is %s, not %s", where, pp, strings.ToUpper(proto)))
			continue
		}
		switch {
		case p.Port == nil:
			return true, fmt.Sprintf("%s allows every %s port", where, pp)
		case p.Port.StrVal != "":
			n, ok := containerPort(dst.Pod, p.Port.StrVal, pp)
			if !ok {
				why = append(why, fmt.Sprintf("%s names port %q, which %s does not declare for %s", where, p.Port.StrVal, dst.Key, pp))
				continue
			}
			if n != port {
				why = append(why, fmt.Sprintf("%s names port %q, which is %d on %s, not %d", where, p.Port.StrVal, n, dst.Key, port))
				continue
			}
			return true, fmt.Sprintf("%s names port %q = %s/%d on %s", where, p.Port.StrVal, pp, n, dst.Key)
		default:
			lo, hi := uint16(p.Port.IntVal), uint16(p.Port.IntVal)
			if p.EndPort != nil {
				hi = uint16(*p.EndPort)
			}
			if port < lo || port > hi {
				why = append(why, fmt.Sprintf("%s allows %s, not %d", where, portText(lo, hi), port))
				continue
			}
			return true, fmt.Sprintf("%s allows %s/%s", where, pp, portText(lo, hi))
		}
	}
	return false, strings.Join(why, "; ")
}

func portText(lo, hi uint16) string {
	if lo == hi {
		return fmt.Sprint(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

func containerPort(pod *corev1.Pod, name, proto string) (uint16, bool) {
	if pod == nil {
		return 0, false
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			p := string(cp.Protocol)
			if p == "" {
				p = "TCP"
			}
			if cp.Name == name && strings.EqualFold(p, proto) && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				return uint16(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// selects tells whether the policy's podSelector selects the pod.
func selects(np *networkingv1.NetworkPolicy, pod *corev1.Pod) bool {
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	return err == nil && sel.Matches(labels.Set(pod.Labels))
}
