package links_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Links

// hostLine is how a plan prints the host end alone (a veth to delete).
func hostLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s link veth %s mac %s mtu 1500", sign, p.HostVeth, p.HostMAC)
}

func vethLine(sign string, p kindstest.Pod) string {
	return hostLine(sign, p) + fmt.Sprintf(" peer eth0 mac %s netns %s", p.PodMAC, p.Netns)
}

// checkPair reads a pair back with netlink and with ip(8) and compares it
// with the pod's identity.
func checkPair(t *testing.T, e *kindstest.Env, p kindstest.Pod, mtu int) {
	t.Helper()
	// netlink, through handles of our own (not the code under test's).
	hh, ph := kindstest.Handle(t, e.Node), kindstest.Handle(t, p.Netns)
	host, err := hh.LinkByName(p.HostVeth)
	if err != nil {
		t.Fatalf("host veth %s: %v", p.HostVeth, err)
	}
	pod, err := ph.LinkByName("eth0")
	if err != nil {
		t.Fatalf("pod eth0 of %s: %v", p.Key, err)
	}
	for _, c := range []struct {
		l   netlink.Link
		mac string
	}{{host, p.HostMAC}, {pod, p.PodMAC}} {
		a := c.l.Attrs()
		if c.l.Type() != "veth" || a.HardwareAddr.String() != c.mac || a.MTU != mtu || a.RawFlags&1 == 0 {
			t.Errorf("%s: type %s mac %s mtu %d flags %#x, want veth %s mtu %d up", a.Name, c.l.Type(), a.HardwareAddr, a.MTU, a.RawFlags, c.mac, mtu)
		}
	}
	if host.Attrs().ParentIndex != pod.Attrs().Index || pod.Attrs().ParentIndex != host.Attrs().Index {
		t.Errorf("%s and eth0 are not one pair", p.HostVeth)
	}
	// ip(8).
	hj := kindstest.JSON(t, e.Node, "ip", "-j", "-d", "link", "show", "dev", p.HostVeth)
	pj := kindstest.JSON(t, p.Netns, "ip", "-j", "-d", "link", "show", "dev", "eth0")
	if len(hj) != 1 || len(pj) != 1 {
		t.Fatalf("ip link show: %v %v", hj, pj)
	}
	for _, c := range []struct {
		m   map[string]any
		mac string
	}{{hj[0], p.HostMAC}, {pj[0], p.PodMAC}} {
		flags := kindstest.Str(c.m, "flags")
		info := kindstest.Str(c.m, "linkinfo")
		if kindstest.Str(c.m, "address") != c.mac || kindstest.Str(c.m, "mtu") != fmt.Sprint(mtu) ||
			!strings.Contains(flags, `"UP"`) || !strings.Contains(info, `"veth"`) {
			t.Errorf("ip link: %v, want mac %s mtu %d UP veth", c.m, c.mac, mtu)
		}
	}
	if kindstest.Str(hj[0], "link_index") != kindstest.Str(pj[0], "ifindex") || kindstest.Str(hj[0], "link_netnsid") == "" {
		t.Errorf("ip link: host end %v does not point at pod end %v", hj[0], pj[0])
	}
	// IPv6 stays on at the host end: with it off, the kernel would drop a
	// pod's IPv6 before the prerouting hook, where source validation
	// drops and counts it (terway_pod_non_ipv4_packets_total). It makes
	// no address there (noIPv6Addresses); the pod's end is as its
	// namespace makes it.
	sysctl := func(netns, dev, key string) string {
		return strings.TrimSpace(kindstest.Run(t, netns, "cat", "/proc/sys/net/ipv6/conf/"+dev+"/"+key))
	}
	for _, c := range []struct{ netns, dev, key, want string }{
		{e.Node, p.HostVeth, "disable_ipv6", "0"}, {e.Node, p.HostVeth, "addr_gen_mode", "1"},
		{p.Netns, "eth0", "addr_gen_mode", sysctl(p.Netns, "default", "addr_gen_mode")},
	} {
		if got := sysctl(c.netns, c.dev, c.key); got != c.want {
			t.Errorf("%s: %s %s, want %s", c.dev, c.key, got, c.want)
		}
	}
	// Once the carrier is up, the kernel's link watcher gives the host
	// end its multicast route and, in the same pass, any link-local
	// address: when the route is there, an address would be too.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(kindstest.Run(t, e.Node, "ip", "-6", "route", "show", "table", "local", "dev", p.HostVeth), "ff00::/8") {
		if time.Now().After(deadline) {
			t.Fatalf("host end %s has no IPv6 multicast route 5 s after its carrier came up: its addresses cannot be checked", p.HostVeth)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out := kindstest.Run(t, e.Node, "ip", "-6", "-o", "addr", "show", "dev", p.HostVeth); out != "" {
		t.Errorf("host end %s has IPv6 addresses: %s", p.HostVeth, out)
	}
}

func TestVethLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 3)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	doc := kindstest.VPC(e.Pods)
	pods := make([]kindstest.Pod, len(e.Pods))
	for i, ns := range e.Pods {
		pods[i] = kindstest.PodFor(i, ns)
	}
	byKey := func(ps ...kindstest.Pod) []kindstest.Pod {
		ps = slices.Clone(ps)
		slices.SortFunc(ps, func(a, b kindstest.Pod) int { return strings.Compare(a.HostVeth, b.HostVeth) })
		return ps
	}

	// From empty: one create per pod, four writes each.
	ops := kind.Converge(t, e, doc)
	var want []string
	for _, p := range byKey(pods...) {
		want = append(want, vethLine("+", p))
	}
	kindstest.WantPlan(t, ops, want...)
	if w := kindstest.Writes(ops); w != 12 {
		t.Errorf("writes = %d, want 12", w)
	}
	for _, p := range pods {
		checkPair(t, e, p, 1500)
	}

	// Tamper in place: MTU, admin state, peer MAC.
	kindstest.Run(t, e.Node, "ip", "link", "set", pods[0].HostVeth, "mtu", "1400")
	kindstest.Run(t, e.Node, "ip", "link", "set", pods[1].HostVeth, "down")
	kindstest.Run(t, pods[2].Netns, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99")
	fixes := map[string]string{
		pods[0].HostVeth: vethLine("~", pods[0]) + ": mtu 1400 → 1500",
		pods[1].HostVeth: vethLine("~", pods[1]) + ": set up",
		pods[2].HostVeth: vethLine("~", pods[2]) + ": peer mac 02:00:00:00:00:99 → " + pods[2].PodMAC,
	}
	want = nil
	for _, p := range byKey(pods...) {
		want = append(want, fixes[p.HostVeth])
	}
	kindstest.WantPlan(t, kind.Converge(t, e, doc), want...)
	for _, p := range pods {
		checkPair(t, e, p, 1500)
	}

	// The pod end deleted (which deletes both): recreate.
	kindstest.Run(t, pods[1].Netns, "ip", "link", "del", "eth0")
	kindstest.WantPlan(t, kind.Converge(t, e, doc), vethLine("+", pods[1]))
	checkPair(t, e, pods[1], 1500)

	// The pod end renamed: the host end has no right peer; recreate.
	kindstest.Run(t, pods[2].Netns, "ip", "link", "set", "eth0", "name", "eth9")
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		hostLine("-", pods[2]), vethLine("+", pods[2]))
	checkPair(t, e, pods[2], 1500)
	if out := kindstest.Run(t, pods[2].Netns, "ip", "-o", "link"); strings.Contains(out, "eth9") {
		t.Errorf("eth9 survived the re-creation: %s", out)
	}

	// A stray tw* veth is ours and goes; a tw* dummy is not ours and stays.
	kindstest.Run(t, e.Node, "ip", "link", "add", "twstray", "address", "02:00:00:00:01:01", "type", "veth", "peer", "name", "strayp")
	kindstest.WantPlan(t, kind.Converge(t, e, doc), "- link veth twstray mac 02:00:00:00:01:01 mtu 1500")
	if out := kindstest.Run(t, e.Node, "ip", "-o", "link"); strings.Contains(out, "stray") {
		t.Errorf("stray veth survived: %s", out)
	}

	// Removing one pod removes only its pair.
	doc1 := *doc
	doc1.Links = slices.DeleteFunc(slices.Clone(doc.Links), func(l spec.Link) bool { return l.Pod == pods[1].Key })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc1), hostLine("-", pods[1]))
	if _, err := kindstest.Handle(t, e.Node).LinkByName(pods[1].HostVeth); err == nil {
		t.Errorf("%s still exists", pods[1].HostVeth)
	}
	checkPair(t, e, pods[0], 1500)
	checkPair(t, e, pods[2], 1500)

	kindstest.SameForeign(t, e, before)
}

