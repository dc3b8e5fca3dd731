package op

import "github.com/vishvananda/netlink"

// FullLinkList dumps every link of the namespace, past a snapshot's
// OnlyLinks limit. A scoped plan looks host links up by the names the
// document gives them; an ENI the cloud has just attached still carries
// the name the guest gave it, so the links kind falls back to this when an
// ENI the document wants is not among the names looked up.
func FullLinkList(ns Namespaces, netns string) ([]netlink.Link, error) {
	if s, ok := ns.(*Snapshot); ok {
		ns = s.Namespaces
	}
	links, _, err := dumpLinks(ns, netns)
	return links, err
}
