package addrs_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/addrs"
	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Address, spec.Address]{
	Observe: addrs.Observe,
	Diff:    addrs.Diff,
	Items:   func(s *spec.NodeState) []spec.Address { return s.Addresses },
}

func podLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s address %s/32 dev eth0 netns %s", sign, p.IP, p.Netns)
}

// ipAddrs reads the IPv4 addresses of a link with ip(8) and with netlink.
func ipAddrs(t *testing.T, netns, dev string) (ip, nl []string) {
	t.Helper()
	for _, l := range kindstest.JSON(t, netns, "ip", "-j", "-4", "addr", "show", "dev", dev) {
		infos, _ := l["addr_info"].([]any)
		for _, i := range infos {
			m, _ := i.(map[string]any)
			ip = append(ip, kindstest.Str(m, "local")+"/"+kindstest.Str(m, "prefixlen"))
		}
	}
	h := kindstest.Handle(t, netns)
	link, err := h.LinkByName(dev)
	if err != nil {
		t.Fatal(err)
	}
	as, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		nl = append(nl, a.IPNet.String())
	}
	slices.Sort(ip)
	slices.Sort(nl)
	return ip, nl
}

func wantAddrs(t *testing.T, netns, dev string, want ...string) {
	t.Helper()
	slices.Sort(want)
	ip, nl := ipAddrs(t, netns, dev)
	if !slices.Equal(ip, want) || !slices.Equal(nl, want) {
		t.Fatalf("%s in %s: ip says %v, netlink says %v, want %v", dev, netns, ip, nl, want)
	}
}

func TestAddrsLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 3)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	doc := kindstest.VPC(e.Pods)
	pods := make([]kindstest.Pod, len(e.Pods))
	for i, ns := range e.Pods {
		pods[i] = kindstest.PodFor(i, ns)
	}
	// One host-side address too, to see ownership in the host.
	doc.Addresses = append(doc.Addresses, spec.Address{Dev: pods[0].HostVeth, CIDR: "198.18.1.1/32", Pod: pods[0].Key})
	doc.Canonicalize()
	kindstest.ApplyLinks(t, e, doc)

	hostLine := "address 198.18.1.1/32 dev " + pods[0].HostVeth
	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops, "+ "+hostLine, podLine("+", pods[0]), podLine("+", pods[1]), podLine("+", pods[2]))
	if w := kindstest.Writes(ops); w != 4 {
		t.Errorf("writes = %d, want 4", w)
	}
	for _, p := range pods {
		wantAddrs(t, p.Netns, "eth0", p.IP+"/32")
	}
	wantAddrs(t, e.Node, pods[0].HostVeth, "198.18.1.1/32")

	// Tamper: one deleted, an extra one on a pod's eth0 and on a host veth.
	kindstest.Run(t, pods[1].Netns, "ip", "addr", "del", pods[1].IP+"/32", "dev", "eth0")
	kindstest.Run(t, pods[2].Netns, "ip", "addr", "add", "198.18.7.7/24", "dev", "eth0")
	kindstest.Run(t, e.Node, "ip", "addr", "add", "198.18.8.8/32", "dev", pods[1].HostVeth)
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		"- address 198.18.8.8/32 dev "+pods[1].HostVeth,
		"- address 198.18.7.7/24 dev eth0 netns "+pods[2].Netns,
		podLine("+", pods[1]))
	for _, p := range pods {
		wantAddrs(t, p.Netns, "eth0", p.IP+"/32")
	}
	wantAddrs(t, e.Node, pods[1].HostVeth)

	// Removing a pod's address removes only it.
	doc2 := *doc
	doc2.Addresses = slices.DeleteFunc(slices.Clone(doc.Addresses), func(a spec.Address) bool { return a.Pod == pods[2].Key })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc2), podLine("-", pods[2]))
	wantAddrs(t, pods[2].Netns, "eth0")
	wantAddrs(t, pods[0].Netns, "eth0", pods[0].IP+"/32")
	if out := kindstest.Run(t, pods[2].Netns, "ip", "-o", "addr", "show", "dev", "lo"); !strings.Contains(out, "127.0.0.1/8") {
		t.Errorf("lo lost its address: %s", out)
	}

	kindstest.SameForeign(t, e, before)
}
