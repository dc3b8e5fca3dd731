package render

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// churn is a cluster that a random sequence of changes walks through. Every
// change replaces objects, never modifies one, as informers do.
type churn struct {
	rng  *rand.Rand
	in   Inputs
	nss  []string
	next int // for new names and addresses
}

func newChurn(seed uint64) *churn {
	c := &churn{rng: rand.New(rand.NewPCG(seed, 0xcac4e))}
	c.in = Inputs{Node: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.19.255.1"}}}}}
	c.nss = []string{"x", "y", "z"}
	for _, ns := range c.nss {
		c.in.Namespaces = append(c.in.Namespaces, c.namespace(ns))
	}
	for range 16 {
		c.addPod()
	}
	for i := range 8 {
		c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, i, c.nss))
	}
	return c
}

func (c *churn) pick(n int) int { return c.rng.IntN(n) }

func (c *churn) namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{"team": []string{"a", "b"}[c.pick(2)]}}}
}

// addPod adds a pod here (half of them with an allocation, as after ADD)
// or on another node, with an address of its own or, now and then, one
// another pod has.
func (c *churn) addPod() {
	c.next++
	i := c.next
	ns := c.nss[c.pick(len(c.nss))]
	local := c.pick(2) == 0
	ip := fmt.Sprintf("198.18.%d.%d", map[bool]int{true: 0, false: 1}[local], 2+i%250)
	if c.pick(20) == 0 && len(c.in.Pods) > 0 {
		ip = c.in.Pods[c.pick(len(c.in.Pods))].Status.PodIP // a clash
	}
	node := "n2"
	if local {
		node = "n1"
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprint("u", i)), Labels: c.podLabels()},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Ports: c.ports()}}},
		Status:     corev1.PodStatus{PodIP: ip},
	}
	c.in.Pods = append(c.in.Pods, p)
	if local && c.pick(3) > 0 {
		c.allocate(p)
	}
}

func (c *churn) podLabels() map[string]string {
	return map[string]string{"app": []string{"web", "db", "api"}[c.pick(3)], "tier": []string{"1", "2"}[c.pick(2)]}
}

func (c *churn) ports() []corev1.ContainerPort {
	return []corev1.ContainerPort{
		{Name: "http", ContainerPort: int32([]int{80, 8080, 8000}[c.pick(3)])},
		{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
	}
}

func (c *churn) allocate(p *corev1.Pod) {
	c.in.Allocations = append(c.in.Allocations, &spec.Allocation{Metadata: spec.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
		Spec: spec.AllocationSpec{IP: p.Status.PodIP, Netns: "/var/run/netns/" + p.Name, ContainerID: "c" + p.Name, Seq: uint64(c.next),
			UID: string(p.UID)}})
}

// replacePod swaps pod i for a changed copy.
func (c *churn) replacePod(i int, change func(*corev1.Pod)) {
	p := c.in.Pods[i].DeepCopy()
	change(p)
	c.in.Pods = slices.Clone(c.in.Pods)
	c.in.Pods[i] = p
}

// writeStatus writes pod i's status as the kubelet does: a new object
// with its Ready condition ready, the same to every policy.
func (c *churn) writeStatus(i int, ready corev1.ConditionStatus) {
	c.replacePod(i, func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
	})
}

