package eni

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// dump reads the emulator's state; a failure fails t.
func dump(t *testing.T) *emulator.Dump {
	t.Helper()
	d, err := rntest.Need(t).EmulatorDump(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// instanceID is the node's instance in the emulated cloud.
func instanceID() string { return realnode.World().Instances[0].ID }

// attached lists the ENIs attached to the node's instance, primary aside.
func attached(d *emulator.Dump) []emulator.DumpENI {
	var out []emulator.DumpENI
	for _, e := range d.ENIs {
		if e.InstanceID == instanceID() && e.Type != "Primary" && e.DeviceIndex != 0 {
			out = append(out, e)
		}
	}
	return out
}

// eniIPs are all the ENI's IPs: in multi-IP mode a secondary ENI's own
// (primary) address serves a pod as well as its secondary ones, as in
// Terway.
func eniIPs(e emulator.DumpENI) []string { return append([]string{e.PrimaryIP}, e.IPs...) }

// eniHolding is the attached ENI with ip among its IPs.
func eniHolding(d *emulator.Dump, ip string) (emulator.DumpENI, bool) {
	for _, e := range attached(d) {
		if slices.Contains(eniIPs(e), ip) {
			return e, true
		}
	}
	return emulator.DumpENI{}, false
}

// vswitchOf returns the vSwitch's CIDR and gateway (its first address, as
// on Alibaba Cloud).
func vswitchOf(t *testing.T, id string) (netip.Prefix, netip.Addr) {
	t.Helper()
	for _, v := range realnode.World().VSwitches {
		if v.ID == id {
			p := netip.MustParsePrefix(v.CIDR)
			return p, p.Addr().Next()
		}
	}
	t.Fatalf("vSwitch %s is not in the emulator's world", id)
	return netip.Prefix{}, netip.Addr{}
}

// nodeLinkByMAC is the name of the node's link with the MAC ("" if none).
func nodeLinkByMAC(t *testing.T, mac string) string {
	t.Helper()
	out, err := rntest.InNode(t, "ip", "-o", "link", "show")
	if err != nil {
		t.Fatalf("ip link in the node: %v: %s", err, out)
	}
	return linkWithMAC(out, mac)
}

// linkWithMAC finds, in `ip -o link` output, the link whose address is mac.
func linkWithMAC(ipLink, mac string) string {
	for _, line := range strings.Split(ipLink, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(strings.ToLower(line), "link/ether "+strings.ToLower(mac)+" ") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		return name
	}
	return ""
}

// checkPodShape: the pod's eth0 holds exactly its IP as a /32 and its
// default route goes via the link-local gateway (the VPC shape, which ENI
// multi-IP pods share).
func checkPodShape(t *testing.T, ns, pod, ip string) {
	t.Helper()
	addrs := rntest.InPod(t, ns, pod, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if want := "inet " + ip + "/32 "; !strings.Contains(addrs, want) || strings.Count(addrs, "inet ") != 1 {
		t.Errorf("pod %s eth0: want exactly %q, got:\n%s", pod, want, addrs)
	}
	routes := rntest.InPod(t, ns, pod, "ip", "-4", "route", "show")
	if !strings.Contains(routes, "default via 169.254.1.1 dev eth0") || !strings.Contains(routes, "onlink") {
		t.Errorf("pod %s routes: want default via 169.254.1.1 dev eth0 onlink, got:\n%s", pod, routes)
	}
}

var ruleFrom = regexp.MustCompile(`from (\S+) lookup (\S+)`)

// checkNodeSide: the pod's traffic leaves through its own ENI: a rule
// sends what comes from the pod's IP to a table whose default route goes
// via the vSwitch's gateway over the ENI's link (found by the ENI's MAC).
func checkNodeSide(t *testing.T, ip string, e emulator.DumpENI) {
	t.Helper()
	link := nodeLinkByMAC(t, e.MAC)
	if link == "" {
		t.Fatalf("ENI %s (MAC %s) holding %s has no link in the node", e.ID, e.MAC, ip)
	}
	rules, err := rntest.InNode(t, "ip", "-4", "rule", "show")
	if err != nil {
		t.Fatalf("ip rule in the node: %v: %s", err, rules)
	}
	table := ""
	for _, m := range ruleFrom.FindAllStringSubmatch(rules, -1) {
		if m[1] == ip || m[1] == ip+"/32" {
			table = m[2]
		}
	}
	if table == "" {
		t.Fatalf("no rule `from %s lookup <ENI table>` in the node:\n%s", ip, rules)
	}
	routes, err := rntest.InNode(t, "ip", "-4", "route", "show", "table", table)
	if err != nil {
		t.Fatalf("ip route show table %s: %v: %s", table, err, routes)
	}
	_, gw := vswitchOf(t, e.VSwitchID)
	if want := fmt.Sprintf("default via %s dev %s", gw, link); !strings.Contains(routes, want) {
		t.Errorf("table %s of ENI %s: want %q, got:\n%s", table, e.ID, want, routes)
	}
}

// TestENIMultiIP: pods' IPs are IPs of ENIs the agent created and attached
// through the emulator's API, each pod has the /32 shape and its traffic
// leaves through its ENI's link (which the emulator plugged into the node
// with the ENI's MAC), the pods reach each other, directly and through a
// Service, and deleting them returns their IPs to the pool and, above its
// maximum, to the vSwitch.
func TestENIMultiIP(t *testing.T) {
	rntest.Need(t)
	// The vSwitches' count below is the node's alone only once an earlier
	// test's exclusive ENI is gone: its pod's namespace is deleted before
	// the agent gives the ENI back, and that gives the vSwitch one IP more
	// (seen once: 8184 available, want 8183).
	rntest.Eventually(t, 60*time.Second, "earlier tests' exclusive ENIs detached and deleted", func() error {
		for _, e := range dump(t).ENIs {
			if e.Tags["terway-reconciler.io/exclusive"] != "" {
				return fmt.Errorf("ENI %s: status %s, instance %q", e.ID, e.Status, e.InstanceID)
			}
		}
		return nil
	})
	ns := rntest.Namespace(t)
	pods := []string{"a", "b"}
	for _, p := range pods {
		rntest.Kubectl(t, rntest.AgnhostPod(ns, p, rntest.Pod{Labels: map[string]string{"app": p}}, "netexec", "--http-port=8080"), "apply", "-f", "-")
	}
	rntest.Kubectl(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: b, namespace: %q}\nspec:\n  selector: {app: b}\n  ports: [{port: 80, targetPort: 8080}]\n", ns), "apply", "-f", "-")
	rntest.WaitReady(t, ns, pods...)
	d := dump(t)
	ips := map[string]string{}
	for _, p := range pods {
		ip := rntest.PodIP(t, ns, p)
		ips[p] = ip
		e, ok := eniHolding(d, ip)
		if !ok {
			t.Fatalf("pod %s's IP %s is no IP of an ENI attached to %s: %+v", p, ip, instanceID(), attached(d))
		}
		if e.Status != "InUse" || e.Tags["terway-reconciler.io/exclusive"] != "" {
			t.Errorf("ENI %s holding pod %s's IP: status %s, tags %v; want a shared ENI InUse", e.ID, p, e.Status, e.Tags)
		}
		if cidr, _ := vswitchOf(t, e.VSwitchID); !cidr.Contains(netip.MustParseAddr(ip)) {
			t.Errorf("pod %s's IP %s is outside its ENI's vSwitch %s (%s)", p, ip, e.VSwitchID, cidr)
		}
		checkPodShape(t, ns, p, ip)
		checkNodeSide(t, ip, e)
		t.Logf("pod %s: %s, an IP of %s (MAC %s, vSwitch %s)", p, ip, e.ID, e.MAC, e.VSwitchID)
	}
	if ips["a"] == ips["b"] {
		t.Fatalf("both pods have %s", ips["a"])
	}
	rntest.Eventually(t, 30*time.Second, "a -> b", func() error { return rntest.Connect(t, ns, "a", ips["b"]+":8080") })
	rntest.Eventually(t, 30*time.Second, "b -> a", func() error { return rntest.Connect(t, ns, "b", ips["a"]+":8080") })
	// Through kube-proxy: a's packets to the ClusterIP are DNATed to b's
	// ENI IP before the node's rules route them.
	vip := strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "service", "b", "-o", "jsonpath={.spec.clusterIP}"))
	rntest.Eventually(t, 60*time.Second, "a -> Service b "+vip+":80", func() error { return rntest.Connect(t, ns, "a", vip+":80") })

	// DEL: both pods' IPs go back to the pool, which keeps at most maxPool
	// idle; the rest are unassigned (the vSwitch has them back).
	before := vswitchAvailable(d)
	rntest.Kubectl(t, "", "-n", ns, "delete", "pod", "a", "b", "--wait=true", "--timeout=60s")
	rntest.Eventually(t, 60*time.Second, "the deleted pods' IPs unassigned down to the pool's maximum", func() error {
		d := dump(t)
		var left []string
		for _, e := range attached(d) {
			if e.Tags["terway-reconciler.io/exclusive"] == "" {
				left = append(left, eniIPs(e)...)
			}
		}
		if len(left) != maxPool {
			return fmt.Errorf("the shared ENIs hold %v, want %d idle IP(s)", left, maxPool)
		}
		for _, ip := range left {
			if ip != ips["a"] && ip != ips["b"] {
				return fmt.Errorf("the shared ENIs hold %s, which no deleted pod had", ip)
			}
		}
		if got, want := vswitchAvailable(d), before+len(pods)-maxPool; got != want {
			return fmt.Errorf("the vSwitches have %d IPs available, want %d", got, want)
		}
		return nil
	})
}

// vswitchAvailable is how many IPs the vSwitches have left.
func vswitchAvailable(d *emulator.Dump) int {
	n := 0
	for _, v := range d.VSwitches {
		n += v.Available
	}
	return n
}

// TestExclusiveENI: the kubelet's Node advertises aliyun/eni from our
// device plugin (the instance type's ENIs less the primary and the one kept
// for multi-IP pods); a pod that requests one is scheduled, gets a whole
// ENI as its eth0 (the ENI's MAC, its primary IP, the vSwitch's gateway),
// reaches a multi-IP pod over the vSwitch and back and a Service through
// kube-proxy, and gives the ENI back when deleted.
func TestExclusiveENI(t *testing.T) {
	want := exclusiveSlots(t)
	waitAllocatable(t, want)

	ns := rntest.Namespace(t)
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "x", rntest.Pod{Limits: map[string]string{"aliyun/eni": "1"}}, "netexec", "--http-port=8080"), "apply", "-f", "-")
	// A multi-IP pod beside it, to reach over the vSwitch.
	rntest.Kubectl(t, rntest.AgnhostPod(ns, "s", rntest.Pod{Labels: map[string]string{"app": "s"}}, "netexec", "--http-port=8080"), "apply", "-f", "-")
	rntest.Kubectl(t, fmt.Sprintf("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: %q}\nspec:\n  selector: {app: s}\n  ports: [{port: 80, targetPort: 8080}]\n", ns), "apply", "-f", "-")
	rntest.WaitReady(t, ns, "x", "s")
	ip, sip := rntest.PodIP(t, ns, "x"), rntest.PodIP(t, ns, "s")
	eni := exclusiveENI(t, ns, "x")
	if l := nodeLinkByMAC(t, eni.MAC); l != "" {
		t.Errorf("ENI %s's link %s is still in the node; it belongs to pod x", eni.ID, l)
	}
	cidr, gw := vswitchOf(t, eni.VSwitchID)
	addrs := rntest.InPod(t, ns, "x", "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if want := fmt.Sprintf("inet %s/%d ", ip, cidr.Bits()); !strings.Contains(addrs, want) {
		t.Errorf("pod x eth0: want %q, got:\n%s", want, addrs)
	}
	routes := rntest.InPod(t, ns, "x", "ip", "-4", "route", "show")
	if want := fmt.Sprintf("default via %s dev eth0", gw); !strings.Contains(routes, want) {
		t.Errorf("pod x routes: want %q, got:\n%s", want, routes)
	}
	t.Logf("pod x: eth0 is ENI %s (MAC %s), %s/%d via %s", eni.ID, eni.MAC, ip, cidr.Bits(), gw)
	// x's packets leave on its own ENI to the vSwitch, which delivers them
	// to the ENI holding s's IP, and back.
	rntest.Eventually(t, 30*time.Second, "x -> s", func() error { return rntest.Connect(t, ns, "x", sip+":8080") })
	rntest.Eventually(t, 30*time.Second, "s -> x", func() error { return rntest.Connect(t, ns, "s", ip+":8080") })
	// Service traffic goes the other way: over the pod's second veth to the
	// node, where kube-proxy's rules send it to s.
	vip := strings.TrimSpace(rntest.Kubectl(t, "", "-n", ns, "get", "service", "s", "-o", "jsonpath={.spec.clusterIP}"))
	rntest.Eventually(t, 60*time.Second, "x -> Service s "+vip+":80", func() error { return rntest.Connect(t, ns, "x", vip+":80") })

	rntest.Kubectl(t, "", "-n", ns, "delete", "pod", "x", "--wait=true", "--timeout=60s")
	rntest.Eventually(t, 60*time.Second, "pod x's ENI "+eni.ID+" detached and deleted", func() error {
		for _, e := range dump(t).ENIs {
			if e.ID == eni.ID {
				return fmt.Errorf("ENI %s: status %s, instance %q", e.ID, e.Status, e.InstanceID)
			}
		}
		return nil
	})
}

