package explain

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Endpoint is one end of a connection: a pod (local or elsewhere), the
// node itself, or a bare address.
type Endpoint struct {
	// Key is namespace/name for a pod, "node" for the node, else the IP.
	Key string     `json:"key"`
	IP  netip.Addr `json:"ip"`
	// Pod is the Pod object, when the inputs have it.
	Pod *corev1.Pod `json:"-"`
	// Local is the pod's entry in the document when it runs on this node.
	Local *spec.Pod `json:"-"`
	Node  bool      `json:"node,omitempty"`
}

// Model is one rendered document with the inputs it came from.
type Model struct {
	Doc     *spec.NodeState
	Inputs  render.Inputs
	Table   *Table
	pods    map[string]*corev1.Pod
	byIP    map[netip.Addr]string // pod key by IP: local entries first
	local   map[string]*spec.Pod
	nodeIPs map[netip.Addr]bool
}

// New prepares a model of doc, which render made from in.
func New(in render.Inputs, doc *spec.NodeState) (*Model, error) {
	t, err := Compile(doc.NFTables)
	if err != nil {
		return nil, err
	}
	m := &Model{Doc: doc, Inputs: in, Table: t, pods: map[string]*corev1.Pod{},
		byIP: map[netip.Addr]string{}, local: map[string]*spec.Pod{}, nodeIPs: map[netip.Addr]bool{}}
	for _, p := range doc.Pods {
		m.local[p.Key] = p
		if a, err := netip.ParseAddr(p.IP); err == nil {
			m.byIP[a] = p.Key
		}
	}
	for _, p := range in.Pods {
		key := p.Namespace + "/" + p.Name
		m.pods[key] = p
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil && m.local[key] == nil {
			if _, taken := m.byIP[a]; !taken && p.Spec.NodeName != nodeName(in) {
				m.byIP[a] = key
			}
		}
	}
	if in.Node != nil {
		for _, a := range in.Node.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				m.nodeIPs[ip] = true
			}
		}
	}
	for _, a := range doc.Addresses {
		if a.Netns != spec.HostNetns {
			continue
		}
		if p, err := netip.ParsePrefix(a.CIDR); err == nil {
			m.nodeIPs[p.Addr()] = true
		}
	}
	return m, nil
}

func nodeName(in render.Inputs) string {
	if in.Node == nil {
		return ""
	}
	return in.Node.Name
}

// Resolve reads NS/POD, "node" or an IPv4 address.
func (m *Model) Resolve(s string) (Endpoint, error) {
	if s == "node" {
		for ip := range m.nodeIPs {
			if !ip.Is4() {
				continue
			}
			return Endpoint{Key: "node", IP: ip, Node: true}, nil
		}
		return Endpoint{}, fmt.Errorf("%q: the inputs give the node no IPv4 address", s)
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		if !ip.Is4() {
			return Endpoint{}, fmt.Errorf("%q: only IPv4 is supported", s)
		}
		if m.nodeIPs[ip] {
			return Endpoint{Key: "node", IP: ip, Node: true}, nil
		}
		if key, ok := m.byIP[ip]; ok {
			return m.pod(key, ip), nil
		}
		return Endpoint{Key: ip.String(), IP: ip}, nil
	}
	if !strings.Contains(s, "/") {
		return Endpoint{}, fmt.Errorf("%q: want NAMESPACE/POD, node or an IPv4 address", s)
	}
	if l := m.local[s]; l != nil {
		ip, err := netip.ParseAddr(l.IP)
		if err != nil {
			return Endpoint{}, fmt.Errorf("pod %s: document IP %q: %w", s, l.IP, err)
		}
		return m.pod(s, ip), nil
	}
	p := m.pods[s]
	if p == nil {
		return Endpoint{}, fmt.Errorf("pod %s: not in the inputs", s)
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !ip.Is4() {
		return Endpoint{}, fmt.Errorf("pod %s: no IPv4 address (not on this node and status.podIP is %q)", s, p.Status.PodIP)
	}
	return m.pod(s, ip), nil
}

func (m *Model) pod(key string, ip netip.Addr) Endpoint {
	return Endpoint{Key: key, IP: ip, Pod: m.pods[key], Local: m.local[key]}
}

// Route says which hook of the node sees a connection from src to dst and
// with which interfaces, or why none does (ok false, with the reason).
func (m *Model) Route(src, dst Endpoint) (hook, iif, oif string, ok bool, why string) {
	switch {
	case src.IP == dst.IP:
		return "", "", "", false, "source and destination are the same address: the connection stays inside that network namespace and meets no NetworkPolicy"
	case src.Local != nil && src.Local.Mode == spec.PodModeExclusiveENI:
		return "", "", "", false, fmt.Sprintf("%s has an exclusive ENI: its traffic leaves through its own ENI and does not cross the node's stack, so the node's table never sees it (its policy is not enforced yet)", src.Key)
	case dst.Local != nil && dst.Local.Mode == spec.PodModeExclusiveENI:
		return "", "", "", false, fmt.Sprintf("%s has an exclusive ENI: traffic to it arrives on its own ENI and does not cross the node's stack, so the node's table never sees it (its policy is not enforced yet)", dst.Key)
	case src.Node:
		return spec.HookOutput, "", oifOf(dst), true, ""
	case dst.Node:
		return spec.HookInput, iifOf(src), "", true, ""
	case src.Local == nil && dst.Local == nil:
		return "", "", "", false, "neither end is a pod on this node: this node's table does not see the connection"
	}
	return spec.HookForward, iifOf(src), oifOf(dst), true, ""
}

func iifOf(e Endpoint) string {
	if e.Local != nil {
		return e.Local.HostVeth
	}
	return ""
}

func oifOf(e Endpoint) string { return iifOf(e) }

// Check is the kernel's verdict for a new connection, with its trace. A
// connection the node's table never sees is allowed as far as this node
// decides, with an empty trace.
func (m *Model) Check(src, dst Endpoint, proto string, port uint16) (Result, error) {
	hook, iif, oif, ok, _ := m.Route(src, dst)
	if !ok {
		return Result{Allowed: true}, nil
	}
	return m.Table.Eval(hook, Packet{Src: src.IP, Dst: dst.IP, Proto: proto, Port: port, IIF: iif, OIF: oif})
}