// step makes one random change and says which.
func (c *churn) step() string {
	in := &c.in
	switch n := c.pick(100); {
	case n < 12 && len(in.Pods) < 50:
		c.addPod()
		return "add pod"
	case n < 20 && len(in.Pods) > 0:
		i := c.pick(len(in.Pods))
		in.Pods = slices.Delete(slices.Clone(in.Pods), i, i+1)
		return "delete pod"
	case n < 30 && len(in.Pods) > 0:
		c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) { p.Labels = c.podLabels() })
		return "relabel pod"
	case n < 34 && len(in.Pods) > 0:
		c.writeStatus(c.pick(len(in.Pods)), []corev1.ConditionStatus{"True", "False"}[c.pick(2)])
		return "pod status"
	case n < 38 && len(in.Pods) > 0:
		c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) { p.Spec.Containers[0].Ports = c.ports() })
		return "change container ports"
	case n < 42 && len(in.Pods) > 0:
		c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) {
			p.Status.PodIP = []string{"", fmt.Sprintf("198.18.1.%d", 2+c.pick(250)), "not-an-ip"}[c.pick(3)]
		})
		return "change pod IP"
	case n < 44 && len(in.Pods) > 0:
		if c.pick(2) == 0 {
			// Being deleted: a pod not set up awaits no ADD any more.
			c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} })
			return "pod being deleted"
		}
		c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
		return "pod ends"
	case n < 47 && len(in.Pods) > 0:
		c.replacePod(c.pick(len(in.Pods)), func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationKubeIngress: []string{"10M", "1G", "fast"}[c.pick(3)]}
		})
		return "bandwidth annotation"
	case n < 57 && len(in.Pods) > 0:
		p := in.Pods[c.pick(len(in.Pods))]
		in.Allocations = slices.Clone(in.Allocations)
		c.allocate(p) // ADD (of a pod elsewhere: refused; a second: a duplicate)
		return "allocation added"
	case n < 61 && len(in.Allocations) > 0:
		i := c.pick(len(in.Allocations))
		in.Allocations = slices.Delete(slices.Clone(in.Allocations), i, i+1)
		return "allocation removed"
	case n < 65 && len(in.Allocations) > 0:
		// The pod's sandbox is made again: same pod object, the same or
		// another address, a new container and namespace.
		i := c.pick(len(in.Allocations))
		in.Allocations = slices.Clone(in.Allocations)
		c.next++
		a := *in.Allocations[i] // a new allocation: the inputs' are not changed
		in.Allocations[i] = &a
		a.Spec.ContainerID = fmt.Sprintf("c%d", c.next)
		a.Spec.Netns = fmt.Sprintf("/var/run/netns/sandbox-%d", c.next)
		if c.pick(2) == 0 {
			a.Spec.IP = fmt.Sprintf("198.18.1.%d", 2+c.pick(250))
		}
		return "sandbox replaced"
	case n < 75 && len(in.Policies) < 30:
		c.next++
		in.Policies = append(slices.Clone(in.Policies), randomPolicy(c.rng, c.next, c.nss))
		return "add policy"
	case n < 85 && len(in.Policies) > 0:
		i := c.pick(len(in.Policies))
		np := randomPolicy(c.rng, 0, c.nss)
		np.Namespace, np.Name = in.Policies[i].Namespace, in.Policies[i].Name
		if c.pick(10) == 0 {
			np.Spec.PodSelector.MatchLabels = map[string]string{"bad key!": "x"}
		}
		in.Policies = slices.Clone(in.Policies)
		in.Policies[i] = np
		return "edit policy"
	case n < 91 && len(in.Policies) > 0:
		i := c.pick(len(in.Policies))
		in.Policies = slices.Delete(slices.Clone(in.Policies), i, i+1)
		return "delete policy"
	case n < 95:
		i := c.pick(len(in.Namespaces) + 1)
		in.Namespaces = slices.Clone(in.Namespaces)
		switch {
		case i == len(in.Namespaces):
			ns := fmt.Sprintf("n%d", c.next)
			c.next++
			c.nss = append(c.nss, ns)
			in.Namespaces = append(in.Namespaces, c.namespace(ns))
			return "add namespace"
		case c.pick(4) == 0:
			in.Namespaces = slices.Delete(in.Namespaces, i, i+1)
			return "delete namespace object"
		default:
			in.Namespaces[i] = c.namespace(in.Namespaces[i].Name)
			return "relabel namespace"
		}
	case n < 96 && len(in.Allocations) > 0:
		// The agent holds a pod back as a peer from its ADD to its
		// admission: the set changes on its own, pods coming and going.
		held := map[string]bool{}
		for _, key := range slices.Sorted(maps.Keys(in.PeersHeldBack)) { // sorted: the walk repeats from its seed
			if c.pick(3) > 0 {
				held[key] = true
			}
		}
		a := in.Allocations[c.pick(len(in.Allocations))]
		held[a.Metadata.Namespace+"/"+a.Metadata.Name] = true
		in.PeersHeldBack = held
		if c.pick(2) == 0 {
			// Departing addresses, right or not: of pods with or without
			// an allocation or an object, taken or free, or no address,
			// for the pod object or another of its name.
			departing := map[string]DepartingPeer{}
			for range c.pick(3) {
				key := a.Metadata.Namespace + "/" + a.Metadata.Name
				if len(in.Pods) > 0 && c.pick(2) == 0 {
					p := in.Pods[c.pick(len(in.Pods))]
					key = p.Namespace + "/" + p.Name
				}
				departing[key] = DepartingPeer{IP: []string{c.freeIP(), a.Spec.IP, "198.18.0.300"}[c.pick(3)],
					UID: []string{"", a.Spec.UID, "another"}[c.pick(3)]}
			}
			in.PeersDeparting = departing
			return "peers held back and departing"
		}
		return "peers held back"
	case n < 97:
		if len(in.Policies) > 0 {
			in.Policies = append(slices.Clone(in.Policies), in.Policies[c.pick(len(in.Policies))])
			return "policy listed twice"
		}
		return "nothing"
	case n < 98:
		node := in.Node.DeepCopy()
		node.Spec.PodCIDR = []string{"198.18.0.0/24", "198.18.0.0/25", "300.1.0.0/24"}[c.pick(3)]
		in.Node = node
		return "node podCIDR"
	case n < 99:
		in.Config.MTU = []int{0, 1500, 9000}[c.pick(3)]
		return "config"
	default:
		return "nothing"
	}
}