// TestCreateFindsThePairMadeMeanwhile: a pair that appears between the
// plan and its execution, with another MTU and down, is brought to the
// document by the create that finds it: the engine plans no second round
// after a round that only creates links.
func TestCreateFindsThePairMadeMeanwhile(t *testing.T) {
	e := kindstest.NewEnv(t, 1)
	doc := kindstest.VPC(e.Pods)
	p := kindstest.PodFor(0, e.Pods[0])
	ops := kind.Plan(t, e, doc)
	kindstest.WantPlan(t, ops, vethLine("+", p))
	kindstest.Run(t, e.Node, "ip", "link", "add", p.HostVeth, "mtu", "1400", "address", p.HostMAC, "type", "veth",
		"peer", "name", "eth0", "address", p.PodMAC, "netns", strings.TrimPrefix(p.Netns, "/var/run/netns/"))
	kindstest.Exec(t, e, ops)
	checkPair(t, e, p, 1500)
}

func TestENILifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 1)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	const hostMAC, podMAC = "00:16:3e:00:00:01", "00:16:3e:00:00:02"
	kindstest.AddENI(t, e, "ens5", hostMAC)
	kindstest.AddENI(t, e, "ens6", podMAC)
	pod := e.Pods[0]
	svc := spec.Link{Name: "tw0svc", Kind: spec.LinkVeth, MTU: 1500, Peer: &spec.VethPeer{Netns: pod, Name: "veth1"}, Pod: "default/x"}
	hostENI := spec.Link{Name: "eth1", Kind: spec.LinkENI, MAC: hostMAC, MTU: 1500}
	podENI := spec.Link{Netns: pod, Name: "eth0", Kind: spec.LinkENI, MAC: podMAC, MTU: 9000, Pod: "default/x"}
	doc := &spec.NodeState{
		Links: []spec.Link{svc, hostENI, podENI},
		ENI:   &spec.ENINeeds{ENIs: []spec.ENIWant{{Name: "eni-1", MAC: hostMAC}, {Name: "eni-2", MAC: podMAC, Exclusive: true}}},
	}
	podLine := "~ link eni eth0 mac " + podMAC + " mtu 9000 netns " + pod
	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops,
		"~ link eni eth1 mac "+hostMAC+" mtu 1500: rename ens5 → eth1, set up",
		podLine+": rename ens6 → eni00163e000002, move host → "+pod+", rename eni00163e000002 → eth0, mtu 1500 → 9000, set up",
		"+ link veth tw0svc mtu 1500 peer veth1 netns "+pod)
	if w := kindstest.Writes(ops); w != 2+5+4 {
		t.Errorf("writes = %d, want 11", w)
	}
	wantLink := func(ns, name, mac, mtu string, up bool) {
		t.Helper()
		j := kindstest.JSON(t, ns, "ip", "-j", "link", "show", "dev", name)
		if len(j) != 1 || kindstest.Str(j[0], "address") != mac || kindstest.Str(j[0], "mtu") != mtu ||
			strings.Contains(kindstest.Str(j[0], "flags"), `"UP"`) != up {
			t.Fatalf("%s in %s: %v, want mac %s mtu %s up=%v", name, ns, j, mac, mtu, up)
		}
	}
	wantLink(e.Node, "eth1", hostMAC, "1500", true)
	wantLink(pod, "eth0", podMAC, "9000", true)

	kindstest.Run(t, pod, "ip", "link", "set", "eth0", "down")
	kindstest.WantPlan(t, kind.Converge(t, e, doc), podLine+": set up")

	// No longer wanted in the pod: back to the host, parked and down.
	doc2 := *doc
	doc2.Links = []spec.Link{svc, hostENI}
	kindstest.WantPlan(t, kind.Converge(t, e, &doc2),
		"~ link eni eth0 mac "+podMAC+" netns "+pod+": not wanted here, set down, rename eth0 → eni00163e000002, move "+pod+" → host")
	wantLink(e.Node, "eni00163e000002", podMAC, "9000", false)

	// Wanted again: moved back in from its parking name.
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		podLine+": move host → "+pod+", rename eni00163e000002 → eth0, set up")
	wantLink(pod, "eth0", podMAC, "9000", true)

	// An ENI not attached yet: planned, and Exec says so.
	doc3 := *doc
	doc3.Links = append(slices.Clone(doc.Links), spec.Link{Name: "eth2", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:09"})
	ops = kind.Plan(t, e, &doc3)
	kindstest.WantPlan(t, ops, "+ link eni eth2 mac 00:16:3e:00:00:09: not attached (no interface has this MAC)")
	if err := ops[0].Exec(context.Background(), e.Reg); !errors.Is(err, links.ErrENINotAttached) {
		t.Errorf("exec = %v, want ErrENINotAttached", err)
	}

	kindstest.SameForeign(t, e, before)
}

func TestObserveSkipsMissingNamespace(t *testing.T) {
	e := kindstest.NewEnv(t, 1)
	doc := kindstest.VPC(e.Pods)
	kind.Converge(t, e, doc)
	obs, err := links.Observe(e.Reg, []string{e.Pods[0], "/var/run/netns/does-not-exist"}, doc)
	if err != nil {
		t.Fatalf("observe: %v", err)
	}
	if len(obs) != 1 {
		t.Fatalf("observed %v, want the one pair", obs)
	}
}

// BenchmarkVethCreate is the creation of a pod's veth pair, the first
// operation of every CNI ADD: 20 pairs per round made into their pods'
// namespaces (timed), then deleted (untimed).
//
//	go test -run '^$' -bench VethCreate -benchtime 10x ./apply/links/
func BenchmarkVethCreate(b *testing.B) {
	e := kindstest.NewEnv(b, 20)
	doc := kindstest.VPC(e.Pods)
	empty := *doc
	empty.Links = nil
	var created time.Duration
	for b.Loop() {
		ops := kind.Plan(b, e, doc)
		began := time.Now()
		kindstest.Exec(b, e, ops)
		created += time.Since(began)
		b.StopTimer()
		kind.Converge(b, e, &empty)
		b.StartTimer()
	}
	b.ReportMetric(float64(created.Microseconds())/float64(b.N*len(e.Pods)), "µs/pair")
}
