// Package links converges the network interfaces of a NodeState: veth pairs
// (created with the peer made directly in the pod namespace) and ENI links
// (existing interfaces found by MAC, renamed, moved into a pod namespace
// for an exclusive ENI, sized and raised). A veth's host end keeps IPv6
// on but makes no IPv6 address of its own (noIPv6Addresses says why).
//
// It also draws the ownership line for the kinds that live on links
// (addresses, neighbours, qdiscs): see Ownership. Nothing outside that line
// is ever changed: a link not named tw* in the host is never deleted, and an
// ENI is never deleted at all (it is the cloud's); one no longer wanted in a
// pod namespace goes back to the host.
package links
