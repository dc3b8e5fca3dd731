package spec

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Validate checks the document's internal consistency. Each error names the
// section, the item's key and the field, e.g.
// `routes[host/table 254/198.18.0.10/32].gw: "x" is not an IPv4 address`.
func (s *NodeState) Validate() error {
	v := &validator{}
	if s.APIVersion != APIVersion {
		v.add("apiVersion", "", "is %q, want %q", s.APIVersion, APIVersion)
	}
	if s.Kind != KindNodeState {
		v.add("kind", "", "is %q, want %q", s.Kind, KindNodeState)
	}
	if s.Mode != PodModeVPC && s.Mode != PodModeENIMultiIP {
		v.add("mode", "", "is %q, want %q or %q", s.Mode, PodModeVPC, PodModeENIMultiIP)
	}
	v.links(s.Links)
	v.unique("addresses", keysOf(s.Addresses, Address.Key))
	for _, a := range s.Addresses {
		item := "addresses[" + a.Key() + "]"
		v.nonEmpty(item+".dev", a.Dev)
		if p, err := netip.ParsePrefix(a.CIDR); err != nil || !p.Addr().Is4() {
			v.add(item, "cidr", "%q is not an IPv4 address/prefix", a.CIDR)
		}
	}
	v.routes(s.Routes)
	v.rules(s.Rules)
	v.unique("neighbors", keysOf(s.Neighbors, Neighbor.Key))
	for _, n := range s.Neighbors {
		item := "neighbors[" + n.Key() + "]"
		v.nonEmpty(item+".dev", n.Dev)
		v.ipv4(item, "ip", n.IP)
		v.mac(item, "mac", n.MAC)
	}
	v.unique("sysctls", keysOf(s.Sysctls, Sysctl.Key))
	for _, c := range s.Sysctls {
		item := "sysctls[" + c.Key() + "]"
		if !sysctlKey.MatchString(c.Path) || strings.Contains(c.Path, "..") {
			v.add(item, "path", "%q is not a net/ sysctl path", c.Path)
		}
		v.nonEmpty(item+".value", c.Value)
	}
	v.unique("tc", keysOf(s.TC, Qdisc.Key))
	for _, q := range s.TC {
		item := "tc[" + q.Key() + "]"
		if q.Kind != QdiscTBF {
			v.add(item, "kind", "%q is not supported, want %q", q.Kind, QdiscTBF)
		}
		if q.RateBitsPerSecond == 0 {
			v.add(item, "rateBitsPerSecond", "must be positive")
		}
		if q.BurstBytes == 0 || q.LimitBytes == 0 {
			v.add(item, "burstBytes", "burst and limit must be positive")
		}
	}
	if s.NFTables != nil {
		v.nft("nftables", s.NFTables)
	}
	v.unique("podNftables", keysOf(s.PodNFTables, PodNFTable.Key))
	v.unique("podNftables.netns", keysOf(s.PodNFTables, func(t PodNFTable) string { return t.Netns }))
	for i := range s.PodNFTables {
		t := &s.PodNFTables[i]
		item := "podNftables[" + t.Key() + "]"
		v.nonEmpty(item+".pod", t.Pod)
		if t.Netns == HostNetns {
			v.add(item, "netns", "a pod's table must name the pod's namespace, not the node's")
		}
		v.nft(item+".table", &t.Table)
	}
	pods := slices.DeleteFunc(slices.Clone(s.Pods), func(p *Pod) bool { return p == nil })
	for i, p := range s.Pods {
		if p == nil {
			// JSON's null in the list, as for sets (validate_nft.go).
			v.add("pods["+strconv.Itoa(i)+"]", "", "null where a pod belongs")
		}
	}
	v.unique("pods", keysOf(pods, func(p *Pod) string { return p.Key }))
	for _, p := range pods {
		v.ipv4("pods["+p.Key+"]", "ip", p.IP)
	}
	return errors.Join(v.errs...)
}