// exclusiveSlots is how many aliyun/eni the node advertises: the instance
// type's ENIs less the primary and those kept for multi-IP pods.
func exclusiveSlots(t *testing.T) int {
	t.Helper()
	w := realnode.World()
	want := -1
	for _, it := range w.InstanceTypes {
		if it.ID == w.Instances[0].InstanceType {
			want = it.ENIQuantity - 1 - reservedENIs
		}
	}
	if want < 1 {
		t.Fatalf("instance type %s offers %d exclusive ENIs; the test needs one", w.Instances[0].InstanceType, want)
	}
	return want
}

// waitAllocatable waits until the Node's allocatable aliyun/eni is want.
func waitAllocatable(t *testing.T, want int) {
	t.Helper()
	c := rntest.Need(t)
	rntest.Eventually(t, 60*time.Second, fmt.Sprintf("node allocatable aliyun/eni = %d", want), func() error {
		out, err := c.Kubectl(context.Background(), "", "get", "node", c.Name, "-o", "jsonpath={.status.allocatable}")
		if err != nil {
			return err
		}
		var alloc map[string]string
		if err := json.Unmarshal([]byte(out), &alloc); err != nil {
			return fmt.Errorf("allocatable %q: %w", out, err)
		}
		if got := alloc["aliyun/eni"]; got != strconv.Itoa(want) {
			return fmt.Errorf("allocatable aliyun/eni = %q (allocatable %v)", got, alloc)
		}
		return nil
	})
}

// exclusiveENI is the ENI a Ready pod took whole: attached, InUse, its
// primary IP the pod's, no secondary IP, and its link, found by its MAC,
// the pod's eth0.
func exclusiveENI(t *testing.T, ns, pod string) emulator.DumpENI {
	t.Helper()
	ip := rntest.PodIP(t, ns, pod)
	var eni emulator.DumpENI
	for _, e := range attached(dump(t)) {
		if e.PrimaryIP == ip {
			eni = e
		}
	}
	if eni.ID == "" {
		t.Fatalf("pod %s's IP %s is the primary IP of no ENI attached to %s: %+v", pod, ip, instanceID(), attached(dump(t)))
	}
	if eni.Status != "InUse" || len(eni.IPs) != 0 {
		t.Errorf("pod %s's ENI %s: status %s, secondary IPs %v; want InUse with none", pod, eni.ID, eni.Status, eni.IPs)
	}
	links := rntest.InPod(t, ns, pod, "ip", "-o", "link", "show")
	if got := linkWithMAC(links, eni.MAC); got != "eth0" {
		t.Errorf("pod %s: the link with ENI %s's MAC %s is %q, want eth0:\n%s", pod, eni.ID, eni.MAC, got, links)
	}
	return eni
}
