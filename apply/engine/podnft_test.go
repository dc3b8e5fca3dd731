package engine_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// exclusiveIP is the primary IP of eni-3, the exclusive ENI of x/e.
const exclusiveIP = "198.18.66.10"

// addExclusiveENI wires eni-3 to the vpc namespace as its own vswitch
// (vsw3) and adds pod x/e, which requests aliyun/eni, on it.
func (n *eniNode) addExclusivePod(t *testing.T) string {
	const mac, gw, vsw, index = "00:16:3e:00:00:03", "198.18.66.253", "vsw3", 3
	nstest.Run(t, n.host, "ip", "link", "add", "enitmp"+strconv.Itoa(index), "address", mac, "type", "veth", "peer", "name", vsw, "netns", nstest.Name(n.vpc))
	nstest.Run(t, n.vpc, "ip", "addr", "add", gw+"/24", "dev", vsw)
	nstest.Run(t, n.vpc, "ip", "link", "set", vsw, "up")
	nstest.Run(t, n.vpc, "ip", "neigh", "replace", exclusiveIP, "lladdr", mac, "dev", vsw, "nud", "permanent")
	n.in.ENIs = append(n.in.ENIs, spec.ENI{Metadata: spec.ObjectMeta{Name: "eni-3"}, Spec: spec.ENISpec{
		MAC: mac, PrimaryIP: exclusiveIP, VSwitchCIDR: "198.18.66.0/24", Gateway: gw, DeviceIndex: index, Exclusive: true}})
	path := n.addPod("x", "e", exclusiveIP, map[string]string{"pod": "e"}, nil, "eni-3")
	n.pod("x/e").Spec.Containers[0].Resources.Limits = corev1.ResourceList{render.ExclusiveENIResource: resource.MustParse("1")}
	return path
}

