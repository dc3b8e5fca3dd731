package explain

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// PortKey is one protocol and port of a reachability matrix.
type PortKey struct {
	Protocol string `json:"protocol"` // tcp, udp or sctp
	Port     uint16 `json:"port"`
}

// Matrix is the reachability of every local pod from every local pod on
// one port, each cell from Check (the document's table).
type Matrix struct {
	PortKey
	Pods []string
	// Reachable[i][j]: Pods[i] reaches Pods[j].
	Reachable [][]bool
}

// Ports lists what the matrices consider, as the issue asks: every local
// pod's container ports and every numeric port the policies name (a named
// port is some pod's container port, already listed).
func (m *Model) Ports() []PortKey {
	set := map[PortKey]bool{}
	for _, p := range m.Inputs.Pods {
		if m.local[p.Namespace+"/"+p.Name] == nil {
			continue
		}
		for _, c := range p.Spec.Containers {
			for _, cp := range c.Ports {
				if cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
					set[PortKey{protoOf(cp.Protocol), uint16(cp.ContainerPort)}] = true
				}
			}
		}
	}
	for _, np := range m.Inputs.Policies {
		var ports []PortKey
		for _, r := range np.Spec.Ingress {
			ports = append(ports, numeric(r.Ports)...)
		}
		for _, r := range np.Spec.Egress {
			ports = append(ports, numeric(r.Ports)...)
		}
		for _, k := range ports {
			set[k] = true
		}
	}
	out := make([]PortKey, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b PortKey) int {
		if a.Protocol != b.Protocol {
			return strings.Compare(a.Protocol, b.Protocol)
		}
		return int(a.Port) - int(b.Port)
	})
	return out
}

func protoOf(p corev1.Protocol) string {
	if p == "" {
		return "tcp"
	}
	return strings.ToLower(string(p))
}

// numeric lists the numeric ports of policy port entries: a range gives
// its two ends.
func numeric(ps []networkingv1.NetworkPolicyPort) []PortKey {
	var out []PortKey
	for _, p := range ps {
		if p.Port == nil || p.Port.StrVal != "" || p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
			continue
		}
		proto := corev1.ProtocolTCP
		if p.Protocol != nil {
			proto = *p.Protocol
		}
		out = append(out, PortKey{protoOf(proto), uint16(p.Port.IntVal)})
		if p.EndPort != nil && *p.EndPort > p.Port.IntVal && *p.EndPort <= 65535 {
			out = append(out, PortKey{protoOf(proto), uint16(*p.EndPort)})
		}
	}
	return out
}

// Matrices computes one matrix per port over the document's pods, in key
// order. A pod reaching itself is reachable (the traffic stays in its
// namespace), as upstream's tests assume.
func (m *Model) Matrices(ports []PortKey) ([]Matrix, error) {
	var pods []Endpoint
	for _, p := range m.Doc.Pods {
		ip, err := netip.ParseAddr(p.IP)
		if err != nil {
			continue
		}
		pods = append(pods, m.pod(p.Key, ip))
	}
	slices.SortFunc(pods, func(a, b Endpoint) int { return strings.Compare(a.Key, b.Key) })
	var out []Matrix
	for _, k := range ports {
		mx := Matrix{PortKey: k}
		for _, p := range pods {
			mx.Pods = append(mx.Pods, p.Key)
		}
		for _, src := range pods {
			row := make([]bool, len(pods))
			for j, dst := range pods {
				res, err := m.Check(src, dst, k.Protocol, k.Port)
				if err != nil {
					return nil, err
				}
				row[j] = res.Allowed
			}
			mx.Reachable = append(mx.Reachable, row)
		}
		out = append(out, mx)
	}
	return out, nil
}
