package sim_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/sim"
)

// NetworkPolicy where Services and the node are involved (issue 15, part 3),
// by real traffic on a simulated node with kube-proxy's nftables-mode rules
// in front of us.
//
// No kube-proxy runs here, so the test installs the rules kube-proxy's
// nftables mode (pkg/proxy/nftables/proxier.go) would write for the
// Services below, in a table of the test's own in the node namespace, at
// kube-proxy's hooks and priorities: DNAT in nat-prerouting and nat-output
// at dstnat (-100), masquerade of marked traffic in nat-postrouting at
// srcnat (100), its filter-forward at dstnat-10 (-110). Our forward chain
// runs at filter (0): after the DNAT, before the masquerade. The rule
// shapes are kube-proxy's: the service-ips and service-nodeports verdict
// maps, "ip saddr <endpoint> jump mark-for-masquerade" for hairpin, an
// external chain that marks everything for externalTrafficPolicy Cluster and
// keeps the source for Local.

const svcCluster = `
apiVersion: v1
kind: Node
metadata: {name: svc-node}
spec: {podCIDR: 198.18.0.0/24}
status: {addresses: [{type: InternalIP, address: 198.19.0.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: h, labels: {pod: h}}
spec:
  hostNetwork: true
  containers: [{name: c, image: agnhost}]
status: {podIP: 198.19.0.1}
` + `---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: a, labels: {pod: a}}
spec:
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: x, name: b, labels: {pod: b}}
spec:
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]
---
apiVersion: v1
kind: Pod
metadata: {namespace: y, name: c, labels: {pod: c}}
spec:
  containers: [{name: c, image: agnhost, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]
`

// Addresses of the Services and of the world around the node.
const (
	svcNodeIP      = "198.19.0.1"   // the Node's InternalIP above
	svcExternal    = "198.19.0.254" // the vpc namespace: a client outside the node
	svcClusterCIDR = "198.18.0.0/16"
	clusterIPA     = "198.19.128.1" // Service of x/a (hairpin)
	clusterIPB     = "198.19.128.2" // Service of x/b
	clusterIPH     = "198.19.128.3" // Service of the hostNetwork pod x/h
	svcPort        = 8080
	// NodePorts of x/b's Service: externalTrafficPolicy Cluster and Local.
	nodePortCluster = 30080
	nodePortLocal   = 30081
	// hostPort is where the hostNetwork pod x/h serves, on the node's address.
	hostPort = 9000
)

// kubeProxyRules is what kube-proxy's nftables mode writes for a Service
// of x/a and one of x/b (TCP and UDP 8080 to 80), with NodePorts to x/b,
// and a Service of the hostNetwork pod x/h (TCP 8080 to the node's address,
// port hostPort), as the kubernetes Service is to an API server.
// The table is the test's own ("kube-proxy-sim"); the node namespace is
// the sim's and goes away with it. Priorities are numbers: kube-proxy
// says dstnat-10 (-110), dstnat (-100) and srcnat (100), names this nft
// (1.0.6) accepts on some hooks only.
func kubeProxyRules(a, b string) string {
	endpoint := func(name, ip string) string {
		return fmt.Sprintf(`	chain endpoint-%[1]s {
		ip saddr %[2]s jump mark-for-masquerade
		meta l4proto tcp dnat to %[2]s:80
		meta l4proto udp dnat to %[2]s:80
	}
`, name, ip)
	}
	service := func(name, cip string) string {
		return fmt.Sprintf(`	chain service-%[1]s {
		ip daddr %[2]s ip saddr != %[3]s jump mark-for-masquerade
		goto endpoint-%[1]s
	}
`, name, cip, svcClusterCIDR)
	}
	return fmt.Sprintf(`table ip kube-proxy-sim {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { %[1]s . tcp . %[3]d : goto service-a, %[1]s . udp . %[3]d : goto service-a,
			%[2]s . tcp . %[3]d : goto service-b, %[2]s . udp . %[3]d : goto service-b,
			%[11]s . tcp . %[3]d : goto service-h }
	}
	map service-nodeports {
		type inet_proto . inet_service : verdict
		elements = { tcp . %[4]d : goto external-b-cluster, tcp . %[5]d : goto external-b-local }
	}
	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
	}
	chain filter-forward {
		type filter hook forward priority -110; policy accept;
		ct state new jump endpoints-check
	}
	chain endpoints-check {
		ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}
	chain nat-prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump services
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump masquerading
	}
	chain mark-for-masquerade {
		meta mark set meta mark or 0x4000
	}
	chain masquerading {
		meta mark and 0x4000 == 0 return
		meta mark set meta mark xor 0x4000
		counter masquerade fully-random
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports
	}
	chain external-b-cluster {
		jump mark-for-masquerade
		goto service-b
	}
	chain external-b-local {
		ip saddr %[6]s goto service-b
		fib saddr type local jump mark-for-masquerade
		fib saddr type local goto service-b
		goto endpoint-b
	}
%[7]s%[8]s%[9]s%[10]s%[12]s	chain endpoint-h {
		ip saddr %[13]s jump mark-for-masquerade
		meta l4proto tcp dnat to %[13]s:%[14]d
	}
}
`, clusterIPA, clusterIPB, svcPort, nodePortCluster, nodePortLocal, svcClusterCIDR,
		service("a", clusterIPA), service("b", clusterIPB), endpoint("a", a), endpoint("b", b),
		clusterIPH, service("h", clusterIPH), svcNodeIP, hostPort)
}