// TestExclusiveENIPodPolicy: an exclusive-ENI pod's policy is enforced by
// table inet terway in its own namespace, for traffic on its ENI both
// ways, while the node keeps reaching it by veth1; tampering with that
// table is repaired by the next full plan; a scoped DEL removes the table
// and a scoped ADD sets it up before it returns.
func TestExclusiveENIPodPolicy(t *testing.T) {
	n := newENINode(t)
	n.addPod("x", "a", "198.18.64.11", map[string]string{"pod": "a"}, nil, "eni-1")
	n.addPod("y", "b", "198.18.64.12", map[string]string{"pod": "b"}, nil, "eni-1")
	e := n.addExclusivePod(t)
	n.apply(n.render())
	serve(t, n.vpc, vpcPeer)
	for key, ip := range map[string]string{"x/a": "198.18.64.11", "y/b": "198.18.64.12", "x/e": exclusiveIP} {
		serve(t, n.ns[key], ip)
	}
	// The VPC routes between its vswitches: pods of eni-1 reach x/e on
	// eni-3 through it, as the node has no rule keeping them inside.
	nstest.Run(t, n.vpc, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// No policy: everything reaches x/e and x/e reaches everything.
	reach(t, n.vpc, "tcp", exclusiveIP+":81", true)
	reach(t, n.ns["x/a"], "tcp", exclusiveIP+":80", true)
	reach(t, e, "udp", vpcPeer+":80", true)

	// x/e accepts namespace y on its named port http (80/TCP) and may send
	// only to pod a of its namespace.
	http := intstr.FromString("http")
	n.setPolicies(
		policy("x", "e-in", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "e"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns": "y"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &http}},
			}},
		}),
		policy("x", "e-out", networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod": "e"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}}},
			}},
		}))
	state := n.render()
	n.apply(state)
	n.requireEmptyPlan(state)
	if out := nstest.Run(t, e, "nft", "list", "table", "inet", "terway"); !strings.Contains(out, "hook input") || !strings.Contains(out, "hook output") {
		t.Fatalf("x/e's namespace has no table inet terway with input and output chains:\n%s", out)
	}

	enforced := func(t *testing.T) {
		t.Helper()
		// Ingress on the ENI (y/b and x/a leave by eni-1 and come in
		// through the vpc), from the vpc, and from the node by veth1.
		reach(t, n.ns["y/b"], "tcp", exclusiveIP+":80", true)
		reach(t, n.ns["y/b"], "tcp", exclusiveIP+":81", false)
		reach(t, n.ns["y/b"], "udp", exclusiveIP+":80", false)
		reach(t, n.ns["x/a"], "tcp", exclusiveIP+":80", false)
		reach(t, n.vpc, "tcp", exclusiveIP+":80", false)
		reach(t, n.host, "tcp", exclusiveIP+":81", true) // a kubelet probe
		// Egress by the ENI: only to x/a.
		reach(t, e, "tcp", "198.18.64.11:81", true)
		reach(t, e, "tcp", "198.18.64.12:80", false)
		reach(t, e, "udp", vpcPeer+":80", false)
	}
	enforced(t)

	// Tampering inside the pod's namespace, with the independent nft tool:
	// the table no longer holds, the full plan names the repair in the
	// pod's namespace, and applying it restores the policy.
	for _, tamper := range [][]string{
		{"nft", "flush", "table", "inet", "terway"},
		{"nft", "delete", "table", "inet", "terway"},
	} {
		t.Run(strings.Join(tamper, " "), func(t *testing.T) {
			nstest.Run(t, e, tamper...)
			reach(t, n.vpc, "tcp", exclusiveIP+":80", true) // the table was what held
			p := n.plan(state)
			if p.Empty() || !strings.Contains(p.String(), "(pod x/e netns "+e+")") {
				t.Fatalf("plan after %q does not repair x/e's table:\n%s", strings.Join(tamper, " "), p)
			}
			for _, o := range p.Ops {
				if o.Netns != e || o.Pod != "x/e" {
					t.Errorf("plan line %q is in %q for pod %q; want only x/e's namespace", o.String(), o.Netns, o.Pod)
				}
			}
			n.apply(state)
			n.requireEmptyPlan(state)
			enforced(t)
		})
	}

	// DEL of x/e, scoped as the agent's: the ENI comes back to the node and
	// the table goes from the namespace, which outlives the pod here.
	n.removePod("x/e")
	state = n.render()
	del := engine.PlanOptions{Pods: []string{"x/e"}, PodIPs: map[string]string{"x/e": exclusiveIP}, Namespaces: []string{e}}
	if rep, err := n.eng.Apply(context.Background(), state, del); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	if out := nstest.Run(t, e, "nft", "list", "tables"); strings.Contains(out, "terway") {
		t.Fatalf("after x/e's DEL its namespace still has %s", out)
	}
	nstest.Run(t, n.host, "ip", "link", "show", "dev", render.ENILinkName(3))

	// ADD of x/e again, scoped: when Apply returns, the ENI is the pod's and
	// the table holds.
	n.in.Pods = append(n.in.Pods, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "e", UID: "uid-e2", Labels: map[string]string{"pod": "e"}},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c",
			Ports:     []corev1.ContainerPort{{Name: "http", ContainerPort: 80}},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{render.ExclusiveENIResource: resource.MustParse("1")}}}}},
	})
	n.in.Allocations = append(n.in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: "e"},
		Spec: spec.AllocationSpec{IP: exclusiveIP, Netns: e, ContainerID: "ctr-e2", ENI: "eni-3"}})
	state = n.render()
	if rep, err := n.eng.Apply(context.Background(), state, engine.PlanOptions{Pods: []string{"x/e"}}); err != nil || rep.Err() != nil {
		t.Fatal(err, rep.Err())
	}
	if out := nstest.Run(t, e, "nft", "list", "table", "inet", "terway"); !strings.Contains(out, "jump in_x_") || !strings.Contains(out, "jump eg_x_") {
		t.Fatalf("after the scoped ADD, x/e's table does not dispatch both directions:\n%s", out)
	}
	reach(t, n.vpc, "tcp", exclusiveIP+":80", false)
	reach(t, n.ns["y/b"], "tcp", exclusiveIP+":80", true)
	n.requireEmptyPlan(state)
}
