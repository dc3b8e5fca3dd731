// Package render computes a node's desired network state (spec.NodeState)
// from Kubernetes objects, the agent's allocations, the attached ENIs and the
// configuration. Render is a pure function: no I/O, no clock, no randomness;
// the same inputs in any order give the same document byte for byte.
//
// Bad input never stops the node from rendering: each malformed object
// becomes a spec.Problem naming the object, the field and the reason, and
// only that object's part is left out (NetworkPolicy fails closed: a broken
// peer allows nothing, and the pods the policy selects stay isolated).
package render

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/terway-reconciler/terway/spec"
)

// Inputs is everything a node's document depends on.
type Inputs struct {
	Config Config
	// Node is this node; its name selects the local pods and its podCIDR
	// bounds VPC-mode pod IPs.
	Node *corev1.Node
	// Pods are all pods the agent knows, on this node and elsewhere: local
	// pods get a network, every pod with an IP can be a policy peer.
	Pods       []*corev1.Pod
	Namespaces []*corev1.Namespace
	Policies   []*networkingv1.NetworkPolicy
	// Allocations are the node's, as the agent's store lists them. Like
	// the objects, they are shared with the caller and are not changed,
	// by the render or, afterwards, by the caller: a Cache keeps them and
	// takes the same allocation in a later input as unchanged, where a
	// changed one must be a new one. None is nil.
	Allocations []*spec.Allocation
	ENIs        []spec.ENI
	// PeersHeldBack are local pods (namespace/name) that are no policy's
	// peer yet: their network, their isolation and their place in the
	// dispatch sets render, but no policy's peer sets hold their address,
	// as for a pod on another node whose address is not known yet. The
	// agent holds a pod back from its ADD until its admission (agent:
	// admission.go), so that an ADD writes its pod's part alone. Holding a
	// pod back only ever admits less.
	PeersHeldBack map[string]bool
	// PeersDeparting are local pods (namespace/name) whose network is gone
	// (their CNI DEL came) but whose address stays in the peer sets that
	// held it until the agent withdraws it (agent: withdrawal.go): so that
	// a DEL writes its pod's own part alone, as an ADD does. The agent
	// gives the address to no other pod meanwhile, so nothing can send
	// from it. Only the pod object the allocation was for has a departing
	// peer role, and only while it has no allocation and runs on this
	// node: not a new pod of the same name, here or elsewhere.
	PeersDeparting map[string]DepartingPeer
}

// DepartingPeer is a departing pod's address and the UID of the pod object
// it was allocated for (spec.AllocationSpec's; empty: any object of the
// pod's name).
type DepartingPeer struct {
	IP  string
	UID string
}

// ExclusiveENIResource is the extended resource a pod requests to get a
// whole ENI.
const ExclusiveENIResource = "aliyun/eni"

// renderer carries one render's indexes and output.
type renderer struct {
	cfg    Config
	cache  *Cache
	node   string
	state  *spec.NodeState
	pods   []*podInfo            // every pod, sorted by key
	byKey  map[string]*podInfo   // by namespace/name
	nsList []*corev1.Namespace   // sorted
	byNS   map[string][]*podInfo // pods by namespace
	enis   map[string]*spec.ENI  // attached ENIs by name (id)
	// ipOwners maps each local pod IP to the pod that rendered with it.
	ipOwners map[netip.Addr]*podInfo
	// nodeIPs are the Node's IPv4 InternalIPs, sorted: exclusive-ENI pods
	// reach them by their veth1 (nodeRoutes).
	nodeIPs []netip.Addr
	// podCIDR is the node's valid IPv4 pod CIDR in VPC mode; invalid when
	// the Node's is unusable (a Node problem says why) or in ENI mode.
	podCIDR netip.Prefix
	// heldBack are the pods that are no peer yet (Inputs.PeersHeldBack).
	heldBack map[string]bool
	// crossPod is set when one pod's input decided another's part: a
	// duplicate object or allocation, an allocation for a pod elsewhere, or
	// an address or interface two pods claim. Such a document is not
	// patched (patch.go).
	crossPod bool
	// entries are the policies' cache entries, and groups the policy
	// groups by key: what a patch of the document starts from.
	entries  []*policyEntry
	groups   map[string]*patchGroup
	compiler *policyCompiler
}

