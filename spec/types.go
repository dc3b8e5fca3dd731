package spec

import (
	"slices"
	"strings"
)

// NodeState is the desired network state of one node.
type NodeState struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Node is the Kubernetes node this document is for.
	Node string `json:"node"`
	// Mode is the node's IP mode: "vpc" or "eni-multi-ip".
	Mode string `json:"mode"`

	Links     []Link     `json:"links,omitempty"`
	Addresses []Address  `json:"addresses,omitempty"`
	Routes    []Route    `json:"routes,omitempty"`
	Rules     []Rule     `json:"rules,omitempty"`
	Neighbors []Neighbor `json:"neighbors,omitempty"`
	Sysctls   []Sysctl   `json:"sysctls,omitempty"`
	NFTables  *NFTable   `json:"nftables,omitempty"`
	// PodNFTables are tables inet terway inside pods' own namespaces, one
	// per pod whose traffic does not cross the node (an exclusive ENI).
	PodNFTables []PodNFTable `json:"podNftables,omitempty"`
	TC          []Qdisc      `json:"tc,omitempty"`
	ENI         *ENINeeds    `json:"eni,omitempty"`
	// Pods are the node's pods with a network. A document made from
	// another (render's patch, on every CNI request) shares the entries of
	// its unchanged pods: the patch copies a list of pointers rather than
	// every entry (60 KiB per ADD at 250 pods). So an entry in a document
	// is never changed; a new value is a new entry.
	Pods []*Pod `json:"pods,omitempty"`
	// Problems lists inputs that could not be rendered. The objects named
	// here contributed nothing (or, for policy, fail closed); every other
	// object rendered normally.
	Problems []Problem `json:"problems,omitempty"`
}

// Link kinds.
const (
	LinkVeth = "veth"
	LinkENI  = "eni"
)

// Link is a network interface we create or adopt.
//
// A veth item describes the whole pair: Name in Netns is one end, Peer the
// other. An eni item is an existing interface found by MAC, renamed to Name
// and, for an exclusive ENI, moved into Netns.
type Link struct {
	Netns string `json:"netns,omitempty"`
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	// MAC is the address the link must have. For veths it is derived from the
	// pod so that the peer's permanent neighbour entry stays valid across
	// re-creation; for ENIs it identifies the link.
	MAC  string    `json:"mac,omitempty"`
	MTU  int       `json:"mtu,omitempty"`
	Peer *VethPeer `json:"peer,omitempty"`
	// Pod is the key (namespace/name) of the pod the link belongs to, if any.
	Pod string `json:"pod,omitempty"`
}

// VethPeer is the other end of a veth pair.
type VethPeer struct {
	Netns string `json:"netns,omitempty"`
	Name  string `json:"name"`
	MAC   string `json:"mac,omitempty"`
}

// Address is an IP address with its prefix length on a link.
type Address struct {
	Netns string `json:"netns,omitempty"`
	Dev   string `json:"dev"`
	// CIDR is the address and prefix, e.g. 198.18.0.10/32.
	CIDR string `json:"cidr"`
	Pod  string `json:"pod,omitempty"`
}

// Route scopes.
const (
	ScopeUniverse = "universe"
	ScopeLink     = "link"
)

// Route is an IPv4 route. Every route we own carries RouteProtocol.
type Route struct {
	Netns string `json:"netns,omitempty"`
	// Table is the routing table id; 0 means the main table.
	Table int `json:"table,omitempty"`
	// Dst is a CIDR, or "default".
	Dst    string `json:"dst"`
	Gw     string `json:"gw,omitempty"`
	Dev    string `json:"dev"`
	Scope  string `json:"scope,omitempty"`
	Onlink bool   `json:"onlink,omitempty"`
	Pod    string `json:"pod,omitempty"`
}

