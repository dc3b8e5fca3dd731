package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/internal/nstest"
)

// agentUsage is what the agent process holds of the kernel, and what the
// node namespace keeps for the pod namespaces it knows.
type agentUsage struct {
	// fds and sockets leave out the node namespace's nftables sockets:
	// the agent keeps a few open between syncs (apply/nft's connpool.go),
	// as many as syncs ran at once, not one per pod. nodeNFT counts them.
	fds, sockets int
	nodeNFT      int
	// nsids is the number of namespace ids the node namespace has given
	// (`ip netns list-id` there): one per live namespace a veth named,
	// kept while the namespace lives, and a namespace lives while anyone
	// holds a descriptor or socket in it.
	nsids int
}

func (u agentUsage) String() string {
	return fmt.Sprintf("%d fds (%d sockets; and %d nftables sockets of the node's), %d namespace ids in the node", u.fds, u.sockets, u.nodeNFT, u.nsids)
}

// nodeNFTSockets are the inodes of the netfilter netlink sockets in the
// agent's own namespace (the node's), from its /proc/PID/net/netlink.
func nodeNFTSockets(t testing.TB, pid int) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/netlink", pid))
	must(t, err)
	out := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(l)
		// sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
		if len(f) == 10 && f[1] == strconv.Itoa(unix.NETLINK_NETFILTER) {
			out[f[9]] = true
		}
	}
	return out
}

func (c *cluster) usage() agentUsage {
	c.t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", c.agent.Process.Pid)
	ents, err := os.ReadDir(dir)
	must(c.t, err)
	nft := nodeNFTSockets(c.t, c.agent.Process.Pid)
	u := agentUsage{fds: len(ents)}
	for _, e := range ents {
		l, err := os.Readlink(dir + "/" + e.Name())
		switch {
		case err != nil || !strings.HasPrefix(l, "socket:"):
		case nft[strings.Trim(strings.TrimPrefix(l, "socket:"), "[]")]:
			u.fds--
			u.nodeNFT++
		default:
			u.sockets++
		}
	}
	for _, l := range strings.Split(nstest.Run(c.t, c.node, "ip", "netns", "list-id"), "\n") {
		if strings.HasPrefix(l, "nsid ") {
			u.nsids++
		}
	}
	return u
}

// sandboxNetns makes a pod namespace the test deletes itself, as a runtime
// does after DEL; the cleanup only catches what a failing test left.
func sandboxNetns(t testing.TB, name string) (path string, del func()) {
	t.Helper()
	full := "tt" + nstest.RunID + "-" + name
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", full, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", full).Run() })
	nstest.Run(t, full, "ip", "link", "set", "lo", "up")
	return "/var/run/netns/" + full, func() {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "del", full).CombinedOutput(); err != nil {
			t.Fatalf("ip netns del %s: %v: %s", full, err, out)
		}
	}
}

// addIn runs a CNI ADD of pod ns/name with a fresh container id into the
// given namespace path and returns the attachment and its IP.
func (c *cluster) addIn(ns, name, netnsPath string) (*podNS, error) {
	p := &podNS{ns: ns, name: name, netns: netnsPath, containerID: fmt.Sprintf("ctr-%s-%s-%d", ns, name, time.Now().UnixNano())}
	res, err := c.cni.AddNetworkList(context.Background(), c.netconf, c.rt(p))
	if err != nil {
		return p, err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return p, err
	}
	p.ip = r.IPs[0].Address.IP.String()
	return p, nil
}

// churn runs one pod's life as a runtime does: a namespace, ADD, DEL, the
// namespace deleted.
func (c *cluster) churn(i int) {
	c.t.Helper()
	name := fmt.Sprintf("churn%d", i)
	path, del := sandboxNetns(c.t, name)
	c.writeInput(name+".yaml", c.podYAML("x", name, nil, nil))
	p, err := c.addIn("x", name, path)
	if err != nil {
		c.t.Fatalf("ADD x/%s: %v", name, err)
	}
	if err := c.del(p); err != nil {
		c.t.Fatalf("DEL x/%s: %v", name, err)
	}
	del()
	c.removeInput(name + ".yaml")
}

// TestChurnHoldsNothing is defect 1 of issue 12: after a pod's DEL (and
// its namespace's deletion) the agent held the namespace (a descriptor and
// netlink sockets), so the node's namespace ids and the agent's sockets
// grew by one namespace and about four sockets a pod, until a restart. A
// refused CNI_NETNS=/etc/passwd stayed open too. Now churned pods leave
// the agent's descriptors, sockets and the node's namespace ids as they
// were. The resync is slow so that DEL itself must release.
func TestChurnHoldsNothing(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, time.Hour)
	c.writeInput("namespaces.yaml", namespacesYAML("x"))
	c.churn(0) // warm up: the node's own sockets and caches
	before := c.settledUsage()
	for i := 1; i <= 5; i++ {
		c.churn(i)
	}
	after := c.settledUsage()
	t.Logf("the agent held %v before the churn, %v after", before, after)
	if after.nodeNFT > 4 || before.nodeNFT > 4 {
		t.Errorf("the agent keeps %d, then %d nftables sockets in the node's namespace; want at most 4 (connPoolMax)", before.nodeNFT, after.nodeNFT)
	}
	before.nodeNFT, after.nodeNFT = 0, 0
	if after != before {
		t.Errorf("5 churned pods: agent held %v before, %v after; want no change", before, after)
	}

	// A path that is no network namespace is refused and holds nothing.
	bad := &podNS{ns: "x", name: "bad", netns: "/etc/passwd", containerID: "ctr-bad"}
	c.writeInput("bad.yaml", c.podYAML("x", "bad", nil, nil))
	for range 3 {
		if _, err := c.cni.AddNetworkList(context.Background(), c.netconf, c.rt(bad)); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
			t.Fatalf("ADD with CNI_NETNS=/etc/passwd: %v, want a refusal", err)
		}
	}
	if got := c.settledUsage(); got.fds != after.fds || got.sockets != after.sockets || got.nsids != after.nsids {
		t.Errorf("refused CNI_NETNS=/etc/passwd: agent held %v before, %v after", after, got)
	}
}

