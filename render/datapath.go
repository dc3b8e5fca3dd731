package render

import (
	"net"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/spec"
)

// fieldError is a validation failure of one field of an input object.
type fieldError struct{ field, reason string }

func validateENI(e *spec.ENI) *fieldError {
	switch {
	case e.Metadata.Name == "":
		return &fieldError{"metadata.name", "an ENI needs its id as name"}
	case !validMAC(e.Spec.MAC):
		return &fieldError{"spec.mac", "\"" + e.Spec.MAC + "\" is not a MAC address"}
	case !validIPv4(e.Spec.PrimaryIP):
		return &fieldError{"spec.primaryIP", "\"" + e.Spec.PrimaryIP + "\" is not an IPv4 address"}
	case !validIPv4(e.Spec.Gateway):
		return &fieldError{"spec.gateway", "\"" + e.Spec.Gateway + "\" is not an IPv4 address"}
	case e.Spec.DeviceIndex < 1 || spec.ENITableBase+e.Spec.DeviceIndex > spec.ENITableMax:
		return &fieldError{"spec.deviceIndex", "must be between 1 and 99 (0 is the primary ENI, which pods never use)"}
	}
	if p, err := netip.ParsePrefix(e.Spec.VSwitchCIDR); err != nil || !p.Addr().Is4() {
		return &fieldError{"spec.vswitchCIDR", "\"" + e.Spec.VSwitchCIDR + "\" is not an IPv4 CIDR"}
	}
	for _, ip := range e.Spec.SecondaryIPs {
		if !validIPv4(ip) {
			return &fieldError{"spec.secondaryIPs", "\"" + ip + "\" is not an IPv4 address"}
		}
	}
	return nil
}

// WantsExclusiveENI reports whether any container requests aliyun/eni: the
// pod gets a whole ENI.
func WantsExclusiveENI(pod *corev1.Pod) bool {
	if pod == nil {
		return false
	}
	for _, c := range pod.Spec.Containers {
		for _, list := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
			if q, ok := list[ExclusiveENIResource]; ok && !q.IsZero() {
				return true
			}
		}
	}
	return false
}

// renderPod validates a local pod's allocation and renders its network.
func (r *renderer) renderPod(p *podInfo) {
	a := p.alloc
	if a == nil {
		r.podProblem(p, "allocation", "no allocation: the CNI has not set this pod up yet")
		return
	}
	switch {
	case !p.ip.IsValid():
		r.podProblem(p, "allocation.spec.ip", "%q is not an IPv4 address", a.Spec.IP)
		return
	case a.Spec.Netns == "":
		r.podProblem(p, "allocation.spec.netns", "the pod's network namespace path is missing")
		return
	}
	if other := r.ipOwners[p.ip]; other != nil {
		// Pods render in key order, so the first holder keeps the IP.
		r.podProblem(p, "allocation.spec.ip", "%s is already used by pod %s", p.ip, other.key)
		r.crossPod = true
		p.ip = netip.Addr{}
		return
	}
	r.ipOwners[p.ip] = p
	r.podDatapath(p)
}

