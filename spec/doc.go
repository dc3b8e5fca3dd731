// Package spec defines NodeState, the desired-state document of one node:
// the only contract between render (which computes it from Kubernetes
// objects) and apply/cloud (which converge the kernel and the cloud to it).
//
// The document is plain data. Every item has a stable key, every section has
// a canonical order (Canonicalize), and Validate reports errors that name the
// item and the field. Printing the same document twice gives the same bytes.
package spec

// APIVersion and the kinds of the documents this project reads and writes.
const (
	APIVersion     = "terway/v1"
	KindNodeState  = "NodeState"
	KindAllocation = "Allocation"
	KindENI        = "ENI"
	KindConfig     = "Config"
)

// Ownership marks (DESIGN.md §4). They are chosen once and never change:
// a node upgraded to a new version must still recognise what the old one made.
const (
	// RouteProtocol is the rtnetlink protocol number on every route we own.
	// 0xfa is unassigned in /etc/iproute2/rt_protos and by the kernel.
	RouteProtocol = 250

	// RulePriorityToPod sends traffic addressed to a pod IP through the main
	// table, ahead of the per-ENI source rules.
	RulePriorityToPod = 1510
	// RulePriorityFromPod sends traffic from an ENI-mode pod to its ENI's table.
	RulePriorityFromPod = 1520
	// RulePriorityMin and RulePriorityMax bound the rule priorities we own;
	// a rule outside the band is never observed, changed or deleted.
	RulePriorityMin = 1500
	RulePriorityMax = 1599

	// ENITableBase + an ENI's device index is that ENI's route table, so the
	// number survives reboots and re-attachments (an ifindex would not).
	ENITableBase = 1000
	// ENITableMax is the last table id we own; device indexes stay below 100.
	ENITableMax = 1099
	// MainTable is the kernel's main routing table.
	MainTable = 254

	// HostVethPrefix starts the name of every host-side veth we create.
	HostVethPrefix = "tw"
	// NFTTable is the one nftables table we own, in family NFTFamily.
	NFTTable  = "terway"
	NFTFamily = "inet"

	// PodGateway is the link-local next hop every veth pod routes through;
	// a permanent neighbour entry makes it resolve to the host veth's MAC.
	PodGateway = "169.254.1.1"
)

// HostNetns is how an item says it lives in the node's own network
// namespace (the namespace the agent runs in). Any other value is a path
// to a namespace file: /var/run/netns/NAME or /proc/PID/ns/net.
const HostNetns = ""