// settledUsage is usage once the node's namespace ids stop changing: the
// kernel tears a deleted namespace down (and drops its id) asynchronously,
// so the last churned pod's id may still count for a moment whether or not
// the agent holds it. A namespace the agent holds keeps its id for good.
func (c *cluster) settledUsage() agentUsage {
	u := c.usage()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		next := c.usage()
		if next == u {
			return u
		}
		u = next
	}
	return u
}

// TestReAddIntoRecreatedNamespace is defect 2 of issue 12: ADD, DEL,
// `ip netns del P`, `ip netns add P`, ADD again answered success but put
// the veth peer into the old, dead namespace (a cached descriptor kept it
// alive): the new namespace had only lo. The same without the DEL (a
// runtime re-creating the sandbox at the same path, the old attachment
// replaced). Now the second ADD wires the namespace the path names.
func TestReAddIntoRecreatedNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, time.Hour)
	c.writeInput("namespaces.yaml", namespacesYAML("x"))
	c.writeInput("pod.yaml", c.podYAML("x", "again", nil, nil))
	path, _ := sandboxNetns(t, "again")
	name := nstest.Name(path)
	recreate := func() {
		t.Helper()
		for _, args := range [][]string{{"netns", "del", name}, {"netns", "add", name}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, out)
			}
		}
	}
	wired := func(what string, p *podNS) {
		t.Helper()
		out, err := nstest.Exec(path, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
		if err != nil || !strings.Contains(out, " "+p.ip+"/32 ") {
			t.Errorf("%s: the namespace at %s has no eth0 with %s: %v %s\n%s", what, path, p.ip, err, out, nstest.Run(t, path, "ip", "-o", "link"))
		}
	}
	p, err := c.addIn("x", "again", path)
	must(t, err)
	wired("first ADD", p)
	must(t, c.del(p))
	recreate()
	p, err = c.addIn("x", "again", path)
	if err != nil {
		t.Fatalf("ADD after DEL and the namespace re-created: %v", err)
	}
	wired("ADD after DEL and the namespace re-created", p)

	recreate() // no DEL: the runtime lost the sandbox and makes it again
	p, err = c.addIn("x", "again", path)
	if err != nil {
		t.Fatalf("ADD into the re-created namespace, no DEL: %v", err)
	}
	wired("ADD into the re-created namespace, no DEL", p)
	must(t, c.del(p))
}

// TestSecondSandboxIntoPodNamespace is defect 3 of issue 12: a second ADD
// (another container id) into a namespace that holds another pod's eth0
// was refused ("file exists"), but that eth0 had gained the refused pod's
// /32 and its gateway neighbour pointed to a MAC that does not exist, and
// the refused pod's rolled-back address could be handed out while still
// configured there. Now the refusal leaves the pod's namespace
// byte-identical and the pod reachable, and the address handed out next
// works for its new pod.
func TestSecondSandboxIntoPodNamespace(t *testing.T) {
	nstest.RequireRoot(t)
	c := newCluster(t, time.Hour)
	c.writeInput("namespaces.yaml", namespacesYAML("x"))
	c.writeInput("pods.yaml", c.podYAML("x", "a", nil, nil)+"---\n"+c.podYAML("x", "b", nil, nil)+"---\n"+c.podYAML("x", "c", nil, nil))
	a, err := c.add("x", "a")
	must(t, err)
	before := nstest.PodDump(t, a.netns)

	b := &podNS{ns: "x", name: "b", netns: a.netns, containerID: "ctr-second-sandbox"}
	_, err = c.cni.AddNetworkList(context.Background(), c.netconf, c.rt(b))
	if after := nstest.PodDump(t, a.netns); after != before {
		t.Fatalf("the refused ADD changed x/a's namespace:\n--- before\n%s--- after\n%s", before, after)
	}
	if err == nil || !strings.Contains(err.Error(), "another sandbox") {
		t.Fatalf("second ADD into x/a's namespace: %v, want a refusal naming another sandbox", err)
	}
	// The refused pod's address is free again; whoever gets it next must
	// own it alone, and x/a keeps its network.
	cpod, err := c.add("x", "c")
	must(t, err)
	serveAll(t, a)
	serveAll(t, cpod)
	reachable(t, cpod, a, "tcp", true)
	reachable(t, a, cpod, "tcp", true)
	if after := nstest.PodDump(t, a.netns); after != before {
		t.Fatalf("x/a's namespace changed:\n--- before\n%s--- after\n%s", before, after)
	}
	must(t, c.check(a))
	must(t, c.check(cpod))
}