// renderPodDatapath renders the datapath of a pod whose allocation renderPod
// has checked and whose address it has claimed: what podDatapath keeps.
func (r *renderer) renderPodDatapath(p *podInfo) {
	a := p.alloc
	entry := spec.Pod{
		Key: p.key, ContainerID: a.Spec.ContainerID, Netns: a.Spec.Netns, IfName: ifNameOf(a),
		IP: p.ip.String(), ENI: a.Spec.ENI, HostVeth: spec.HostVethName(p.key), UID: a.Spec.UID,
	}
	if p.pod != nil {
		entry.UID = string(p.pod.UID)
	}
	switch {
	case WantsExclusiveENI(p.pod):
		entry.Mode = spec.PodModeExclusiveENI
		eni := r.enis[a.Spec.ENI]
		if eni == nil || !eni.Spec.Exclusive {
			r.podProblem(p, "allocation.spec.eni", "pod requests %s but ENI %q is not an attached exclusive ENI", ExclusiveENIResource, a.Spec.ENI)
			return
		}
		if eni.Spec.PrimaryIP != entry.IP {
			r.podProblem(p, "allocation.spec.ip", "%s is not the primary IP %s of exclusive ENI %s", entry.IP, eni.Spec.PrimaryIP, eni.Metadata.Name)
			return
		}
		r.exclusiveENIPod(entry, eni)
	case r.cfg.Mode == spec.PodModeENIMultiIP:
		entry.Mode = spec.PodModeENIMultiIP
		eni := r.enis[a.Spec.ENI]
		if eni == nil || eni.Spec.Exclusive {
			r.podProblem(p, "allocation.spec.eni", "ENI %q is not an attached shared ENI of this node", a.Spec.ENI)
			return
		}
		if !eniHasIP(eni, entry.IP) {
			r.podProblem(p, "allocation.spec.ip", "%s is not an IP of ENI %s", entry.IP, eni.Metadata.Name)
			return
		}
		r.vethPod(entry)
		table := ENITable(eni.Spec.DeviceIndex)
		r.state.Rules = append(r.state.Rules,
			spec.Rule{Priority: spec.RulePriorityToPod, To: entry.IP + "/32", Table: spec.MainTable, Pod: p.key},
			spec.Rule{Priority: spec.RulePriorityFromPod, From: entry.IP + "/32", Table: table, Pod: p.key})
	default:
		entry.Mode = spec.PodModeVPC
		entry.ENI = ""
		if !r.podCIDR.IsValid() {
			r.podProblem(p, "", "node %s has no usable pod CIDR (see the Node's problem), so VPC mode has no pod addresses", r.node)
			return
		}
		if !r.podCIDR.Contains(p.ip) {
			r.podProblem(p, "allocation.spec.ip", "%s is outside the node's podCIDR %s", entry.IP, r.podCIDR)
			return
		}
		r.vethPod(entry)
	}
	r.renderBandwidth(p, &entry)
	p.entry = &entry
}

// vethPod renders a pod reached through one veth pair: /32 on the pod side,
// a link-local gateway resolved by a permanent neighbour, and a /32 route
// plus permanent neighbour on the host side. No ARP crosses the pair.
func (r *renderer) vethPod(e spec.Pod) {
	hostMAC, podMAC := spec.HostVethMAC(e.Key), spec.PodVethMAC(e.Key)
	s := r.state
	s.Links = append(s.Links, spec.Link{
		Name: e.HostVeth, Kind: spec.LinkVeth, MAC: hostMAC, MTU: r.cfg.MTU, Pod: e.Key,
		Peer: &spec.VethPeer{Netns: e.Netns, Name: e.IfName, MAC: podMAC},
	})
	s.Addresses = append(s.Addresses, spec.Address{Netns: e.Netns, Dev: e.IfName, CIDR: e.IP + "/32", Pod: e.Key})
	s.Routes = append(s.Routes,
		spec.Route{Netns: e.Netns, Dst: "default", Gw: spec.PodGateway, Dev: e.IfName, Onlink: true, Pod: e.Key},
		spec.Route{Dst: e.IP + "/32", Dev: e.HostVeth, Scope: spec.ScopeLink, Pod: e.Key})
	s.Neighbors = append(s.Neighbors,
		spec.Neighbor{Netns: e.Netns, Dev: e.IfName, IP: spec.PodGateway, MAC: hostMAC, Pod: e.Key},
		spec.Neighbor{Dev: e.HostVeth, IP: e.IP, MAC: podMAC, Pod: e.Key})
}

