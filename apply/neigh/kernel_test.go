package neigh_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/neigh"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Neighbor, spec.Neighbor]{
	Observe: neigh.Observe,
	Diff:    neigh.Diff,
	Items:   func(s *spec.NodeState) []spec.Neighbor { return s.Neighbors },
}

func podLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s neighbor 169.254.1.1 lladdr %s dev eth0 nud permanent netns %s", sign, p.HostMAC, p.Netns)
}

func hostLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s neighbor %s lladdr %s dev %s nud permanent", sign, p.IP, p.PodMAC, p.HostVeth)
}

// permanent reads the permanent entries of a link with ip(8) and netlink,
// as "ip mac" lines.
func permanent(t *testing.T, netns, dev string) (ip, nl []string) {
	t.Helper()
	for _, n := range kindstest.JSON(t, netns, "ip", "-j", "-4", "neigh", "show", "dev", dev, "nud", "permanent") {
		ip = append(ip, kindstest.Str(n, "dst")+" "+kindstest.Str(n, "lladdr"))
	}
	h := kindstest.Handle(t, netns)
	l, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	es, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.State&netlink.NUD_PERMANENT != 0 {
			nl = append(nl, e.IP.String()+" "+e.HardwareAddr.String())
		}
	}
	slices.Sort(ip)
	slices.Sort(nl)
	return ip, nl
}

func wantNeigh(t *testing.T, netns, dev string, want ...string) {
	t.Helper()
	slices.Sort(want)
	ip, nl := permanent(t, netns, dev)
	if !slices.Equal(ip, want) || !slices.Equal(nl, want) {
		t.Fatalf("%s in %s: ip says %v, netlink says %v, want %v", dev, netns, ip, nl, want)
	}
}

func TestNeighLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 2)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	doc := kindstest.VPC(e.Pods)
	pods := []kindstest.Pod{kindstest.PodFor(0, e.Pods[0]), kindstest.PodFor(1, e.Pods[1])}
	kindstest.ApplyLinks(t, e, doc)
	hostOrder := slices.Clone(pods)
	slices.SortFunc(hostOrder, func(a, b kindstest.Pod) int { return strings.Compare(a.HostVeth, b.HostVeth) })

	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops, hostLine("+", hostOrder[0]), hostLine("+", hostOrder[1]), podLine("+", pods[0]), podLine("+", pods[1]))
	if w := kindstest.Writes(ops); w != 4 {
		t.Errorf("writes = %d, want 4", w)
	}
	check := func() {
		t.Helper()
		for _, p := range pods {
			wantNeigh(t, p.Netns, "eth0", "169.254.1.1 "+p.HostMAC)
			wantNeigh(t, e.Node, p.HostVeth, p.IP+" "+p.PodMAC)
		}
	}
	check()

	// Tamper: a MAC changed, one deleted, one made dynamic, a stray one.
	kindstest.Run(t, pods[0].Netns, "ip", "neigh", "replace", "169.254.1.1", "lladdr", "02:00:00:00:00:aa", "dev", "eth0", "nud", "permanent")
	kindstest.Run(t, e.Node, "ip", "neigh", "del", pods[1].IP, "dev", pods[1].HostVeth)
	kindstest.Run(t, pods[1].Netns, "ip", "neigh", "replace", "169.254.1.1", "lladdr", pods[1].HostMAC, "dev", "eth0", "nud", "reachable")
	kindstest.Run(t, e.Node, "ip", "neigh", "add", "198.18.9.9", "lladdr", "02:00:00:00:00:bb", "dev", pods[0].HostVeth, "nud", "permanent")
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		"- neighbor 198.18.9.9 lladdr 02:00:00:00:00:bb dev "+pods[0].HostVeth+" nud permanent",
		hostLine("+", pods[1]),
		podLine("~", pods[0])+": lladdr 02:00:00:00:00:aa → "+pods[0].HostMAC,
		podLine("+", pods[1]))
	check()

	// Removing a pod's entries removes only them.
	doc2 := *doc
	doc2.Neighbors = slices.DeleteFunc(slices.Clone(doc.Neighbors), func(n spec.Neighbor) bool { return n.Pod == pods[1].Key })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc2), hostLine("-", pods[1]), podLine("-", pods[1]))
	wantNeigh(t, pods[1].Netns, "eth0")
	wantNeigh(t, e.Node, pods[1].HostVeth)
	wantNeigh(t, pods[0].Netns, "eth0", "169.254.1.1 "+pods[0].HostMAC)

	kindstest.SameForeign(t, e, before)
}