// podInfo is one pod as render sees it.
type podInfo struct {
	key   string
	pod   *corev1.Pod // nil for an allocation whose pod object is gone
	alloc *spec.Allocation
	// ip is the pod's IPv4 address: the allocation's for local pods,
	// status.podIP for others. Invalid when the pod has no usable IP.
	ip    netip.Addr
	local bool
	// entry is the pod's index entry, set once its network rendered.
	entry *spec.Pod
	// part is what its datapath added to the document (a cached
	// fragment's), and groups its policy groups' keys by direction
	// (ingress, egress): for a patch of the document.
	part   *spec.NodeState
	groups [2]string
	// departing is the address of a pod whose network is gone but whose
	// peer role stays (Inputs.PeersDeparting); invalid otherwise.
	departing netip.Addr
}

// awaiting tells that p is a pod scheduled here whose CNI ADD has not come
// yet: it runs on this node (local: not host-network, not terminated), is
// not being deleted, has no allocation and does not want an exclusive ENI.
// The policies that select it have their rules resolved, and its policy
// groups render (chains and sets) with its dispatch entries, keyed by the
// host veth its ADD will make, so that the node has them ready before the
// ADD: an ADD whose pod starts a group otherwise wrote and read back the
// group's chain and sets, hundreds of peer elements, before it could
// answer, and an ADD that adds a jump has the kernel check the whole table
// (renderPolicies). groups then holds the groups it will join.
func (p *podInfo) awaiting() bool {
	return p.local && p.pod != nil && p.alloc == nil && p.pod.DeletionTimestamp == nil && !WantsExclusiveENI(p.pod)
}

// Render computes the node's document. It never fails on object content; it
// returns an error only for an unusable configuration or no node. A Cache
// renders the same document reusing the parts of its last render.
func Render(in Inputs) (*spec.NodeState, error) {
	return render(in, &Cache{oneShot: true}, nil)
}

// render renders with the cache k, which the caller holds; scope is
// Cache.RenderScoped's pods (nil: a whole document).
func render(in Inputs, k *Cache, scope []string) (*spec.NodeState, error) {
	cfg := in.Config.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if in.Node == nil || in.Node.Name == "" {
		return nil, fmt.Errorf("render: no Node object: the node's name and podCIDR are required")
	}
	if k != nil && !k.oneShot {
		if doc, ok := k.patch(in, cfg, scope); ok {
			return doc, nil
		}
	}
	r := &renderer{
		cfg:   cfg,
		cache: k,
		node:  in.Node.Name,
		state: spec.New(in.Node.Name, cfg.Mode),
		byKey: map[string]*podInfo{},
		byNS:  map[string][]*podInfo{},
		enis:  map[string]*spec.ENI{},

		ipOwners: map[netip.Addr]*podInfo{},
		heldBack: in.PeersHeldBack,
	}
	if cfg.Mode == spec.PodModeVPC {
		r.nodePodCIDR(in.Node)
	}
	r.nodeIPs = nodeInternalIPs(in.Node)
	r.indexENIs(in.ENIs)
	r.indexPods(in.Pods, in.Allocations)
	r.indexDeparting(in.PeersDeparting)
	r.nsList = sortedCopy(in.Namespaces, func(n *corev1.Namespace) string { return n.Name })

	r.hostSysctls()
	if k != nil {
		k.beginFragments(fragmentEnv{cfg: cfg, node: r.node, podCIDR: r.podCIDR, nodeIPs: r.nodeIPs})
	}
	for _, p := range r.pods {
		if p.local {
			r.renderPod(p)
		}
	}
	if k != nil {
		k.endFragments()
	}
	if cfg.Mode == spec.PodModeENIMultiIP {
		r.renderSharedENIs()
	}
	r.renderIdleExclusiveENIs()
	r.renderPolicies(sortedCopy(in.Policies, func(p *networkingv1.NetworkPolicy) string { return p.Namespace + "/" + p.Name }))
	r.renderENINeeds()
	for _, p := range r.pods {
		if p.entry != nil {
			r.state.Pods = append(r.state.Pods, p.entry)
		}
	}
	// Every set was built sorted: canonical order for the rest.
	r.state.CanonicalizeOrder()
	if k != nil && !k.oneShot {
		k.keepBase(r, in)
	}
	return r.state, nil
}

func (r *renderer) problem(kind, namespace, name, field, format string, args ...any) {
	r.state.Problems = append(r.state.Problems, spec.Problem{
		Kind: kind, Namespace: namespace, Name: name, Field: field, Reason: fmt.Sprintf(format, args...),
	})
}