// exclusiveENIPod moves the whole ENI into the pod as its interface, and adds
// a second veth pair ("veth1") that carries Service CIDR traffic to the host,
// where kube-proxy translates it.
func (r *renderer) exclusiveENIPod(e spec.Pod, eni *spec.ENI) {
	prefix := netip.MustParsePrefix(eni.Spec.VSwitchCIDR)
	hostMAC, podMAC := spec.HostVethMAC(e.Key), spec.PodVethMAC(e.Key)
	s := r.state
	s.Links = append(s.Links,
		spec.Link{Netns: e.Netns, Name: e.IfName, Kind: spec.LinkENI, MAC: eni.Spec.MAC, MTU: r.cfg.MTU, Pod: e.Key},
		spec.Link{Name: e.HostVeth, Kind: spec.LinkVeth, MAC: hostMAC, MTU: r.cfg.MTU, Pod: e.Key,
			Peer: &spec.VethPeer{Netns: e.Netns, Name: serviceIf, MAC: podMAC}})
	s.Addresses = append(s.Addresses, spec.Address{
		Netns: e.Netns, Dev: e.IfName, CIDR: netip.PrefixFrom(netip.MustParseAddr(e.IP), prefix.Bits()).String(), Pod: e.Key})
	s.Routes = append(s.Routes,
		spec.Route{Netns: e.Netns, Dst: "default", Gw: eni.Spec.Gateway, Dev: e.IfName, Pod: e.Key},
		spec.Route{Netns: e.Netns, Dst: r.cfg.ServiceCIDR, Gw: spec.PodGateway, Dev: serviceIf, Onlink: true, Pod: e.Key},
		spec.Route{Dst: e.IP + "/32", Dev: e.HostVeth, Scope: spec.ScopeLink, Pod: e.Key})
	// The node reaches the pod by veth1 (kubelet probes); the replies go
	// back the same way rather than into the VPC, which may not route to
	// the node's address, and stay on the path the pod's own table leaves
	// to the node's (policy_pod.go).
	for _, ip := range r.nodeIPs {
		s.Routes = append(s.Routes, spec.Route{Netns: e.Netns, Dst: ip.String() + "/32", Gw: spec.PodGateway, Dev: serviceIf, Onlink: true, Pod: e.Key})
	}
	s.Neighbors = append(s.Neighbors,
		spec.Neighbor{Netns: e.Netns, Dev: serviceIf, IP: spec.PodGateway, MAC: hostMAC, Pod: e.Key},
		spec.Neighbor{Dev: e.HostVeth, IP: e.IP, MAC: podMAC, Pod: e.Key})
}

// renderSharedENIs renders each attached shared ENI: its link, its route
// table (default via the vswitch gateway), and rp_filter off, since replies
// to pods arrive on the ENI while the main table points elsewhere.
func (r *renderer) renderSharedENIs() {
	for _, name := range sortedKeys(r.enis) {
		eni := r.enis[name]
		if eni.Spec.Exclusive {
			continue
		}
		link := ENILinkName(eni.Spec.DeviceIndex)
		r.state.Links = append(r.state.Links, spec.Link{Name: link, Kind: spec.LinkENI, MAC: eni.Spec.MAC, MTU: r.cfg.MTU})
		r.state.Routes = append(r.state.Routes, spec.Route{
			Table: ENITable(eni.Spec.DeviceIndex), Dst: "default", Gw: eni.Spec.Gateway, Dev: link, Onlink: true})
		r.state.Sysctls = append(r.state.Sysctls, spec.Sysctl{Path: "net/ipv4/conf/" + link + "/rp_filter", Value: "0"})
	}
}

// renderIdleExclusiveENIs keeps each attached exclusive ENI that no pod
// uses in the node, down: after its pod's DEL the ENI comes back out of
// the pod's namespace (which may be deleted next, taking a virtual NIC
// with it) until the cloud detaches it.
func (r *renderer) renderIdleExclusiveENIs() {
	used := map[string]bool{}
	for _, l := range r.state.Links {
		if l.Kind == spec.LinkENI {
			used[l.MAC] = true
		}
	}
	for _, name := range sortedKeys(r.enis) {
		eni := r.enis[name]
		if !eni.Spec.Exclusive || used[eni.Spec.MAC] {
			continue
		}
		r.state.Links = append(r.state.Links, spec.Link{Name: ENILinkName(eni.Spec.DeviceIndex), Kind: spec.LinkENI, MAC: eni.Spec.MAC, MTU: r.cfg.MTU})
	}
}

func eniHasIP(e *spec.ENI, ip string) bool {
	if e.Spec.PrimaryIP == ip {
		return true
	}
	for _, s := range e.Spec.SecondaryIPs {
		if s == ip {
			return true
		}
	}
	return false
}

func validIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

func validMAC(s string) bool {
	hw, err := net.ParseMAC(s)
	return err == nil && len(hw) == 6
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