var (
	sysctlKey = regexp.MustCompile(`^net/[A-Za-z0-9_./-]+$`)
	// linkName follows the kernel's rule: 1–15 bytes, no '/', ':' or space.
	linkName = regexp.MustCompile(`^[^/:\s]{1,15}$`)
	// nftName is what nft accepts as an unquoted identifier.
	nftName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_./-]{0,254}$`)
)

type validator struct{ errs []error }

func (v *validator) add(item, field, format string, args ...any) {
	where := item
	if field != "" {
		where += "." + field
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
}

func (v *validator) nonEmpty(where, value string) {
	if value == "" {
		v.add(where, "", "must not be empty")
	}
}

func (v *validator) ipv4(item, field, value string) {
	if a, err := netip.ParseAddr(value); err != nil || !a.Is4() {
		v.add(item, field, "%q is not an IPv4 address", value)
	}
}

func (v *validator) mac(item, field, value string) {
	if hw, err := net.ParseMAC(value); err != nil || len(hw) != 6 {
		v.add(item, field, "%q is not a MAC address", value)
	}
}

func (v *validator) unique(section string, keys []string) {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[k] {
			v.add(section+"["+k+"]", "", "duplicate key")
		}
		seen[k] = true
	}
}

func keysOf[T any](items []T, key func(T) string) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = key(it)
	}
	return out
}

func (v *validator) links(links []Link) {
	v.unique("links", keysOf(links, Link.Key))
	for _, l := range links {
		item := "links[" + l.Key() + "]"
		if !linkName.MatchString(l.Name) {
			v.add(item, "name", "%q is not a valid interface name (1-15 characters)", l.Name)
		}
		if l.MTU != 0 && (l.MTU < 68 || l.MTU > 65535) {
			v.add(item, "mtu", "%d is outside 68-65535", l.MTU)
		}
		if l.MAC != "" {
			v.mac(item, "mac", l.MAC)
		}
		switch l.Kind {
		case LinkVeth:
			if l.Peer == nil {
				v.add(item, "peer", "a veth needs a peer")
				continue
			}
			if !linkName.MatchString(l.Peer.Name) {
				v.add(item, "peer.name", "%q is not a valid interface name", l.Peer.Name)
			}
			if l.Peer.MAC != "" {
				v.mac(item, "peer.mac", l.Peer.MAC)
			}
		case LinkENI:
			if l.MAC == "" {
				v.add(item, "mac", "an ENI link is found by MAC and needs one")
			}
		default:
			v.add(item, "kind", "%q is not %q or %q", l.Kind, LinkVeth, LinkENI)
		}
	}
}

func (v *validator) routes(routes []Route) {
	v.unique("routes", keysOf(routes, Route.Key))
	for _, r := range routes {
		item := "routes[" + r.Key() + "]"
		if r.Dst != "default" {
			if p, err := netip.ParsePrefix(r.Dst); err != nil || !p.Addr().Is4() || p.Masked() != p {
				v.add(item, "dst", "%q is not \"default\" or a masked IPv4 CIDR", r.Dst)
			}
		}
		if r.Gw != "" {
			v.ipv4(item, "gw", r.Gw)
		}
		v.nonEmpty(item+".dev", r.Dev)
		if t := r.TableID(); t != MainTable && (t < ENITableBase || t > ENITableMax) {
			v.add(item, "table", "%d is neither main (%d) nor in our range %d-%d", t, MainTable, ENITableBase, ENITableMax)
		}
		if r.Scope != "" && r.Scope != ScopeLink && r.Scope != ScopeUniverse {
			v.add(item, "scope", "%q is not %q or %q", r.Scope, ScopeLink, ScopeUniverse)
		}
	}
}

func (v *validator) rules(rules []Rule) {
	v.unique("rules", keysOf(rules, Rule.Key))
	for _, r := range rules {
		item := "rules[" + r.Key() + "]"
		if r.Priority < RulePriorityMin || r.Priority > RulePriorityMax {
			v.add(item, "priority", "%d is outside our band %d-%d", r.Priority, RulePriorityMin, RulePriorityMax)
		}
		// In this order: a map's would change the error's text from one
		// Parse of the same document to the next.
		for _, f := range [...]struct{ field, value string }{{"from", r.From}, {"to", r.To}} {
			if f.value == "" {
				continue
			}
			if p, err := netip.ParsePrefix(f.value); err != nil || !p.Addr().Is4() {
				v.add(item, f.field, "%q is not an IPv4 CIDR", f.value)
			}
		}
		if r.From == "" && r.To == "" {
			v.add(item, "from", "a rule needs from or to")
		}
		if r.Table != MainTable && (r.Table < ENITableBase || r.Table > ENITableMax) {
			v.add(item, "table", "%d is neither main nor in our range", r.Table)
		}
	}
}
