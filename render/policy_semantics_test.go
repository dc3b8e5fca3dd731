package render

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/spec"
)

// This test compares the rendered nftables document with a direct reading of
// the NetworkPolicy API semantics, on random clusters and random packets.
// The reference evaluator below shares no code with the compiler: it walks
// the policy objects for each packet, as the API documentation describes.

type world struct {
	pods     []*corev1.Pod
	nsLabels map[string]map[string]string
	policies []*networkingv1.NetworkPolicy
	node     string
}

func (w *world) podByIP(ip netip.Addr) *corev1.Pod {
	for _, p := range w.pods {
		if p.Status.PodIP == ip.String() {
			return p
		}
	}
	return nil
}

// refAllowed: may a packet from src to dst (proto, port) pass, by the API?
func (w *world) refAllowed(src, dst netip.Addr, proto string, port uint16) bool {
	if sp := w.podByIP(src); sp != nil && sp.Spec.NodeName == w.node {
		if !w.directionAllows(sp, dst, proto, port, true) {
			return false
		}
	}
	if dp := w.podByIP(dst); dp != nil && dp.Spec.NodeName == w.node {
		if !w.directionAllows(dp, src, proto, port, false) {
			return false
		}
	}
	return true
}

func (w *world) directionAllows(target *corev1.Pod, peer netip.Addr, proto string, port uint16, egress bool) bool {
	selected := false
	for _, np := range w.policies {
		if np.Namespace != target.Namespace {
			continue
		}
		sel, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if !sel.Matches(labels.Set(target.Labels)) || !affects(np, egress) {
			continue
		}
		selected = true
		if egress {
			for _, r := range np.Spec.Egress {
				if w.ruleAllows(np, r.To, r.Ports, peer, proto, port, w.podByIP(peer)) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Ingress {
				if w.ruleAllows(np, r.From, r.Ports, peer, proto, port, target) {
					return true
				}
			}
		}
	}
	return !selected
}

func affects(np *networkingv1.NetworkPolicy, egress bool) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return !egress || len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		if (t == networkingv1.PolicyTypeEgress) == egress {
			return true
		}
	}
	return false
}

// ruleAllows: portOwner is the pod whose containerPorts name ports (the
// target for ingress, the destination pod for egress).
func (w *world) ruleAllows(np *networkingv1.NetworkPolicy, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort,
	peer netip.Addr, proto string, port uint16, portOwner *corev1.Pod) bool {
	peerOK := len(peers) == 0
	for _, p := range peers {
		if w.peerMatches(np, p, peer) {
			peerOK = true
		}
	}
	if !peerOK {
		return false
	}
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		want := "tcp"
		if pp.Protocol != nil {
			want = map[corev1.Protocol]string{"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}[*pp.Protocol]
		}
		if want != proto {
			continue
		}
		switch {
		case pp.Port == nil:
			return true
		case pp.Port.Type == intstr.Int:
			end := pp.Port.IntVal
			if pp.EndPort != nil {
				end = *pp.EndPort
			}
			if int32(port) >= pp.Port.IntVal && int32(port) <= end {
				return true
			}
		default:
			if portOwner == nil {
				continue
			}
			for _, c := range portOwner.Spec.Containers {
				for _, cp := range c.Ports {
					cpProto := "tcp"
					if cp.Protocol == corev1.ProtocolUDP {
						cpProto = "udp"
					}
					if cp.Name == pp.Port.StrVal && cpProto == proto && uint16(cp.ContainerPort) == port {
						return true
					}
				}
			}
		}
	}
	return false
}