func (r *renderer) podProblem(p *podInfo, field, format string, args ...any) {
	ns, name := splitKey(p.key)
	r.problem("Pod", ns, name, field, format, args...)
}

// nodePodCIDR validates the Node's pod CIDR up front, so that a bad one is
// a problem of the Node from the first render, not only once a pod needs an
// address. ENI mode does not use it and leaves it unchecked.
func (r *renderer) nodePodCIDR(node *corev1.Node) {
	cidr, err := spec.NodePodCIDR(node.Spec.PodCIDR, node.Spec.PodCIDRs)
	var fe *spec.FieldError
	if errors.As(err, &fe) {
		r.problem("Node", "", node.Name, fe.Field, "%s", fe.Reason)
		if !fe.Usable {
			return
		}
	}
	r.podCIDR = cidr
}

func (r *renderer) indexENIs(enis []spec.ENI) {
	enis = sortedCopy(enis, func(e spec.ENI) string { return e.Metadata.Name })
	deviceIndexes := map[int]string{}
	for i := range enis {
		e := &enis[i]
		if r.enis[e.Metadata.Name] != nil {
			r.problem("ENI", "", e.Metadata.Name, "metadata.name", "duplicate ENI; the first one is used")
			continue
		}
		if err := validateENI(e); err != nil {
			r.problem("ENI", "", e.Metadata.Name, err.field, "%s", err.reason)
			continue
		}
		if other := deviceIndexes[e.Spec.DeviceIndex]; other != "" {
			r.problem("ENI", "", e.Metadata.Name, "spec.deviceIndex", "device index %d is already ENI %s's", e.Spec.DeviceIndex, other)
			continue
		}
		deviceIndexes[e.Spec.DeviceIndex] = e.Metadata.Name
		r.enis[e.Metadata.Name] = e
	}
}

// indexPods joins pod objects with allocations. Inputs are sorted first so
// that which of two conflicting objects wins never depends on input order.
func (r *renderer) indexPods(pods []*corev1.Pod, allocs []*spec.Allocation) {
	for _, pod := range sortedCopy(pods, func(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }) {
		key := pod.Namespace + "/" + pod.Name
		if r.byKey[key] != nil {
			r.problem("Pod", pod.Namespace, pod.Name, "metadata.name", "duplicate pod object; the first one is used")
			r.crossPod = true
			continue
		}
		p := &podInfo{key: key, pod: pod, local: pod.Spec.NodeName == r.node && !pod.Spec.HostNetwork}
		if terminated(pod) {
			p.local = false
		} else if !pod.Spec.HostNetwork && pod.Status.PodIP != "" {
			if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil && a.Is4() {
				p.ip = a
			}
		}
		r.byKey[key] = p
	}
	sorted := slices.Clone(allocs)
	slices.SortStableFunc(sorted, func(a, b *spec.Allocation) int {
		return cmp.Compare(a.Metadata.Namespace+"/"+a.Metadata.Name, b.Metadata.Namespace+"/"+b.Metadata.Name)
	})
	for _, a := range sorted {
		key := a.Metadata.Namespace + "/" + a.Metadata.Name
		p := r.byKey[key]
		if p == nil {
			// The pod object is gone (or not seen yet) but CNI DEL has not
			// come: keep its network until it does.
			p = &podInfo{key: key}
			r.byKey[key] = p
			r.podProblem(p, "", "pod object not found; its network is kept until CNI DEL, without NetworkPolicy")
		} else if p.alloc != nil {
			r.podProblem(p, "allocation", "duplicate allocation; the first one is used")
			r.crossPod = true
			continue
		} else if p.pod != nil && !p.local {
			r.podProblem(p, "allocation", "allocation exists but the pod does not run on node %s; ignored", r.node)
			r.crossPod = true
			continue
		}
		p.alloc = a
		p.local = true
		p.ip = netip.Addr{}
		if ip, err := netip.ParseAddr(a.Spec.IP); err == nil && ip.Is4() {
			p.ip = ip
		}
	}
	r.oneAttachmentPerInterface()
	for _, p := range r.byKey {
		r.pods = append(r.pods, p)
	}
	slices.SortFunc(r.pods, func(a, b *podInfo) int { return cmp.Compare(a.key, b.key) })
	for _, p := range r.pods {
		ns, _ := splitKey(p.key)
		r.byNS[ns] = append(r.byNS[ns], p)
	}
}

