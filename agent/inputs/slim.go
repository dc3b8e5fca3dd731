package inputs

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// lastAppliedAnnotation holds a whole copy of the object as kubectl last
// applied it: often the largest part of an object, and never read here.
const lastAppliedAnnotation = corev1.LastAppliedConfigAnnotation

// slim is the informers' transform: it returns a smaller copy of each object
// before it is cached. It never modifies its argument (the object may be
// shared with other watchers) and is idempotent, as client-go requires.
// Objects of other types pass through.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return slimPod(o), nil
	case *corev1.Node:
		n := *o
		n.ObjectMeta = slimMeta(o.ObjectMeta)
		// The list of container images on the node is large, changes with
		// every pull, and means nothing to the network.
		n.Status.Images = nil
		return &n, nil
	case *corev1.Namespace:
		ns := *o
		ns.ObjectMeta = slimMeta(o.ObjectMeta)
		return &ns, nil
	case *networkingv1.NetworkPolicy:
		np := *o
		np.ObjectMeta = slimMeta(o.ObjectMeta)
		return &np, nil
	}
	return obj, nil
}

// slimPod keeps what render and the CNI path read from a pod: identity,
// labels (policy selectors), annotations (bandwidth), deletion; spec.nodeName
// and hostNetwork (which pods are local), the containers' names, ports
// (named ports in policies) and resources (the aliyun/eni request); status
// phase and IPs (policy peers, finished pods). Everything else — volumes,
// env, images, init containers, conditions, container statuses — goes.
func slimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: slimMeta(p.ObjectMeta),
		Spec: corev1.PodSpec{
			NodeName:    p.Spec.NodeName,
			HostNetwork: p.Spec.HostNetwork,
		},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
	if len(p.Spec.Containers) > 0 {
		out.Spec.Containers = make([]corev1.Container, len(p.Spec.Containers))
		for i, c := range p.Spec.Containers {
			out.Spec.Containers[i] = corev1.Container{
				Name:  c.Name,
				Ports: c.Ports,
				Resources: corev1.ResourceRequirements{
					Limits:   c.Resources.Limits,
					Requests: c.Resources.Requests,
				},
			}
		}
	}
	return out
}

// slimMeta drops managed fields, owner references, finalizers and the
// last-applied annotation; identity, labels and other annotations stay.
func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name:                       m.Name,
		Namespace:                  m.Namespace,
		UID:                        m.UID,
		ResourceVersion:            m.ResourceVersion,
		Generation:                 m.Generation,
		CreationTimestamp:          m.CreationTimestamp,
		DeletionTimestamp:          m.DeletionTimestamp,
		DeletionGracePeriodSeconds: m.DeletionGracePeriodSeconds,
		Labels:                     m.Labels,
		Annotations:                m.Annotations,
	}
	if _, ok := m.Annotations[lastAppliedAnnotation]; ok {
		out.Annotations = maps.Clone(m.Annotations)
		delete(out.Annotations, lastAppliedAnnotation)
		if len(out.Annotations) == 0 {
			out.Annotations = nil
		}
	}
	return out
}

// unchanged reports whether an update left a (slimmed) object as it was
// but for its resourceVersion, so that it need not wake the agent.
func unchanged(old, cur any) bool {
	switch o := old.(type) {
	case *corev1.Pod:
		return sameButVersion(o, cur)
	case *corev1.Node:
		return sameButVersion(o, cur)
	case *corev1.Namespace:
		return sameButVersion(o, cur)
	case *networkingv1.NetworkPolicy:
		return sameButVersion(o, cur)
	}
	return false
}

func sameButVersion[T any, PT interface {
	*T
	metav1.Object
}](old PT, cur any) bool {
	c, ok := cur.(PT)
	if !ok || old == nil || c == nil {
		return false
	}
	// Shallow copies: only their own resourceVersion field is written.
	a, b := *old, *c
	PT(&a).SetResourceVersion("")
	PT(&b).SetResourceVersion("")
	return equality.Semantic.DeepEqual(&a, &b)
}