// TestCacheMatchesRender walks random clusters through 10,000 random
// changes in all (pods, labels, addresses, allocations, policies,
// namespaces, the node, the configuration) and compares, after every one,
// the cached render with a render from scratch, byte for byte. Each
// document is also checked to be canonical: the sets render builds sorted
// need no sort.
func TestCacheMatchesRender(t *testing.T) {
	steps, walks := 2500, 4
	if testing.Short() {
		steps = 250
	}
	total, reused, groups := 0, 0, 0
	for walk := range walks {
		c := newChurn(uint64(walk + 1))
		k := NewCache()
		var history []string
		for step := range steps {
			what := c.step()
			history = append(history, what)
			total++
			want, wantJSON := matchesScratch(t, k, c.in, fmt.Sprintf("walk %d step %d", walk, step), history)
			if want == nil {
				continue
			}
			st := k.Stats()
			reused += st.Groups - st.GroupsRendered
			groups += st.Groups
			if step%8 == 0 {
				canon := want.Clone()
				canon.Canonicalize()
				if string(mustJSON(t, canon)) != string(wantJSON) {
					t.Fatalf("walk %d step %d (%s): render's document is not canonical", walk, step, what)
				}
			}
		}
	}
	t.Logf("%d renders compared, 0 differences; %d of %d groups reused", total, reused, groups)
	if reused == 0 {
		t.Error("the cache never reused a group: the comparison proves nothing about reuse")
	}
}

// matchesScratch renders in with k and from scratch, and fails t when
// the two differ, in their documents or in failing; at is the step's name
// and history its changes. It also fails t when k's render changed the
// document k's last render (through matchesScratch) returned: documents
// share their unchanged items (pod entries, sets) with those made from
// them, which the agent keeps and compares. It returns the document from
// scratch and its JSON, or nil when both renders failed.
func matchesScratch(t *testing.T, k *Cache, in Inputs, at string, history []string) (*spec.NodeState, []byte) {
	t.Helper()
	what := history[len(history)-1]
	got, err := k.Render(in)
	want, werr := Render(in)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%s (%s): cache error %v, render error %v", at, what, err, werr)
	}
	if last, ok := lastCached[k]; ok {
		if again := mustJSON(t, last.doc); string(again) != string(last.json) {
			t.Fatalf("%s (%s, patched %v): the render changed the document of the render before\nlast changes: %v\nthat document was:\n%s\nit is now:\n%s",
				at, what, k.Stats().Patched, history[max(0, len(history)-5):], last.json, again)
		}
	}
	if err != nil {
		delete(lastCached, k)
		return nil, nil
	}
	gotJSON, wantJSON := mustJSON(t, got), mustJSON(t, want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("%s (%s, patched %v): the cached render differs from a render from scratch\nlast changes: %v\ncached:\n%s\nfrom scratch:\n%s",
			at, what, k.Stats().Patched, history[max(0, len(history)-5):], gotJSON, wantJSON)
	}
	lastCached[k] = renderedDoc{got, gotJSON}
	return want, wantJSON
}

// lastCached is each cache's last document in matchesScratch, with its
// JSON then. The render tests do not run in parallel.
var lastCached = map[*Cache]renderedDoc{}

type renderedDoc struct {
	doc  *spec.NodeState
	json []byte
}

