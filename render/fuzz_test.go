package render

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/terway-reconciler/terway/spec"
)

// The fuzz targets here run as ordinary tests over f.Add seeds and the
// corpus in testdata/fuzz/<target>; `make fuzz` runs each with -fuzz for a
// short time. A crasher found later goes into that corpus.

// FuzzBandwidth feeds one value to both bandwidth parsers and, as a pod's
// annotations, to Render. Properties: no panic; the same answer twice; an
// accepted rate is within bounds and reads back from its decimal form; the
// pod either gets its qdiscs or a problem naming the annotation, and the
// document is valid.
func FuzzBandwidth(f *testing.F) {
	for _, s := range []string{"1m", "1M", "512k", "1.5m", "125000", " 2m ", "10x", "-1m", "0", "",
		"100", "1m1", "200000G", "10M", "1Gi", "1e3", "1E15", "100Mi", "0.5", "1e1000000", "9999999999999999999999999",
		"1.000000000000000000000001m", "+1m", "1e-3", "1Ki", "18446744073709551616", ".5k", "5.k", "1e+15", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		if len(value) > 256 {
			return // annotations are short; the parsers' cost is not in question here
		}
		for name, parse := range map[string]func(string) (uint64, error){"aliyun": ParseAliyunBandwidth, "kube": ParseKubeBandwidth} {
			bits, err := parse(value)
			bits2, err2 := parse(value)
			if bits != bits2 || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
				t.Fatalf("%s(%q) is not deterministic: %d, %v then %d, %v", name, value, bits, err, bits2, err2)
			}
			if err != nil {
				if bits != 0 {
					t.Fatalf("%s(%q) returned %d with error %v", name, value, bits, err)
				}
				continue
			}
			if bits < minRateBits || bits > maxRateBits {
				t.Fatalf("%s(%q) = %d bit/s, outside [%d, %d]", name, value, bits, uint64(minRateBits), uint64(maxRateBits))
			}
			if back, err := ParseKubeBandwidth(strconv.FormatUint(bits, 10)); err != nil || back != bits {
				t.Fatalf("%s(%q) = %d, but the Kubernetes form %d reads back as %d, %v", name, value, bits, bits, back, err)
			}
		}
		pod := bandwidthPod(map[string]string{AnnotationAliyunIngress: value, AnnotationKubeEgress: value})
		first := renderYAML(t, Inputs{Node: nodeWithPodCIDR("198.18.0.0/24"), Pods: []*corev1.Pod{pod}, Allocations: []*spec.Allocation{bandwidthAlloc}})
		second := renderYAML(t, Inputs{Node: nodeWithPodCIDR("198.18.0.0/24"), Pods: []*corev1.Pod{pod}, Allocations: []*spec.Allocation{bandwidthAlloc}})
		if !bytes.Equal(first, second) {
			t.Fatalf("two renders of %q differ:\n%s\n---\n%s", value, first, second)
		}
		state, _ := Render(Inputs{Node: nodeWithPodCIDR("198.18.0.0/24"), Pods: []*corev1.Pod{pod}, Allocations: []*spec.Allocation{bandwidthAlloc}})
		for _, key := range []string{AnnotationAliyunIngress, AnnotationKubeEgress} {
			_, perr := ParseAliyunBandwidth(value)
			if key == AnnotationKubeEgress {
				_, perr = ParseKubeBandwidth(value)
			}
			if perr != nil && !hasProblem(state, annotationField(key)) {
				t.Fatalf("%s=%q is refused (%v) but no problem names %s: %v", key, value, perr, annotationField(key), state.Problems)
			}
		}
		if len(state.TC)+len(state.Problems) < 2 {
			t.Fatalf("%q: %d qdiscs and problems %v; want one qdisc or problem per direction", value, len(state.TC), state.Problems)
		}
	})
}

var bandwidthAlloc = &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: "x", Name: "p"},
	Spec: spec.AllocationSpec{IP: "198.18.0.10", Netns: "/var/run/netns/p", ContainerID: "c"}}

func bandwidthPod(ann map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "p", UID: "uid-p", Annotations: ann},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c"}}}}
}

func hasProblem(s *spec.NodeState, field string) bool {
	for _, p := range s.Problems {
		if p.Field == field {
			return true
		}
	}
	return false
}