func (w *world) peerMatches(np *networkingv1.NetworkPolicy, p networkingv1.NetworkPolicyPeer, addr netip.Addr) bool {
	if p.IPBlock != nil {
		if !netip.MustParsePrefix(p.IPBlock.CIDR).Contains(addr) {
			return false
		}
		for _, e := range p.IPBlock.Except {
			if netip.MustParsePrefix(e).Contains(addr) {
				return false
			}
		}
		return true
	}
	pod := w.podByIP(addr)
	if pod == nil {
		return false
	}
	if p.NamespaceSelector == nil {
		if pod.Namespace != np.Namespace {
			return false
		}
	} else {
		nsSel, _ := metav1.LabelSelectorAsSelector(p.NamespaceSelector)
		if !nsSel.Matches(labels.Set(w.nsLabels[pod.Namespace])) {
			return false
		}
	}
	if p.PodSelector == nil {
		return true
	}
	podSel, _ := metav1.LabelSelectorAsSelector(p.PodSelector)
	return podSel.Matches(labels.Set(pod.Labels))
}

// nftAllowed interprets the node's rendered document for a forwarded
// packet: the forward chain's egress dispatch by the arrival interface (the
// source pod's host veth, when it is a pod of the node's) and its ingress
// dispatch by the leaving one (the destination pod's), and the group
// chains.
func nftAllowed(t *testing.T, state *spec.NodeState, src, dst netip.Addr, proto string, port uint16) bool {
	tbl := state.NFTables
	veth := func(addr netip.Addr) string {
		for _, p := range state.Pods {
			if p.IP == addr.String() {
				return p.HostVeth
			}
		}
		return ""
	}
	for _, step := range []struct {
		mapName string
		key     string
		peer    netip.Addr
	}{{"egress-pods", veth(src), dst}, {"ingress-pods", veth(dst), src}} {
		chain := ""
		for _, e := range tbl.Set(step.mapName).Elements {
			if step.key != "" && e.Key[0] == step.key {
				chain = e.Verdict.Chain
			}
		}
		if chain == "" {
			continue
		}
		c := tbl.Chain(chain)
		if len(c.Rules) != 3 || c.Rules[2].Verdict.Kind != spec.VerdictDrop {
			t.Fatalf("chain %s does not have the fixed three rules", chain)
		}
		values := []string{step.peer.String(), proto, fmt.Sprint(port)}
		if !inSet(tbl.Set(c.Rules[0].Match[0].Set), values) && !inSet(tbl.Set(c.Rules[1].Match[0].Set), values[:1]) {
			return false
		}
	}
	return true
}

func inSet(s *spec.NFTSet, values []string) bool {
	for _, e := range s.Elements {
		match := true
		for i, part := range e.Key {
			lo, hi, _ := spec.ValueRange(part)
			v, _, _ := spec.ValueRange(values[i])
			if v < lo || v > hi {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func TestRenderedPolicyMatchesAPISemantics(t *testing.T) {
	for seed := uint64(1); seed <= 40; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		w, in := randomWorld(rng)
		state, err := Render(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := state.Validate(); err != nil {
			t.Fatalf("seed %d: invalid document: %v", seed, err)
		}
		var addrs []netip.Addr
		for _, p := range w.pods {
			addrs = append(addrs, netip.MustParseAddr(p.Status.PodIP))
		}
		addrs = append(addrs, netip.MustParseAddr("198.19.9.9"), netip.MustParseAddr("198.18.7.1"))
		for i := 0; i < 3000; i++ {
			src, dst := addrs[rng.IntN(len(addrs))], addrs[rng.IntN(len(addrs))]
			proto := []string{"tcp", "udp", "sctp"}[rng.IntN(3)]
			port := []uint16{53, 80, 81, 443, 8080, 8081, 9000}[rng.IntN(7)]
			want := w.refAllowed(src, dst, proto, port)
			if got := nftAllowed(t, state, src, dst, proto, port); got != want {
				t.Fatalf("seed %d: %s -> %s %s/%d: rendered table says allowed=%v, the API says %v\npolicies:\n%s",
					seed, src, dst, proto, port, got, want, describe(w.policies))
			}
		}
	}
}

func describe(nps []*networkingv1.NetworkPolicy) string {
	s := ""
	for _, np := range nps {
		s += fmt.Sprintf("%s/%s: %+v\n", np.Namespace, np.Name, np.Spec)
	}
	return s
}

func randomWorld(rng *rand.Rand) (*world, Inputs) {
	w := &world{node: "n1", nsLabels: map[string]map[string]string{}}
	in := Inputs{Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"}}}
	nss := []string{"x", "y", "z"}
	for _, ns := range nss {
		l := map[string]string{"team": []string{"a", "b"}[rng.IntN(2)]}
		w.nsLabels[ns] = l
		l2 := map[string]string{corev1.LabelMetadataName: ns}
		for k, v := range l {
			l2[k] = v
		}
		w.nsLabels[ns] = l2
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: l}})
	}
	for i := 0; i < 12; i++ {
		ns := nss[i%3]
		local := i < 8
		ip := fmt.Sprintf("198.18.0.%d", 10+i)
		node := "n1"
		if !local {
			ip, node = fmt.Sprintf("198.18.1.%d", 10+i), "n2"
		}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i),
				Labels: map[string]string{"app": []string{"web", "db", "api"}[rng.IntN(3)], "tier": []string{"1", "2"}[rng.IntN(2)]}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: int32([]int{80, 8080}[rng.IntN(2)])},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			}}}},
			Status: corev1.PodStatus{PodIP: ip},
		}
		w.pods = append(w.pods, p)
		in.Pods = append(in.Pods, p)
		if local {
			in.Allocations = append(in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: ns, Name: p.Name},
				Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + p.Name}})
		}
	}
	for i := rng.IntN(5) + 1; i > 0; i-- {
		w.policies = append(w.policies, randomPolicy(rng, i, nss))
	}
	in.Policies = w.policies
	return w, in
}