func mustJSON(t *testing.T, s *spec.NodeState) []byte {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCacheTouchesOnlyWhatChanged checks the indexes: a change recomputes
// the policies and groups it can affect, not the others.
func TestCacheTouchesOnlyWhatChanged(t *testing.T) {
	c := newChurn(42)
	for i := range 40 {
		c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+i, c.nss))
	}
	k := NewCache()
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	if st := k.Stats(); st.PoliciesParsed != 0 || st.PoliciesResolved != 0 || st.GroupsRendered != 0 {
		t.Fatalf("nothing changed, yet %+v", st)
	}
	// A policy edit: that policy alone is parsed and resolved.
	i := slices.IndexFunc(c.in.Policies, func(np *networkingv1.NetworkPolicy) bool { return np.Name == "np100" })
	edited := c.in.Policies[i].DeepCopy()
	edited.Spec.Ingress = nil
	c.in.Policies = slices.Clone(c.in.Policies)
	c.in.Policies[i] = edited
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	if st := k.Stats(); st.PoliciesParsed != 1 || st.PoliciesResolved != 1 {
		t.Fatalf("one policy edited: %+v", st)
	}
	// The same edit undone while every pod's status is written (new
	// objects, the same to every policy): a render of the whole node, as
	// a policy changed, that resolves that policy alone again.
	c.in.Policies = slices.Clone(c.in.Policies)
	c.in.Policies[i] = edited.DeepCopy()
	c.in.Policies[i].Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{}}
	for j := range c.in.Pods {
		c.writeStatus(j, corev1.ConditionTrue)
	}
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	if st := k.Stats(); st.Patched || st.PoliciesResolved != 1 {
		t.Fatalf("one policy edited and every pod's status written: %+v; want a whole render that resolves one policy", st)
	}
	// A pod in a namespace no policy looks at, with labels none selects.
	c.nss = append(c.nss, "quiet")
	c.in.Namespaces = append(slices.Clone(c.in.Namespaces), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "quiet", Labels: map[string]string{"team": "none"}}})
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	c.in.Pods = append(slices.Clone(c.in.Pods), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "quiet", Name: "alone", Labels: map[string]string{"other": "x"}},
		Spec: corev1.PodSpec{NodeName: "n2"}, Status: corev1.PodStatus{PodIP: "198.18.1.250"}})
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	st := k.Stats()
	// Only policies with a peer that selects it (through an empty or
	// negative selector) or that depend on every pod may be resolved again.
	wide := 0
	for _, np := range c.in.Policies {
		pp := parsePolicy(np)
		for _, rule := range slices.Concat(pp.ingress, pp.egress) {
			for _, peer := range rule.peers {
				if peer.nsSel != nil && peer.nsSel.Matches(labels.Set{"team": "none", corev1.LabelMetadataName: "quiet"}) &&
					peer.podSel.Matches(labels.Set{"other": "x"}) {
					wide++
				}
			}
		}
		if pp.everyPod {
			wide++
		}
	}
	if st.PoliciesResolved > wide {
		t.Fatalf("a pod no selector can match made %d policies resolve again (at most %d select every pod): %+v", st.PoliciesResolved, wide, st)
	}
}

// TestCacheKeepsUnchangedDispatchSets: a render that changes no pod hands
// out the dispatch sets' element lists of the last one (the nft side
// indexes a list once), and a pod's change gives new ones.
func TestCacheKeepsUnchangedDispatchSets(t *testing.T) {
	c := newChurn(7)
	for range 30 {
		c.addPod()
	}
	for i := range 20 {
		c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+i, c.nss))
	}
	k := NewCache()
	first, err := k.Render(c.in)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{mapIngressPods, mapEgressPods, setHairpin, setPodSources}
	elems := func(s *spec.NodeState, name string) []spec.NFTElement { return s.NFTables.Set(name).Elements }
	for _, name := range names {
		if len(elems(first, name)) == 0 {
			t.Fatalf("set %s is empty: the test proves nothing", name)
		}
	}
	// A policy nobody is selected by: no pod's dispatch changes.
	c.in.Policies = append(slices.Clone(c.in.Policies), &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.nss[0], Name: "selects-nobody"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"no": "such"}}},
	})
	second, err := k.Render(c.in)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if a, b := elems(first, name), elems(second, name); &a[0] != &b[0] {
			t.Errorf("set %s: a render that changed no pod built a new element list", name)
		}
	}
	// A new local pod with an allocation: the source validation set gains it.
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: c.nss[0], Name: "new", UID: "u-new"},
		Spec: corev1.PodSpec{NodeName: "n1"}, Status: corev1.PodStatus{PodIP: "198.18.0.253"}}
	c.in.Pods = append(slices.Clone(c.in.Pods), p)
	c.in.Allocations = slices.Clone(c.in.Allocations)
	c.allocate(p)
	third, err := k.Render(c.in)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := elems(second, setPodSources), elems(third, setPodSources); len(b) != len(a)+1 {
		t.Errorf("a new pod took %s from %d to %d elements", setPodSources, len(a), len(b))
	}
}