// renderYAML renders and checks what every render must give: no error, a
// valid document, and YAML that parses back to the same bytes.
func renderYAML(t *testing.T, in Inputs) []byte {
	t.Helper()
	state, err := Render(in)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if err := state.Validate(); err != nil {
		t.Fatalf("rendered document is invalid: %v", err)
	}
	doc, err := state.MarshalYAML()
	if err != nil {
		t.Fatal(err)
	}
	back, err := spec.Parse(doc)
	if err != nil {
		t.Fatalf("rendered document does not parse back: %v\n%s", err, doc)
	}
	again, err := back.MarshalYAML()
	if err != nil || !bytes.Equal(doc, again) {
		t.Fatalf("rendered document does not round-trip (%v):\n%s\n---\n%s", err, doc, again)
	}
	return append(doc, spec.PrintNFT(state.NFTables)...)
}

// FuzzPolicyCompile compiles NetworkPolicies against a small fixed
// cluster (two namespaces, local and remote pods, named ports): a JSON list
// of policies as the fuzzer mutates it (often no longer JSON), plus one
// policy built from typed fields, so that every input reaches the compiler
// (selector, ipBlock and except, port, endPort, port name, protocol,
// directions). Properties: no panic; a valid document that round-trips;
// the same bytes twice and with the policies in reverse order.
func FuzzPolicyCompile(f *testing.F) {
	for _, s := range []string{
		`[{"metadata":{"namespace":"x","name":"deny"},"spec":{"podSelector":{}}}]`,
		`[{"metadata":{"namespace":"x","name":"a"},"spec":{"podSelector":{"matchLabels":{"app":"web"}},"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"db"}}}],"ports":[{"port":80},{"protocol":"UDP","port":"dns"}]}]}}]`,
		`[{"metadata":{"namespace":"x","name":"b"},"spec":{"podSelector":{},"policyTypes":["Egress"],"egress":[{"to":[{"ipBlock":{"cidr":"198.18.0.0/16","except":["198.18.1.0/24","198.18.0.128/25"]}}],"ports":[{"port":1000,"endPort":2000}]}]}}]`,
		`[{"metadata":{"namespace":"y","name":"c"},"spec":{"podSelector":{"matchExpressions":[{"key":"tier","operator":"In","values":["1","2"]}]},"ingress":[{"from":[{"namespaceSelector":{"matchLabels":{"team":"a"}},"podSelector":{"matchExpressions":[{"key":"app","operator":"Exists"}]}}]}]}}]`,
		`[{"metadata":{"namespace":"x","name":"d"},"spec":{"podSelector":{},"ingress":[{}],"egress":[{"ports":[{"protocol":"SCTP"}]}],"policyTypes":["Ingress","Egress"]}},{"metadata":{"namespace":"x","name":"e"},"spec":{"podSelector":{"matchLabels":{"app":"api"}},"egress":[{"to":[{"namespaceSelector":{}}],"ports":[{"port":"http"}]}]}}]`,
		`[{"metadata":{"namespace":"x","name":"bad"},"spec":{"podSelector":{"matchExpressions":[{"key":"a","operator":"Bogus"}]},"ingress":[{"from":[{"ipBlock":{"cidr":"300.0.0.0/8"}}],"ports":[{"port":0},{"port":70000},{"port":5,"endPort":4}]}]}}]`,
		`[{"metadata":{"namespace":"x","name":"v6"},"spec":{"podSelector":{},"ingress":[{"from":[{"ipBlock":{"cidr":"::/0","except":["fd00::/8"]}},{"ipBlock":{"cidr":"0.0.0.0/0","except":["10.0.0.1/32","0.0.0.0/0"]}}]}]}}]`,
	} {
		f.Add([]byte(s), "app", "web", "198.18.0.0/16", "198.18.0.10/32", int32(80), int32(0), "", "TCP", uint8(3))
	}
	f.Add([]byte(`[]`), "tier", "1", "0.0.0.0/0", "198.18.0.0/15", int32(1), int32(65535), "dns", "UDP", uint8(15))
	f.Add([]byte(`[]`), "", "", "198.18.0.11/32", "198.18.0.11/32", int32(0), int32(-1), "http", "SCTP", uint8(255))
	f.Add([]byte(`[]`), "app", "", "198.18.0.5/24", "198.18.1.0/24", int32(65536), int32(70000), "no-such", "ICMP", uint8(6))
	f.Fuzz(func(t *testing.T, data []byte, key, value, cidr, except string, port, endPort int32, portName, proto string, flags uint8) {
		var pols []*networkingv1.NetworkPolicy
		if json.Unmarshal(data, &pols) != nil || len(pols) > 16 || slices.Contains(pols, nil) {
			pols = nil // an object the informer could never hand over
		}
		pols = append(pols, typedPolicy(key, value, cidr, except, port, endPort, portName, proto, flags))
		in := policyWorld()
		in.Policies = pols
		first := renderYAML(t, in)
		if second := renderYAML(t, in); !bytes.Equal(first, second) {
			t.Fatalf("two renders differ:\n%s\n---\n%s", first, second)
		}
		in.Policies = slices.Clone(pols)
		slices.Reverse(in.Policies)
		if reversed := renderYAML(t, in); !bytes.Equal(first, reversed) {
			t.Fatalf("render depends on the policies' order:\n%s\n---\n%s", first, reversed)
		}
	})
}

