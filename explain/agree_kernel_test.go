package explain_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	nsh "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// TestAgreementWithKernelTraffic renders 200 seeded random policy sets,
// loads each document's table into a node namespace (no uplink) with the
// pods in namespaces of their own behind veths, sends a real TCP SYN and a
// real UDP datagram for every pod pair and port, and compares what arrived
// with explain's verdict for the same connection. Every probe of a set
// runs at once, so a set costs one wait, not one per dropped packet.
func TestAgreementWithKernelTraffic(t *testing.T) {
	sets := 200
	if testing.Short() {
		sets = 20
	}
	agreeWithKernel(t, sets, rand.New(rand.NewPCG(16, 2026)))
}

// TestAgreementWithKernelTrafficSplit is the same with every policy group
// in render's split form (an address set and a protocol . port set per
// port profile), which render otherwise keeps for large groups.
func TestAgreementWithKernelTrafficSplit(t *testing.T) {
	defer render.SplitEveryGroupForTest()()
	sets := 60
	if testing.Short() {
		sets = 10
	}
	if split := agreeWithKernel(t, sets, rand.New(rand.NewPCG(18, 2026))); split < sets {
		t.Errorf("%d split groups in %d policy sets: the split form is not exercised", split, sets)
	}
}

// agreeWithKernel runs the comparison for sets random policy sets and
// returns how many groups were in the split form.
func agreeWithKernel(t *testing.T, sets int, rng *rand.Rand) (splitGroups int) {
	nstest.RequireRoot(t)
	if _, err := os.Stat("/usr/sbin/nft"); err != nil {
		t.Skip("nft(8) not available")
	}
	node, pods := topology(t)
	comparisons, disagreements, denied := 0, 0, 0
	for set := range sets {
		in := genCluster(rng)
		doc, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range doc.NFTables.Sets {
			if strings.HasSuffix(s.Name, "-a1") {
				splitGroups++
			}
		}
		loadTable(t, node, doc.NFTables)
		flushConntrack(t, node)
		m, err := explain.New(in, doc)
		if err != nil {
			t.Fatal(err)
		}
		got := probeAll(t, pods)
		for k, arrived := range got {
			src, err := m.Resolve(k.src.String())
			if err != nil {
				t.Fatal(err)
			}
			dst, err := m.Resolve(k.dst.String())
			if err != nil {
				t.Fatal(err)
			}
			res, err := m.Check(src, dst, k.proto, k.port)
			if err != nil {
				t.Fatal(err)
			}
			comparisons++
			if !arrived {
				denied++
			}
			if res.Allowed != arrived {
				disagreements++
				if disagreements <= 10 {
					rep, _ := m.Explain(src, dst, k.proto, k.port)
					t.Errorf("set %d: %s -> %s %s/%d: explain says allowed=%v, the kernel delivered=%v\n%s", set, src.Key, dst.Key, k.proto, k.port, res.Allowed, arrived, reportText(rep))
				}
			}
		}
	}
	t.Logf("%d policy sets (%d groups in the split form), %d comparisons (%d denied by the kernel), %d disagreements", sets, splitGroups, comparisons, denied, disagreements)
	if denied == 0 || denied == comparisons {
		t.Errorf("the generator gave %d denials in %d probes: it does not exercise both verdicts", denied, comparisons)
	}
	if comparisons != sets*len(genPods)*(len(genPods)-1)*len(genPorts)*2 {
		t.Errorf("made %d comparisons, want every pair, port and protocol of every set", comparisons)
	}
	return splitGroups
}