func randomPolicy(rng *rand.Rand, i int, nss []string) *networkingv1.NetworkPolicy {
	sel := func() *metav1.LabelSelector {
		switch rng.IntN(4) {
		case 0:
			return &metav1.LabelSelector{}
		case 1:
			return &metav1.LabelSelector{MatchLabels: map[string]string{"app": []string{"web", "db", "api"}[rng.IntN(3)]}}
		case 2:
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"1"}}}}
		}
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}}
	}
	peers := func() []networkingv1.NetworkPolicyPeer {
		var out []networkingv1.NetworkPolicyPeer
		for n := rng.IntN(3); n > 0; n-- {
			switch rng.IntN(4) {
			case 0:
				out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: sel()})
			case 1:
				out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": []string{"a", "b"}[rng.IntN(2)]}}})
			case 2:
				out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{}, PodSelector: sel()})
			default:
				out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/23", Except: []string{fmt.Sprintf("198.18.%d.%d/30", rng.IntN(2), 8+4*rng.IntN(3))}}})
			}
		}
		return out
	}
	ports := func() []networkingv1.NetworkPolicyPort {
		tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
		var out []networkingv1.NetworkPolicyPort
		for n := rng.IntN(3); n > 0; n-- {
			switch rng.IntN(5) {
			case 0:
				v := intstr.FromInt32(80)
				out = append(out, networkingv1.NetworkPolicyPort{Port: &v})
			case 1:
				v, end := intstr.FromInt32(8000), int32(8080)
				out = append(out, networkingv1.NetworkPolicyPort{Port: &v, EndPort: &end, Protocol: &tcp})
			case 2:
				v := intstr.FromString("http")
				out = append(out, networkingv1.NetworkPolicyPort{Port: &v})
			case 3:
				v := intstr.FromString("dns")
				out = append(out, networkingv1.NetworkPolicyPort{Port: &v, Protocol: &udp})
			default:
				out = append(out, networkingv1.NetworkPolicyPort{Protocol: &udp})
			}
		}
		return out
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nss[rng.IntN(3)], Name: fmt.Sprintf("np%d", i)},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *sel()}}
	for n := rng.IntN(3); n > 0; n-- {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: peers(), Ports: ports()})
	}
	for n := rng.IntN(3); n > 0; n-- {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: peers(), Ports: ports()})
	}
	switch rng.IntN(3) {
	case 0:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	return np
}