// typedPolicy builds one policy of namespace x from fuzzed fields; flags'
// bits choose the directions, the peers and which port fields are set.
func typedPolicy(key, value, cidr, except string, port, endPort int32, portName, proto string, flags uint8) *networkingv1.NetworkPolicy {
	sel := metav1.LabelSelector{MatchLabels: map[string]string{key: value}}
	if flags&0x40 != 0 {
		sel = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: key, Operator: metav1.LabelSelectorOperator(portName), Values: []string{value}}}}
	}
	peers := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: []string{except}}}}
	if flags&0x04 != 0 {
		peers = append(peers, networkingv1.NetworkPolicyPeer{PodSelector: &sel})
	}
	if flags&0x08 != 0 {
		peers = append(peers, networkingv1.NetworkPolicyPeer{NamespaceSelector: &sel, PodSelector: &metav1.LabelSelector{}})
	}
	p := networkingv1.NetworkPolicyPort{}
	if proto != "" {
		pr := corev1.Protocol(proto)
		p.Protocol = &pr
	}
	switch {
	case flags&0x10 != 0:
		v := intstr.FromString(portName)
		p.Port = &v
	case flags&0x20 != 0:
		v := intstr.FromInt32(port)
		p.Port = &v
		p.EndPort = &endPort
	default:
		v := intstr.FromInt32(port)
		p.Port = &v
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "typed"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: sel}}
	if flags&0x01 != 0 {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: []networkingv1.NetworkPolicyPort{p}}}
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
	}
	if flags&0x02 != 0 {
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: peers, Ports: []networkingv1.NetworkPolicyPort{p}}}
		np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
	}
	if flags&0x80 != 0 {
		np.Spec.PolicyTypes = nil // implied by the rules present
	}
	return np
}

// policyWorld is the fixed cluster FuzzPolicyCompile compiles against.
func policyWorld() Inputs {
	in := Inputs{Node: nodeWithPodCIDR("198.18.0.0/24")}
	for _, ns := range []struct{ name, team string }{{"x", "a"}, {"y", "b"}} {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.name, Labels: map[string]string{"team": ns.team}}})
	}
	for i, p := range []struct{ ns, name, app, tier, node string }{
		{"x", "a", "web", "1", "n1"}, {"x", "b", "db", "2", "n1"}, {"y", "a", "api", "1", "n1"},
		{"x", "r", "web", "2", "n2"}, {"y", "r", "db", "1", "n2"},
	} {
		ip := "198.18.0." + strconv.Itoa(10+i)
		if p.node != "n1" {
			ip = "198.18.1." + strconv.Itoa(10+i)
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, UID: types.UID("uid-" + p.ns + "-" + p.name),
				Labels: map[string]string{"app": p.app, "tier": p.tier}},
			Spec: corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: int32(80 + i)},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			}}}},
			Status: corev1.PodStatus{PodIP: ip},
		}
		in.Pods = append(in.Pods, pod)
		if p.node == "n1" {
			in.Allocations = append(in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: p.ns, Name: p.name},
				Spec: spec.AllocationSpec{IP: ip, Netns: "/var/run/netns/" + p.ns + "-" + p.name, ContainerID: "c-" + p.ns + "-" + p.name}})
		}
	}
	return in
}