// topology makes the node namespace and one namespace per generated pod,
// wired as the VPC datapath does: the pod's eth0 with its /32 and a default
// route via 169.254.1.1 on the node's veth, the node a /32 route per pod.
func topology(t *testing.T) (string, map[netip.Addr]string) {
	node := nstest.Netns(t, "exn")
	nstest.Run(t, node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	pods := map[netip.Addr]string{}
	for i, p := range genPods {
		pns := nstest.Netns(t, fmt.Sprintf("exp%d", i))
		// The document's name for the pod's host veth: its dispatch
		// entries and source validation are keyed by it.
		host := spec.HostVethName(p.ns + "/" + p.name)
		nstest.Run(t, node, "ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", nstest.Name(pns))
		nstest.Run(t, node, "ip", "addr", "add", "169.254.1.1/32", "dev", host)
		nstest.Run(t, node, "ip", "link", "set", host, "up")
		nstest.Run(t, node, "ip", "route", "add", p.ip+"/32", "dev", host)
		nstest.Run(t, pns, "ip", "addr", "add", p.ip+"/32", "dev", "eth0")
		nstest.Run(t, pns, "ip", "link", "set", "eth0", "up")
		nstest.Run(t, pns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
		nstest.Run(t, pns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
		pods[netip.MustParseAddr(p.ip)] = pns
	}
	return node, pods
}

// loadTable replaces table inet terway in the node namespace in one
// transaction.
func loadTable(t *testing.T, node string, table *spec.NFTable) {
	f := filepath.Join(t.TempDir(), "ruleset.nft")
	text := "table inet terway\ndelete table inet terway\n" + spec.PrintNFT(table)
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, node, "nft", "-f", f)
}

// flushConntrack forgets the node's connections, so that a probe reusing
// an earlier set's address and port tuple is a new connection to the new
// table, as the evaluator assumes, not an established one.
func flushConntrack(t *testing.T, node string) {
	ns, err := nsh.GetFromPath(node)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		t.Fatalf("flush conntrack in %s: %v", node, err)
	}
}

type probeKey struct {
	src, dst netip.Addr
	proto    string
	port     uint16
}

func inNS(path string, fn func() error) error {
	h, err := nsh.GetFromPath(path)
	if err != nil {
		return err
	}
	defer h.Close()
	return netns.Do(int(h), fn)
}

// probeAll opens listeners on every pod's ports, starts a TCP connect and
// sends a UDP datagram for every ordered pod pair and port, waits once,
// and reports which arrived: a TCP connect that completed, a datagram the
// destination socket received.
func probeAll(t *testing.T, pods map[netip.Addr]string) map[probeKey]bool {
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	sock := func(typ int, bind netip.Addr, port uint16) (int, error) {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		fds = append(fds, fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return -1, err
		}
		return fd, unix.Bind(fd, &unix.SockaddrInet4{Addr: bind.As4(), Port: int(port)})
	}
	type server struct {
		key  probeKey // dst and port only
		tcp  int
		udp  int
		seen map[netip.Addr]bool
	}
	var servers []*server
	for ip, path := range pods {
		err := inNS(path, func() error {
			for _, port := range genPorts {
				s := &server{key: probeKey{dst: ip, port: port}, seen: map[netip.Addr]bool{}}
				var err error
				if s.tcp, err = sock(unix.SOCK_STREAM, ip, port); err != nil {
					return err
				}
				if err := unix.Listen(s.tcp, 64); err != nil {
					return err
				}
				if s.udp, err = sock(unix.SOCK_DGRAM, ip, port); err != nil {
					return err
				}
				servers = append(servers, s)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	clients := map[probeKey]int{}
	for src, path := range pods {
		err := inNS(path, func() error {
			for dst := range pods {
				if dst == src {
					continue
				}
				for _, port := range genPorts {
					to := &unix.SockaddrInet4{Addr: dst.As4(), Port: int(port)}
					fd, err := sock(unix.SOCK_STREAM, src, 0)
					if err != nil {
						return err
					}
					if err := unix.Connect(fd, to); err != nil && !errors.Is(err, unix.EINPROGRESS) {
						return err
					}
					clients[probeKey{src, dst, "tcp", port}] = fd
					u, err := sock(unix.SOCK_DGRAM, src, 0)
					if err != nil {
						return err
					}
					if err := unix.Sendto(u, src.AsSlice(), 0, to); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Neighbour resolution and the handshake take well under a millisecond
	// between namespaces; the wait bounds the slowest first packet.
	time.Sleep(300 * time.Millisecond)
	out := map[probeKey]bool{}
	for k, fd := range clients {
		_, err := unix.Getpeername(fd)
		soErr, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		out[k] = err == nil && soErr == 0
	}
	for _, s := range servers {
		buf := make([]byte, 16)
		for {
			n, _, err := unix.Recvfrom(s.udp, buf, unix.MSG_DONTWAIT)
			if err != nil {
				break
			}
			if a, ok := netip.AddrFromSlice(buf[:n]); ok {
				s.seen[a] = true
			}
		}
		for src := range pods {
			if src != s.key.dst {
				out[probeKey{src, s.key.dst, "udp", s.key.port}] = s.seen[src]
			}
		}
	}
	return out
}

func reportText(rep *explain.Report) string {
	if rep == nil {
		return ""
	}
	var b strings.Builder
	rep.WriteText(&b)
	return b.String()
}