// Rule is a policy routing rule in the host namespace.
type Rule struct {
	Netns    string `json:"netns,omitempty"`
	Priority int    `json:"priority"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
	Table    int    `json:"table"`
	Pod      string `json:"pod,omitempty"`
}

// Neighbor is a permanent IPv4 neighbour (ARP) entry.
type Neighbor struct {
	Netns string `json:"netns,omitempty"`
	Dev   string `json:"dev"`
	IP    string `json:"ip"`
	MAC   string `json:"mac"`
	Pod   string `json:"pod,omitempty"`
}

// Sysctl is one key under /proc/sys/ in a namespace, written with slashes
// (net/ipv4/ip_forward) so that interface names with dots stay unambiguous.
type Sysctl struct {
	Netns string `json:"netns,omitempty"`
	Path  string `json:"path"`
	Value string `json:"value"`
	Pod   string `json:"pod,omitempty"`
}

// Qdisc kinds.
const QdiscTBF = "tbf"

// Qdisc is a root queueing discipline on a link we own. Its handle is always
// 1: (deterministic), so a rate change replaces the qdisc in place.
type Qdisc struct {
	Netns string `json:"netns,omitempty"`
	Dev   string `json:"dev"`
	Kind  string `json:"kind"`
	// RateBitsPerSecond is the TBF rate.
	RateBitsPerSecond uint64 `json:"rateBitsPerSecond"`
	// BurstBytes is the bucket size.
	BurstBytes uint32 `json:"burstBytes"`
	// LimitBytes is how many bytes may wait in the queue.
	LimitBytes uint32 `json:"limitBytes"`
	// Direction says which way the shaped traffic goes, for people:
	// "ingress" (into the pod) or "egress" (out of the pod).
	Direction string `json:"direction,omitempty"`
	Pod       string `json:"pod,omitempty"`
}

// PodNFTable is table inet terway inside one pod's network namespace, the
// NetworkPolicy of a pod whose traffic never crosses the node's forward
// chain: an exclusive-ENI pod's eth0 leads straight into the VPC. It is
// rendered from the same policy groups as the node's table, with input and
// output base chains, and converged like the node's table, in the pod's
// namespace.
type PodNFTable struct {
	// Pod is the key (namespace/name) of the pod the table belongs to.
	Pod   string  `json:"pod"`
	Netns string  `json:"netns"`
	Table NFTable `json:"table"`
}

// Pod modes.
const (
	PodModeVPC          = "vpc"
	PodModeENIMultiIP   = "eni-multi-ip"
	PodModeExclusiveENI = "exclusive-eni"
)

// Pod is the index entry of one pod attachment: what the CNI reported and
// where its items are. Items of the pod carry its Key in their Pod field.
type Pod struct {
	Key         string `json:"key"`
	UID         string `json:"uid,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	Netns       string `json:"netns"`
	IfName      string `json:"ifName"`
	IP          string `json:"ip"`
	Mode        string `json:"mode"`
	ENI         string `json:"eni,omitempty"`
	HostVeth    string `json:"hostVeth,omitempty"`
	// IngressChain and EgressChain name the nft chain of the pod's policy
	// group for that direction; empty when no NetworkPolicy isolates the pod
	// that way.
	IngressChain string `json:"ingressChain,omitempty"`
	EgressChain  string `json:"egressChain,omitempty"`
}

// PodEntry finds pod key's entry in s, whose pods are in canonical order
// (by key, as CanonicalizeOrder sorts them; render's documents are
// canonical), by binary search: nil when s has none. The entry is the
// document's own, shared with every document made from it: it must not be
// changed.
func (s *NodeState) PodEntry(key string) *Pod {
	i, found := slices.BinarySearchFunc(s.Pods, key, func(p *Pod, key string) int { return strings.Compare(p.Key, key) })
	if !found {
		return nil
	}
	return s.Pods[i]
}

// Problem is an input that could not be rendered: the object, the field and
// the reason.
type Problem struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Field     string `json:"field,omitempty"`
	Reason    string `json:"reason"`
}

// String formats the problem as one line for logs and the CLI.
func (p Problem) String() string {
	obj := p.Kind + " " + p.Name
	if p.Namespace != "" {
		obj = p.Kind + " " + p.Namespace + "/" + p.Name
	}
	if p.Field != "" {
		return obj + ": " + p.Field + ": " + p.Reason
	}
	return obj + ": " + p.Reason
}
