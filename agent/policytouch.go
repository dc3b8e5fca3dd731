package agent

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// podRef is a pod of a CNI request as an edited policy may see it: its
// object, nil when the inputs do not have it yet.
type podRef struct {
	pod *corev1.Pod
}

// policyReach is what of a policy decides which pods' own part of the
// document it may change: the pods it selects as targets, and those its
// rules name as peers by selector (each an element of its own in the
// peer sets). An ipBlock peer is no pod's own: its ranges are the
// resync's to write, whatever pods they cover. It errs on the side of
// involving a pod: a selector that does not parse involves every pod, and
// a namespaceSelector every namespace.
type policyReach struct {
	ns      string
	targets labels.Selector
	peers   []peerReach
	// everyPod: the policy may involve any pod (a selector that does not
	// parse, or a rule without peers on a named port, which resolves
	// against every pod's ports).
	everyPod bool
}

// peerReach is one pod-selecting peer: pods (nil: every pod) in the
// policy's namespace, or in any namespace when anyNS.
type peerReach struct {
	pods  labels.Selector
	anyNS bool
}

// reachOf reads np's reach.
func reachOf(np *networkingv1.NetworkPolicy) *policyReach {
	r := &policyReach{ns: np.Namespace}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return &policyReach{everyPod: true}
	}
	r.targets = sel
	rule := func(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) {
		if len(peers) == 0 {
			for _, p := range ports {
				if p.Port != nil && p.Port.Type == intstr.String {
					r.everyPod = true
				}
			}
		}
		for _, peer := range peers {
			if peer.IPBlock != nil {
				continue
			}
			pr := peerReach{anyNS: peer.NamespaceSelector != nil}
			if peer.PodSelector != nil {
				s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
				if err != nil {
					r.everyPod = true
					continue
				}
				pr.pods = s
			}
			r.peers = append(r.peers, pr)
		}
	}
	for _, in := range np.Spec.Ingress {
		rule(in.From, in.Ports)
	}
	for _, out := range np.Spec.Egress {
		rule(out.To, out.Ports)
	}
	return r
}

// involves tells whether the policy may select p as a target or name it
// as a peer.
func (r *policyReach) involves(p podRef) bool {
	if r.everyPod || p.pod == nil {
		return true
	}
	set := labels.Set(p.pod.Labels)
	if p.pod.Namespace == r.ns && r.targets.Matches(set) {
		return true
	}
	for _, peer := range r.peers {
		if (peer.anyNS || p.pod.Namespace == r.ns) && (peer.pods == nil || peer.pods.Matches(set)) {
			return true
		}
	}
	return false
}
