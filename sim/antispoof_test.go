package sim_test

import (
	"context"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/sim"
)

// Source validation by real traffic: a pod that sends raw packets with
// another pod's address cannot reach a server whose policy admits only that pod, over
// TCP or UDP. The proof is on the impersonated pod: a packet socket on its
// eth0 sees every reply the server would send to the forged address, and
// sees none. The drops show in the kernel's counter and in the agent's
// metric. The legitimate pod and the node still reach the pods.

const spoofPods = `
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: victim, labels: {app: victim}}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: attacker, labels: {app: attacker}}
spec:
  containers: [{name: c, image: i}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: app, name: server, labels: {app: server}}
spec:
  containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: app, name: only-victim}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: victim}}}]}]
`

func TestSourceValidationVPC(t *testing.T) {
	st := up(t, "spoof", spoofPods)
	checkSourceValidation(t, st)
}

func TestSourceValidationENIMultiIP(t *testing.T) {
	st := upENI(t, "spoofeni", "apiVersion: terway/v1\nkind: Config\nmaxPoolSize: 4\n---\n"+
		"apiVersion: v1\nkind: Node\nmetadata: {name: eni-node}\n---"+spoofPods)
	checkSourceValidation(t, st)
}

func checkSourceValidation(t *testing.T, st *sim.State) {
	victim, attacker, server := st.Pod("app/victim"), st.Pod("app/attacker"), st.Pod("app/server")
	if victim == nil || attacker == nil || server == nil || victim.IP == "" || attacker.IP == "" || server.IP == "" {
		t.Fatalf("pods not set up: %+v", st.Pods)
	}
	waitProbe(t, st, "app/victim", "app/server", "tcp", true)
	waitProbe(t, st, "app/attacker", "app/server", "tcp", false)
	for _, proto := range []string{"tcp", "udp"} {
		if ok, err := st.Probe("app/victim", "app/server", 80, proto, 2*time.Second); err != nil || !ok {
			t.Errorf("legitimate pod app/victim does not reach app/server over %s (%v)", proto, err)
		}
	}
	// The node reaches a pod (kubelet probes) and the pod's replies, from
	// its own address, pass. Only in VPC mode: in ENI multi-IP mode the
	// pod's reply to the node follows its "from pod lookup ENI table" rule
	// out of the ENI and does not come back, with or without source
	// validation (checked); node-to-pod traffic is issue 15 part 3's.
	if st.Mode != "eni-multi-ip" && !traffic.Probe(st.NodeNetns, "tcp", net.JoinHostPort(victim.IP, "80"), 2*time.Second) {
		t.Errorf("the node does not reach app/victim")
	}

	// The sniffer must see the server's replies to the real victim: it
	// would see them to the forged address too.
	sn, err := traffic.Sniff(victim.Netns, "eth0", server.IP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sn.Close)
	before := ruleCounter(t, st, spoofedRE)
	// The crafted packets are right: sent by the victim itself they get
	// the server's answers (a SYN-ACK, an echoed datagram).
	if err := traffic.SendForged(victim.Netns, victim.IP, server.IP, 80); err != nil {
		t.Fatal(err)
	}
	if n := sn.Wait(2, 2*time.Second); n < 2 {
		t.Fatalf("app/server answered %d of app/victim's own crafted TCP SYN and UDP datagram, want both", n)
	}
	// The same packets from the attacker, forged with the victim's
	// address. Replies would go to the victim, where the sniffer listens.
	sn.Reset()
	for range 3 {
		if err := traffic.SendForged(attacker.Netns, victim.IP, server.IP, 80); err != nil {
			t.Fatal(err)
		}
	}
	if n := sn.Wait(1, 2*time.Second); n != 0 {
		t.Errorf("app/server answered %d packets to forged %s traffic of app/attacker", n, victim.IP)
	}
	after := ruleCounter(t, st, spoofedRE)
	// Three SYNs and three datagrams.
	if after-before < 6 {
		t.Errorf("spoofed counter went from %d to %d, want at least 6 more", before, after)
	}
	metric := agentMetric(t, st, "terway_pod_spoofed_packets_total")
	if metric < float64(after) {
		t.Errorf("agent metric terway_pod_spoofed_packets_total = %v, the kernel's counter says %d", metric, after)
	}

	// A pod's IPv6 reaches the prerouting hook, where source validation
	// drops and counts it: the host end of its veth keeps IPv6 on (with
	// no address of its own). Other IPv6 the pods' kernels send (router
	// solicitations, multicast reports, a few each) counts there too:
	// far fewer than the packets sent here.
	const sentIPv6 = 100
	v6before := ruleCounter(t, st, nonIPv4RE)
	if err := traffic.SendIPv6(attacker.Netns, "eth0", sentIPv6); err != nil {
		t.Fatal(err)
	}
	v6after := v6before
	for deadline := time.Now().Add(2 * time.Second); v6after < v6before+sentIPv6 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		v6after = ruleCounter(t, st, nonIPv4RE)
	}
	if v6after < v6before+sentIPv6 {
		t.Errorf("non-IPv4 counter went from %d to %d after app/attacker sent %d IPv6 packets, want at least %d more", v6before, v6after, sentIPv6, sentIPv6)
	}
	if metric := agentMetric(t, st, "terway_pod_non_ipv4_packets_total"); metric < float64(v6after) {
		t.Errorf("agent metric terway_pod_non_ipv4_packets_total = %v, the kernel's counter says %d", metric, v6after)
	}

	// The attacker's own address still works where policy allows it.
	if ok, _ := st.Probe("app/attacker", "app/victim", 80, "tcp", 2*time.Second); !ok {
		t.Errorf("app/attacker with its own address does not reach app/victim (no policy)")
	}
	if ok, _ := st.Probe("app/victim", "app/server", 80, "udp", 2*time.Second); !ok {
		t.Errorf("app/victim no longer reaches app/server over UDP")
	}
}

// waitProbe waits until reachability is want: the agent enforces the
// policy shortly after the pods come up.
func waitProbe(t *testing.T, st *sim.State, from, to, proto string, want bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := st.Probe(from, to, 80, proto, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ok == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s -> %s over %s: reachable=%v after a minute, want %v", from, to, proto, ok, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// The counters of chain antispoof's drop rules, as nft lists them.
var (
	spoofedRE = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "spoofed IPv4 source"`)
	nonIPv4RE = regexp.MustCompile(`counter packets (\d+) bytes \d+ drop comment "not IPv4[^"]*"`)
)

// ruleCounter reads the counter of chain antispoof's rule re matches with
// nft.
func ruleCounter(t *testing.T, st *sim.State, re *regexp.Regexp) uint64 {
	t.Helper()
	out, err := nstest.Exec(st.NodeNetns, "nft", "list", "chain", "inet", "terway", "antispoof")
	if err != nil && strings.Contains(out, "No such file") {
		t.Errorf("no chain antispoof in the node's table inet terway")
		return 0
	}
	if err != nil {
		t.Fatalf("nft list chain inet terway antispoof: %v: %s", err, out)
	}
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter matching %s in chain antispoof:\n%s", re, out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

func agentMetric(t *testing.T, st *sim.State, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := st.AgentGet(ctx, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("agent /metrics: %d %v", code, err)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("agent /metrics has no %s", name)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}