// indexDeparting gives the departing pods their addresses as peers
// (Inputs.PeersDeparting): only the pod object the address was allocated
// for, on this node, not on the host's network, without an allocation.
func (r *renderer) indexDeparting(departing map[string]DepartingPeer) {
	for key, d := range departing {
		p := r.byKey[key]
		if p == nil || p.pod == nil || p.alloc != nil || p.pod.Spec.HostNetwork || p.pod.Spec.NodeName != r.node ||
			d.UID != "" && string(p.pod.UID) != d.UID {
			continue
		}
		if ip, err := netip.ParseAddr(d.IP); err == nil && ip.Is4() {
			p.departing = ip
		}
	}
}

// oneAttachmentPerInterface keeps, of the allocations that name one
// network namespace and interface (a second sandbox given a namespace
// path already in use, recorded before the engine refused it), the first
// recorded (lowest Seq; then the attachment key, for records from before
// Seq): its pod keeps its network. The others are left out of the
// document with a problem each, so that neither one pod's interface
// written twice nor a document that fails validation breaks every pod.
func (r *renderer) oneAttachmentPerInterface() {
	owner := map[string]*podInfo{}
	keys := make([]string, 0, len(r.byKey))
	for k := range r.byKey {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	first := func(a, b *spec.Allocation) bool {
		if a.Spec.Seq != b.Spec.Seq {
			return a.Spec.Seq < b.Spec.Seq
		}
		return a.Spec.ContainerID+"/"+a.Spec.IfName < b.Spec.ContainerID+"/"+b.Spec.IfName
	}
	var losers []*podInfo
	for _, k := range keys {
		p := r.byKey[k]
		if p.alloc == nil || p.alloc.Spec.Netns == "" {
			continue
		}
		slot := slotOf(p.alloc)
		o := owner[slot]
		switch {
		case o == nil:
			owner[slot] = p
			continue
		case first(p.alloc, o.alloc):
			owner[slot], p, o = p, o, p
		}
		losers = append(losers, p)
		r.crossPod = true
		r.podProblem(p, "allocation", "interface %s of network namespace %s already belongs to another sandbox, pod %s's (recorded first); this pod's attachment %s/%s is not set up until one of them is deleted",
			ifNameOf(p.alloc), p.alloc.Spec.Netns, o.key, p.alloc.Spec.ContainerID, p.alloc.Spec.IfName)
	}
	for _, p := range losers {
		p.alloc, p.local, p.ip = nil, false, netip.Addr{}
	}
}

// ifNameOf is the interface an allocation gives its pod: eth0 unless
// it names another.
func ifNameOf(a *spec.Allocation) string {
	if a.Spec.IfName == "" {
		return "eth0"
	}
	return a.Spec.IfName
}

// slotOf names the interface an allocation's pod is given, in its
// network namespace.
func slotOf(a *spec.Allocation) string { return a.Spec.Netns + " " + ifNameOf(a) }

// nodeInternalIPs lists the Node's IPv4 InternalIPs, sorted and unique;
// anything else in status.addresses is not the node's to route to.
func nodeInternalIPs(node *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); a.Type == corev1.NodeInternalIP && err == nil && ip.Is4() {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func terminated(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

func (r *renderer) hostSysctls() {
	r.state.Sysctls = append(r.state.Sysctls, spec.Sysctl{Path: "net/ipv4/ip_forward", Value: "1"})
}

func splitKey(key string) (namespace, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// sortedCopy sorts a copy of items by key, computing each key once (keys
// are joined strings; inputs usually arrive sorted already).
func sortedCopy[T any](items []T, key func(T) string) []T {
	type keyed struct {
		key  string
		at   int // equal keys keep their order: a stable sort's result
		item T
	}
	ks := make([]keyed, len(items))
	for i, it := range items {
		ks[i] = keyed{key(it), i, it}
	}
	byKey := func(a, b keyed) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.at, b.at)) }
	if !slices.IsSortedFunc(ks, byKey) {
		// Unstable, on unique (key, position) pairs: the same order as a
		// stable sort by key, in fewer moves (a watch's lists come in no
		// order, and a cluster's pods are sorted on every render).
		slices.SortFunc(ks, byKey)
	}
	out := make([]T, len(ks))
	for i, k := range ks {
		out[i] = k.item
	}
	return out
}
