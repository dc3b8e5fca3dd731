package kindstest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// Links is the links kind, for tests of the kinds that need links first.
var Links = Kind[spec.Link, links.Observed]{
	Observe: links.Observe,
	Diff:    links.Diff,
	Items:   func(s *spec.NodeState) []spec.Link { return s.Links },
}

// ApplyLinks converges the document's links, as the engine does before
// the kinds that live on them.
func ApplyLinks(t testing.TB, e *Env, s *spec.NodeState) {
	t.Helper()
	Links.Converge(t, e, s)
}

// Foreign names the objects AddForeign makes.
const (
	// ForeignDummy is a plain link (a port-less bridge: the test kernel may
	// lack the dummy driver) in the node namespace with an address, a
	// permanent neighbour and routes of another protocol via it.
	ForeignDummy = "fbr0"
	// ForeignVeth is a veth pair not named tw*, with a TBF on ForeignVeth.
	ForeignVeth     = "fx0"
	ForeignVethPeer = "fx1"
	// ForeignTw is named like our host veths but is not a veth.
	ForeignTw = "twfake0"
	// ForeignPodLink is a link in the first pod namespace the document
	// does not name.
	ForeignPodLink = "fp0"
	// ForeignRulePriority is just below our band.
	ForeignRulePriority = "1400"
	// ForeignTable is just above our ENI table range.
	ForeignTable = "1100"
)

// AddForeign puts objects we do not own into the node namespace and the
// first pod namespace (if any): links, addresses, routes with protocol
// static in main, in table ForeignTable and in an ENI-range table, a rule
// at ForeignRulePriority, permanent neighbours, a foreign qdisc and a
// sysctl. Snapshot reads them back.
func AddForeign(t testing.TB, e *Env) {
	t.Helper()
	n := e.Node
	for _, cmd := range [][]string{
		{"ip", "link", "add", ForeignDummy, "type", "bridge"},
		{"ip", "link", "set", ForeignDummy, "up"},
		{"ip", "addr", "add", "198.18.200.1/24", "dev", ForeignDummy},
		{"ip", "neigh", "add", "198.18.200.2", "lladdr", "02:ff:00:00:00:02", "dev", ForeignDummy, "nud", "permanent"},
		{"ip", "route", "add", "198.18.201.0/24", "via", "198.18.200.2", "dev", ForeignDummy, "proto", "static"},
		{"ip", "route", "add", "198.18.201.0/24", "via", "198.18.200.2", "dev", ForeignDummy, "proto", "static", "table", ForeignTable},
		{"ip", "route", "add", "default", "via", "198.18.200.2", "dev", ForeignDummy, "proto", "static", "table", "1001"},
		{"ip", "rule", "add", "from", "198.18.202.0/24", "lookup", ForeignTable, "priority", ForeignRulePriority},
		{"ip", "link", "add", ForeignVeth, "type", "veth", "peer", "name", ForeignVethPeer},
		{"ip", "link", "set", ForeignVeth, "up"},
		{"ip", "link", "set", ForeignVethPeer, "up"},
		{"ip", "addr", "add", "198.18.203.1/24", "dev", ForeignVeth},
		{"ip", "neigh", "add", "198.18.203.2", "lladdr", "02:ff:00:00:00:03", "dev", ForeignVeth, "nud", "permanent"},
		{"tc", "qdisc", "add", "dev", ForeignVeth, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms"},
		{"ip", "link", "add", ForeignTw, "type", "bridge"},
		{"ip", "link", "set", ForeignTw, "up"},
		{"ip", "addr", "add", "198.18.204.1/24", "dev", ForeignTw},
		{"tc", "qdisc", "add", "dev", ForeignTw, "root", "handle", "1:", "tbf", "rate", "2mbit", "burst", "32kbit", "latency", "400ms"},
		{"sysctl", "-q", "-w", "net.ipv4.conf." + ForeignDummy + ".rp_filter=2"},
	} {
		Run(t, n, cmd...)
	}
	if len(e.Pods) > 0 {
		p := e.Pods[0]
		for _, cmd := range [][]string{
			{"ip", "link", "add", ForeignPodLink, "type", "bridge"},
			{"ip", "link", "set", ForeignPodLink, "up"},
			{"ip", "addr", "add", "198.18.205.1/24", "dev", ForeignPodLink},
			{"ip", "route", "add", "198.18.206.0/24", "via", "198.18.205.2", "dev", ForeignPodLink, "proto", "static"},
			{"ip", "neigh", "add", "198.18.205.2", "lladdr", "02:ff:00:00:00:05", "dev", ForeignPodLink, "nud", "permanent"},
			{"tc", "qdisc", "add", "dev", ForeignPodLink, "root", "handle", "1:", "tbf", "rate", "3mbit", "burst", "32kbit", "latency", "400ms"},
		} {
			Run(t, p, cmd...)
		}
	}
}

// Snapshot is the tools' JSON view of the foreign objects, to compare
// byte for byte before and after our changes.
func Snapshot(t testing.TB, e *Env) string {
	t.Helper()
	var b strings.Builder
	read := func(ns string, args ...string) {
		b.WriteString(strings.Join(args, " ") + "\n")
		b.WriteString(Run(t, ns, args...))
		b.WriteString("\n")
	}
	n := e.Node
	for _, dev := range []string{ForeignDummy, ForeignVeth, ForeignVethPeer, ForeignTw} {
		// No -d: a bridge's details include running timers.
		read(n, "ip", "-j", "link", "show", "dev", dev)
		read(n, "ip", "-j", "-4", "addr", "show", "dev", dev)
		read(n, "ip", "-j", "neigh", "show", "dev", dev, "nud", "permanent")
		read(n, "tc", "-j", "qdisc", "show", "dev", dev)
	}
	read(n, "ip", "-j", "route", "show", "table", "all", "proto", "static")
	read(n, "ip", "-j", "rule", "show", "priority", ForeignRulePriority)
	read(n, "sysctl", "net.ipv4.conf."+ForeignDummy+".rp_filter")
	if len(e.Pods) > 0 {
		p := e.Pods[0]
		read(p, "ip", "-j", "link", "show", "dev", ForeignPodLink)
		read(p, "ip", "-j", "-4", "addr", "show", "dev", ForeignPodLink)
		read(p, "ip", "-j", "neigh", "show", "dev", ForeignPodLink, "nud", "permanent")
		read(p, "ip", "-j", "route", "show", "table", "all", "proto", "static")
		read(p, "tc", "-j", "qdisc", "show", "dev", ForeignPodLink)
	}
	return b.String()
}

// SameForeign fails the test if the foreign objects changed since before.
func SameForeign(t testing.TB, e *Env, before string) {
	t.Helper()
	if after := Snapshot(t, e); after != before {
		t.Fatalf("foreign objects changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// AddENI makes a link standing in for an attached ENI: a veth whose
// other end is in the env's vpc namespace (the vswitch), with the cloud's
// MAC, under a name we did not pick, down, as a fresh attachment is.
func AddENI(t testing.TB, e *Env, name, mac string) {
	t.Helper()
	if e.VPC == "" {
		e.VPC = nstest.Netns(t, fmt.Sprintf("v%d", envSeq.Add(1)))
	}
	Run(t, e.Node, "ip", "link", "add", name, "address", mac, "type", "veth", "peer", "name", "sw-"+strings.ReplaceAll(mac[9:], ":", ""), "netns", nstest.Name(e.VPC))
}