// installKubeProxy loads the rules into the sim's node namespace.
func installKubeProxy(t *testing.T, st *sim.State) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "kube-proxy.nft")
	if err := os.WriteFile(f, []byte(kubeProxyRules(st.Pod("x/a").IP, st.Pod("x/b").IP)), 0o600); err != nil {
		t.Fatal(err)
	}
	nstest.Run(t, st.NodeNetns, "nft", "-f", f)
}

var masqCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ masquerade`)

// masqueraded counts the connections kube-proxy's rules masqueraded (NAT
// sees the first packet of each).
func masqueraded(t *testing.T, st *sim.State) int {
	t.Helper()
	out := nstest.Run(t, st.NodeNetns, "nft", "list", "chain", "ip", "kube-proxy-sim", "masquerading")
	m := masqCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no masquerade counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// flow is one probe: an echo round trip from a namespace to an address.
type flow struct {
	name, from, proto, addr string
}

// svcFlows are every flow the cases look at, by name.
func svcFlows(st *sim.State) map[string]flow {
	pod := func(k string) string { return st.Pod(k).Netns }
	ip := func(k string) string { return st.Pod(k).IP }
	hp := func(h string, p int) string { return h + ":" + strconv.Itoa(p) }
	fl := []flow{
		{"a->svcB", pod("x/a"), "tcp", hp(clusterIPB, svcPort)},
		{"a->svcB/udp", pod("x/a"), "udp", hp(clusterIPB, svcPort)},
		{"c->svcB", pod("y/c"), "tcp", hp(clusterIPB, svcPort)},
		{"c->svcB/udp", pod("y/c"), "udp", hp(clusterIPB, svcPort)},
		{"c->svcA", pod("y/c"), "tcp", hp(clusterIPA, svcPort)},
		{"b->svcA", pod("x/b"), "tcp", hp(clusterIPA, svcPort)},
		{"a->svcA (hairpin)", pod("x/a"), "tcp", hp(clusterIPA, svcPort)},
		{"a->svcA/udp (hairpin)", pod("x/a"), "udp", hp(clusterIPA, svcPort)},
		{"a->a", pod("x/a"), "tcp", hp(ip("x/a"), 80)},
		{"a->b", pod("x/a"), "tcp", hp(ip("x/b"), 80)},
		{"c->a", pod("y/c"), "tcp", hp(ip("x/a"), 80)},
		{"c->b", pod("y/c"), "tcp", hp(ip("x/b"), 80)},
		{"ext->nodeport/cluster", st.VPCNetns, "tcp", hp(svcNodeIP, nodePortCluster)},
		{"ext->nodeport/local", st.VPCNetns, "tcp", hp(svcNodeIP, nodePortLocal)},
		{"node->a", st.NodeNetns, "tcp", hp(ip("x/a"), 80)},
		{"node->b", st.NodeNetns, "tcp", hp(ip("x/b"), 80)},
		{"node->b/udp", st.NodeNetns, "udp", hp(ip("x/b"), 80)},
		{"node->svcB", st.NodeNetns, "tcp", hp(clusterIPB, svcPort)},
		{"a->h", pod("x/a"), "tcp", hp(svcNodeIP, hostPort)},
		{"c->h", pod("y/c"), "tcp", hp(svcNodeIP, hostPort)},
		{"a->svcH", pod("x/a"), "tcp", hp(clusterIPH, svcPort)},
		{"c->svcH", pod("y/c"), "tcp", hp(clusterIPH, svcPort)},
	}
	out := map[string]flow{}
	for _, f := range fl {
		out[f.name] = f
	}
	return out
}

// expectFlows polls until every named flow is as wanted ("name": reachable)
// in two rounds in a row, for up to 20s (the agent follows its inputs
// within a resync, 2s here). One round could see the reachable flows just
// before the agent applied a policy and the refused ones just after.
func expectFlows(t *testing.T, flows map[string]flow, step string, want map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for matched := 0; ; {
		got := map[string]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name := range want {
			f, ok := flows[name]
			if !ok {
				t.Fatalf("%s: no flow %q", step, name)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := traffic.Probe(f.from, f.proto, f.addr, 500*time.Millisecond)
				mu.Lock()
				got[name] = ok
				mu.Unlock()
			}()
		}
		wg.Wait()
		var bad []string
		for name, w := range want {
			if got[name] != w {
				bad = append(bad, fmt.Sprintf("%s: reachable %t, want %t", name, got[name], w))
			}
		}
		if len(bad) == 0 {
			if matched++; matched == 2 {
				return
			}
			continue
		}
		matched = 0
		if time.Now().After(deadline) {
			t.Fatalf("%s, after 20s:\n  %s", step, strings.Join(bad, "\n  "))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// expectConverged checks that the agent has nothing left to do: the table
// it wrote (the hairpin set's ifname . ipv4_addr elements included) reads
// back as planned. A sync may be under way, so it asks for a few seconds.
func expectConverged(t *testing.T, st *sim.State) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		code, plan, err := st.AgentGet(context.Background(), "/plan")
		if err == nil && code == http.StatusOK && strings.TrimSpace(plan) == "" {
			return
		}
		last = fmt.Sprintf("HTTP %d, %v: %s", code, err, strings.TrimSpace(plan))
	}
	t.Fatalf("the agent's plan is not empty after 10s: %s", last)
}

// TestPolicyServicesAndNode runs the Service, hairpin, NodePort and node
// cases. Each step applies its policies, checks the flows it names and
// deletes its policies again; the baseline (no policy) comes back between
// steps.
func TestPolicyServicesAndNode(t *testing.T) {
	st := up(t, "svc", svcCluster)
	if st.Pod("x/h") != nil {
		t.Fatal("the hostNetwork pod x/h was attached through CNI; a kubelet never does that")
	}
	if st.NodeIP != svcNodeIP {
		t.Fatalf("node address %s, want %s", st.NodeIP, svcNodeIP)
	}
	installKubeProxy(t, st)
	// x/h serves on the node's address: a hostNetwork pod is a process in
	// the node's namespace.
	srv, err := traffic.Serve(st.NodeNetns, fmt.Sprintf("%s:%d", svcNodeIP, hostPort), "tcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	flows := svcFlows(st)

	all := map[string]bool{}
	for name := range flows {
		all[name] = true
	}
	expectFlows(t, flows, "baseline, no policy", all)

	// The rules really translate: the NodePort with Cluster policy and the
	// hairpin are masqueraded, the NodePort with Local policy is not.
	for _, c := range []struct {
		flow string
		masq bool
	}{{"ext->nodeport/cluster", true}, {"ext->nodeport/local", false}, {"a->svcA (hairpin)", true}, {"a->svcB", false}} {
		before := masqueraded(t, st)
		f := flows[c.flow]
		if !traffic.Probe(f.from, f.proto, f.addr, 2*time.Second) {
			t.Fatalf("%s: unreachable without policy", c.flow)
		}
		if got := masqueraded(t, st) > before; got != c.masq {
			t.Fatalf("%s: masqueraded %t, want %t (the kube-proxy rules are not what the test means)", c.flow, got, c.masq)
		}
	}

	steps := []struct {
		what     string
		policies string
		want     map[string]bool
	}{
		{
			// 1. A ClusterIP connection is judged on the backend, after DNAT,
			// by the client pod's address: kube-proxy's nat-prerouting
			// (dstnat, -100) runs before our forward chain (filter, 0).
			what:     "ClusterIP: x/b admits only x/a",
			policies: policy("x", "b-from-a", "  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]"),
			want: map[string]bool{"a->svcB": true, "a->svcB/udp": true, "c->svcB": false, "c->svcB/udp": false,
				"a->b": true, "c->b": false, "c->svcA": true},
		},
		{
			// Egress is judged on the backend too: y/c may reach x/b, not
			// x/a, whichever Service address it dials.
			what: "ClusterIP: y/c may send only to x/b",
			policies: policy("y", "c-to-b", "  podSelector: {matchLabels: {pod: c}}\n  policyTypes: [Egress]\n"+
				"  egress: [{to: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}]}]"),
			want: map[string]bool{"c->svcB": true, "c->svcB/udp": true, "c->svcA": false, "c->b": true, "c->a": false},
		},
		{
			// 2. Hairpin: a pod reaching itself through its own Service is
			// allowed whatever its policies, as reaching its own address is
			// (upstream's e2e probes through Services and expects the
			// diagonal reachable under deny-all). Our forward chain sees
			// the pod's own address as source: kube-proxy's masquerade to
			// the node comes later, at postrouting.
			what:     "hairpin: x/a denies all ingress and egress",
			policies: policy("x", "a-deny-all", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]"),
			want: map[string]bool{"a->svcA (hairpin)": true, "a->svcA/udp (hairpin)": true, "a->a": true,
				"b->svcA": false, "c->svcA": false, "a->svcB": false, "a->b": false},
		},
		{
			// 3. A NodePort from outside: pod and namespace selectors match
			// pods only, so they never admit an external client, with
			// either traffic policy.
			what:     "NodePort: x/b admits every pod of every namespace",
			policies: policy("x", "b-from-pods", "  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{namespaceSelector: {}}]}]"),
			want: map[string]bool{"ext->nodeport/cluster": false, "ext->nodeport/local": false,
				"c->svcB": true, "a->svcB": true},
		},
		{
			// An ipBlock of the client admits it, with either policy: our
			// chain sees the client's address also under Cluster, where
			// kube-proxy masquerades to the node after us.
			what:     "NodePort: x/b admits the external client's address",
			policies: policy("x", "b-from-ext", "  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{ipBlock: {cidr: "+svcExternal+"/32}}]}]"),
			want: map[string]bool{"ext->nodeport/cluster": true, "ext->nodeport/local": true,
				"c->svcB": false, "a->b": false},
		},
		{
			// The node's address, which the backend sees as source under
			// Cluster, does not admit the client: the decision is on the
			// client's address.
			what:     "NodePort: x/b admits the node's address",
			policies: policy("x", "b-from-node", "  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{ipBlock: {cidr: "+svcNodeIP+"/32}}]}]"),
			want: map[string]bool{"ext->nodeport/cluster": false, "ext->nodeport/local": false,
				"node->b": true, "a->b": false},
		},
		{
			// 4. The node reaches its pods whatever their policies (kubelet
			// probes, directly or through a Service), and so do hostNetwork
			// pods, which are processes of the node. A policy selecting the
			// hostNetwork pod x/h (its podIP is the node's) isolates
			// nothing: y/c still reaches x/h.
			what:     "node: deny all in x, x/h included",
			policies: policy("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress, Egress]"),
			want: map[string]bool{"node->a": true, "node->b": true, "node->b/udp": true, "node->svcB": true,
				"c->h": true, "c->svcH": true, "a->h": false, "a->svcH": false, "a->b": false, "c->b": false, "ext->nodeport/local": false},
		},
		{
			// A podSelector peer never matches a hostNetwork pod: traffic
			// to x/h is traffic to the node's address, so x/a allowed to
			// send only to x/h reaches neither x/h nor x/b. Through x/h's
			// Service it is the same: DNAT to the node's address, judged
			// in our input chain.
			what: "hostNetwork: x/a may send only to pod x/h",
			policies: policy("x", "a-to-h", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n"+
				"  egress: [{to: [{podSelector: {matchLabels: {pod: h}}}]}]"),
			want: map[string]bool{"a->h": false, "a->svcH": false, "a->b": false, "c->h": true, "c->svcH": true},
		},
		{
			// ... and an ipBlock of the node's address is how to allow it.
			what: "hostNetwork: x/a may send only to the node's address",
			policies: policy("x", "a-to-node", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n"+
				"  egress: [{to: [{ipBlock: {cidr: "+svcNodeIP+"/32}}]}]"),
			want: map[string]bool{"a->h": true, "a->svcH": true, "a->b": false},
		},
		{
			// A podSelector peer matching the hostNetwork pod admits
			// nothing beyond what the node already gets: x/b admitting only
			// x/h still refuses x/a and y/c, and the node still reaches it.
			what:     "hostNetwork: x/b admits only pod x/h",
			policies: policy("x", "b-from-h", "  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: h}}}]}]"),
			want:     map[string]bool{"node->b": true, "node->svcB": true, "a->b": false, "c->svcB": false, "ext->nodeport/local": false},
		},
	}
	for _, s := range steps {
		ok := t.Run(s.what, func(t *testing.T) {
			applyYAML(t, st, s.policies, false)
			expectFlows(t, flows, s.what, s.want)
			expectConverged(t, st)
			applyYAML(t, st, s.policies, true)
			expectFlows(t, flows, s.what+": back to no policy", all)
		})
		if !ok {
			return // later steps would start from a wrong baseline
		}
	}
}
