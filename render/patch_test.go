package render

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/terway-reconciler/terway/spec"
)

// agentStep makes one change of the kinds a node agent's CNI requests make
// between two admissions (agent: admission.go): an ADD allocates a local
// pod and holds it back as a peer; a DEL, a new sandbox, or an edit of a
// pod held back; an admission; now and then any change of step.
func (c *churn) agentStep() string {
	in := &c.in
	hold := func(change func(map[string]bool)) {
		held := maps.Clone(in.PeersHeldBack)
		if held == nil {
			held = map[string]bool{}
		}
		change(held)
		in.PeersHeldBack = held
	}
	allocated := map[string]int{}
	for i, a := range in.Allocations {
		allocated[a.Metadata.Namespace+"/"+a.Metadata.Name] = i
	}
	depart := func(change func(map[string]DepartingPeer)) {
		departing := maps.Clone(in.PeersDeparting)
		if departing == nil {
			departing = map[string]DepartingPeer{}
		}
		change(departing)
		in.PeersDeparting = departing
	}
	var heldPods []int // indexes in in.Pods of pods held back
	var admitted []int // indexes in in.Allocations of pods admitted
	for i, p := range in.Pods {
		if in.PeersHeldBack[p.Namespace+"/"+p.Name] {
			heldPods = append(heldPods, i)
		}
	}
	for i, a := range in.Allocations {
		if !in.PeersHeldBack[a.Metadata.Namespace+"/"+a.Metadata.Name] {
			admitted = append(admitted, i)
		}
	}
	switch n := c.pick(100); {
	case n < 30:
		var free []*corev1.Pod
		for _, p := range in.Pods {
			if _, ok := allocated[p.Namespace+"/"+p.Name]; !ok && p.Spec.NodeName == "n1" {
				free = append(free, p)
			}
		}
		if len(free) == 0 || c.pick(3) == 0 && len(in.Pods) < 60 {
			free = []*corev1.Pod{c.addLocalPod()}
		}
		p := free[c.pick(len(free))]
		ip := c.freeIP() // the agent's IPAM's, whatever the pod's status says yet
		in.Allocations = slices.Clone(in.Allocations)
		c.allocate(p)
		a := in.Allocations[len(in.Allocations)-1] // new: not rendered yet
		a.Spec.IP, a.Spec.ENI = ip, c.eniOf(ip)
		hold(func(m map[string]bool) { m[p.Namespace+"/"+p.Name] = true })
		return "ADD, held back"
	case n < 42 && len(heldPods) > 0:
		p := in.Pods[heldPods[c.pick(len(heldPods))]]
		key := p.Namespace + "/" + p.Name
		if i, ok := allocated[key]; ok {
			in.Allocations = slices.Delete(slices.Clone(in.Allocations), i, i+1)
		}
		if c.pick(2) == 0 {
			hold(func(m map[string]bool) { delete(m, key) })
		}
		return "DEL of a pod held back"
	case n < 45 && len(admitted) > 0:
		i := admitted[c.pick(len(admitted))]
		a := in.Allocations[i]
		in.Allocations = slices.Delete(slices.Clone(in.Allocations), i, i+1)
		depart(func(m map[string]DepartingPeer) {
			m[a.Metadata.Namespace+"/"+a.Metadata.Name] = DepartingPeer{IP: a.Spec.IP, UID: a.Spec.UID}
		})
		return "DEL of an admitted pod, its address departing"
	case n < 47 && len(in.PeersDeparting) > 0:
		depart(func(m map[string]DepartingPeer) {
			for _, key := range slices.Sorted(maps.Keys(m)) { // sorted: the walk repeats from its seed
				if c.pick(2) == 0 {
					delete(m, key)
				}
			}
		})
		return "departing addresses withdrawn"
	case n < 52:
		hold(func(m map[string]bool) {
			for _, key := range slices.Sorted(maps.Keys(m)) { // sorted: the walk repeats from its seed
				if c.pick(2) == 0 {
					delete(m, key)
				}
			}
		})
		return "admission"
	case n < 60 && len(heldPods) > 0:
		c.replacePod(heldPods[c.pick(len(heldPods))], func(p *corev1.Pod) { p.Labels = c.podLabels() })
		return "relabel a pod held back"
	case n < 64 && len(heldPods) > 0:
		c.replacePod(heldPods[c.pick(len(heldPods))], func(p *corev1.Pod) { p.Spec.Containers[0].Ports = c.ports() })
		return "change a held pod's container ports"
	case n < 68 && len(heldPods) > 0:
		c.replacePod(heldPods[c.pick(len(heldPods))], func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationKubeEgress: []string{"10M", "1G", "fast"}[c.pick(3)]}
		})
		return "bandwidth annotation of a pod held back"
	case n < 72 && len(heldPods) > 0:
		p := in.Pods[heldPods[c.pick(len(heldPods))]]
		if i, ok := allocated[p.Namespace+"/"+p.Name]; ok {
			in.Allocations = slices.Clone(in.Allocations)
			c.next++
			a := *in.Allocations[i] // a new allocation: the inputs' are not changed
			in.Allocations[i] = &a
			a.Spec.ContainerID = fmt.Sprintf("c%d", c.next)
			a.Spec.Netns = fmt.Sprintf("/var/run/netns/sandbox-%d", c.next)
			a.Spec.IP = c.freeIP()
			a.Spec.ENI = c.eniOf(a.Spec.IP)
		}
		return "new sandbox of a pod held back"
	case n < 75 && len(heldPods) > 0:
		i := heldPods[c.pick(len(heldPods))]
		in.Pods = slices.Delete(slices.Clone(in.Pods), i, i+1)
		return "object of a pod held back deleted before its DEL"
	case n < 77 && len(in.Pods) < 60:
		ns := fmt.Sprintf("bare%d", c.pick(2))
		p := c.addLocalPod()
		in.Pods = slices.Clone(in.Pods)
		p.Namespace = ns // a namespace no object names
		in.Allocations = slices.Clone(in.Allocations)
		c.allocate(p)
		hold(func(m map[string]bool) { m[p.Namespace+"/"+p.Name] = true })
		return "ADD in a namespace without an object"
	case n < 79 && len(heldPods) > 0:
		// A second interface of one sandbox: another pod's allocation names
		// the same network namespace (CNI allows it; render keeps both).
		p := in.Pods[heldPods[c.pick(len(heldPods))]]
		i, ok := allocated[p.Namespace+"/"+p.Name]
		if !ok || len(in.Allocations) < 2 {
			return "nothing"
		}
		j := c.pick(len(in.Allocations))
		in.Allocations = slices.Clone(in.Allocations)
		a := *in.Allocations[i] // a new allocation: the inputs' are not changed
		a.Spec.Netns, a.Spec.IfName = in.Allocations[j].Spec.Netns, "net1"
		in.Allocations[i] = &a
		return "a pod held back shares another's network namespace"
	case n < 85:
		c.repair()
		return "conflicts resolved"
	case n < 88 && len(in.Pods) > 0:
		c.writeStatus(c.pick(len(in.Pods)), []corev1.ConditionStatus{"True", "False"}[c.pick(2)])
		return statusStep
	}
	return c.step()
}

// statusStep is agentStep's name for a pod's status written.
const statusStep = "a pod's status written"

// repair takes out what makes one pod's input decide another's (which
// the cache renders whole): a policy listed twice, a second pod object or
// allocation of one pod, an allocation of a pod elsewhere or of an
// address or interface another pod has.
func (c *churn) repair() {
	in := &c.in
	seen := map[string]bool{}
	var policies []*networkingv1.NetworkPolicy
	for _, np := range in.Policies {
		if key := np.Namespace + "/" + np.Name; !seen[key] {
			seen[key] = true
			policies = append(policies, np)
		}
	}
	pods, ips := map[string]*corev1.Pod{}, map[string]bool{}
	var kept []*corev1.Pod
	for _, p := range in.Pods {
		key := p.Namespace + "/" + p.Name
		if pods[key] != nil || p.Status.PodIP != "" && ips[p.Status.PodIP] {
			continue
		}
		pods[key], ips[p.Status.PodIP] = p, true
		kept = append(kept, p)
	}
	allocs, slots, owned := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var keptAllocs []*spec.Allocation
	for _, a := range in.Allocations {
		key := a.Metadata.Namespace + "/" + a.Metadata.Name
		p := pods[key]
		if allocs[key] || slots[a.Spec.Netns] || owned[a.Spec.IP] || p != nil && (p.Spec.NodeName != "n1" || terminated(p)) {
			continue
		}
		allocs[key], slots[a.Spec.Netns], owned[a.Spec.IP] = true, true, true
		keptAllocs = append(keptAllocs, a)
	}
	in.Policies, in.Pods, in.Allocations = policies, kept, keptAllocs
}

// eniMode makes the churn's node an eni-multi-ip one, with two shared
// ENIs that hold every address freeIP gives.
func (c *churn) eniMode() {
	c.in.Config = Config{Mode: spec.PodModeENIMultiIP, MaxENIs: 4, IPsPerENI: 130, MinPoolSize: 2, MaxPoolSize: 8}
	for i, half := range [][2]int{{2, 127}, {128, 253}} {
		e := spec.ENI{Metadata: spec.ObjectMeta{Name: fmt.Sprintf("eni-%d", i+1)}, Spec: spec.ENISpec{
			MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1), PrimaryIP: fmt.Sprintf("198.18.0.%d", half[0]),
			VSwitchCIDR: "198.18.0.0/24", Gateway: "198.18.0.254", DeviceIndex: i + 1}}
		// Some addresses are not on an ENI yet: the pool's demand.
		for ip := half[0] + 1; ip <= half[1]-20; ip++ {
			e.Spec.SecondaryIPs = append(e.Spec.SecondaryIPs, fmt.Sprintf("198.18.0.%d", ip))
		}
		c.in.ENIs = append(c.in.ENIs, e)
	}
}

// eniOf is the ENI an allocation of ip names in eni-multi-ip mode: the one
// whose half of the addresses holds it (it may not hold it yet).
func (c *churn) eniOf(ip string) string {
	if c.in.Config.Mode != spec.PodModeENIMultiIP {
		return ""
	}
	var last int
	fmt.Sscanf(ip, "198.18.0.%d", &last)
	if last < 128 {
		return "eni-1"
	}
	return "eni-2"
}

// addLocalPod adds a pod on this node with an address no pod has, and no
// allocation.
func (c *churn) addLocalPod() *corev1.Pod {
	c.next++
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: c.nss[c.pick(len(c.nss))], Name: fmt.Sprintf("p%d", c.next),
			UID: types.UID(fmt.Sprint("u", c.next)), Labels: c.podLabels()},
		Spec:   corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: c.ports()}}},
		Status: corev1.PodStatus{PodIP: c.freeIP()},
	}
	c.in.Pods = append(slices.Clone(c.in.Pods), p)
	return p
}

// freeIP is an address of the node's pod CIDR that no pod or allocation
// has, when one is left.
func (c *churn) freeIP() string {
	used := map[string]bool{}
	for _, p := range c.in.Pods {
		used[p.Status.PodIP] = true
	}
	for _, a := range c.in.Allocations {
		used[a.Spec.IP] = true
	}
	for _, d := range c.in.PeersDeparting {
		used[d.IP] = true // the agent gives a departing address to no pod
	}
	start := c.pick(252)
	for i := range 252 {
		ip := fmt.Sprintf("198.18.0.%d", 2+(start+i)%252)
		if !used[ip] {
			return ip
		}
	}
	return "198.18.0.254"
}

// TestCachePatchMatchesRender walks clusters through the changes a node
// agent's CNI requests make (agentStep), most of which the cache patches
// into its last document (patch.go), and compares every render with a
// render from scratch, byte for byte. It fails when too few renders were
// patches to prove anything about them.
func TestCachePatchMatchesRender(t *testing.T) {
	steps, walks := 1000, 7
	if testing.Short() {
		steps = 200
	}
	total, patched, podPatches, eniPatches := 0, 0, 0, 0
	departs, departPatches := 0, 0  // DELs of admitted pods, their addresses departing
	listKept := 0                   // patches that found the pod list of the last scan
	statuses, statusPatches := 0, 0 // pods' status written, and how many of those renders were patches
	for walk := range walks {
		c := newChurn(uint64(100 + walk))
		if walk < 6 {
			for range 40 {
				c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+len(c.in.Policies), c.nss))
			}
		} // the last walk starts without policies: admissions are patches until one comes
		if walk == 4 || walk == 5 {
			c.eniMode() // an eni-multi-ip node
		}
		c.repair()
		k := NewCache()
		var history []string
		for step := range steps {
			history = append(history, c.agentStep())
			total++
			if want, _ := matchesScratch(t, k, c.in, fmt.Sprintf("walk %d step %d", walk, step), history); want == nil {
				continue
			}
			departed := history[len(history)-1] == "DEL of an admitted pod, its address departing"
			if departed {
				departs++
			}
			status := history[len(history)-1] == statusStep
			if status {
				statuses++
			}
			if st := k.Stats(); st.Patched {
				if status {
					statusPatches++
				}
				if departed {
					departPatches++
				}
				patched++
				if st.PodListKept {
					listKept++
				}
				if st.PodsPatched > 0 {
					podPatches++
					if walk == 4 || walk == 5 {
						eniPatches++
					}
				}
			}
		}
	}
	t.Logf("%d renders compared, 0 differences; %d were patches, %d of which changed pods (%d in eni-multi-ip mode)",
		total, patched, podPatches, eniPatches)
	if podPatches*5 < total || eniPatches*5 < total/3 {
		t.Errorf("%d of %d renders were patches that changed pods, %d in eni-multi-ip mode: too few to prove the patch right",
			podPatches, total, eniPatches)
	}
	t.Logf("%d patches kept the pod list of the last scan", listKept)
	if listKept*10 < total {
		t.Errorf("%d of %d renders were patches that kept the pod list: too few to prove that path right", listKept, total)
	}
	// A status changes no policy: the renders after one are patches
	// unless the document could not be patched anyway (a cross-pod
	// document, a policy listed twice): 190 of 227 (84 %) in these walks,
	// which repeat from their seeds.
	t.Logf("%d of %d renders after a pod's status was written were patches", statusPatches, statuses)
	if statusPatches*3 < statuses*2 {
		t.Errorf("only %d of %d renders after a pod's status was written were patches", statusPatches, statuses)
	}
	t.Logf("%d of %d DELs of admitted pods whose addresses depart were patches", departPatches, departs)
	if departPatches*2 < departs {
		t.Errorf("only %d of %d DELs of admitted pods whose addresses depart were patches", departPatches, departs)
	}
}

// TestCacheCopyMatchesRender walks two caches through the changes of
// agentStep as the agent's main and admission caches go: main renders
// every change as it is, the other the same change with every held pod
// admitted (as a step's render ahead), and now and then the other is made
// a copy of main (CopyFrom) and the two change places. Every render of
// either is compared with a render from scratch, so that a copy that
// shares what the other then modifies shows.
func TestCacheCopyMatchesRender(t *testing.T) {
	steps := 1000
	if testing.Short() {
		steps = 150
	}
	c := newChurn(7)
	for range 30 {
		c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+len(c.in.Policies), c.nss))
	}
	c.repair()
	main, other := NewCache(), NewCache()
	var history []string
	copies := 0
	for step := range steps {
		history = append(history, c.agentStep())
		if step%5 == 4 {
			other.CopyFrom(main)
			copies++
			main, other = other, main
		}
		matchesScratch(t, main, c.in, fmt.Sprintf("step %d, main", step), history)
		admitted := c.in
		admitted.PeersHeldBack = nil
		matchesScratch(t, other, admitted, fmt.Sprintf("step %d, other, every pod admitted", step), history)
	}
	t.Logf("%d changes, each rendered by both caches and compared, %d copies", steps, copies)
}

// TestStatusWritesElsewhereStayPatches: more status writes of pods on
// other nodes than a patch takes changed pods (maxPatchedPods) between
// two renders, with an ADD among them, still give a patch of the ADD's
// pod alone, the same document as a render from scratch; a relabelled
// pod among them does not.
func TestStatusWritesElsewhereStayPatches(t *testing.T) {
	c := newChurn(11)
	for len(c.in.Pods) < 3*maxPatchedPods {
		c.addPod()
	}
	for i := range 40 {
		c.in.Policies = append(c.in.Policies, randomPolicy(c.rng, 100+i, c.nss))
	}
	c.repair()
	k := NewCache()
	if _, err := k.Render(c.in); err != nil {
		t.Fatal(err)
	}
	writeStatus := func() int {
		n := 0
		for i, p := range c.in.Pods {
			if p.Spec.NodeName != "n1" {
				c.writeStatus(i, corev1.ConditionTrue)
				n++
			}
		}
		return n
	}
	if n := writeStatus(); n <= maxPatchedPods {
		t.Fatalf("only %d pods on other nodes: the test proves nothing", n)
	}
	p := c.addLocalPod()
	c.in.Allocations = slices.Clone(c.in.Allocations)
	c.allocate(p)
	c.in.Allocations[len(c.in.Allocations)-1].Spec.IP = c.freeIP()
	c.in.PeersHeldBack = map[string]bool{p.Namespace + "/" + p.Name: true}
	history := []string{"status written elsewhere, and an ADD"}
	matchesScratch(t, k, c.in, "ADD", history)
	if st := k.Stats(); !st.Patched || st.PodsPatched != 1 {
		t.Fatalf("an ADD among status writes elsewhere: %+v; want a patch of its pod alone", st)
	}
	// A pod elsewhere relabelled, given another address, or ended,
	// among as many status writes: a changed peer, which a patch does not
	// take.
	for what, change := range map[string]func(*corev1.Pod){
		"relabelled":       func(p *corev1.Pod) { p.Labels = map[string]string{"app": "relabelled"} },
		"given an address": func(p *corev1.Pod) { p.Status.PodIP = "198.18.1.251" },
		"ended":            func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded },
		"recreated (UID)":  func(p *corev1.Pod) { p.UID = "another" },
		"scheduled here":   func(p *corev1.Pod) { p.Spec.NodeName = "n1" },
	} {
		writeStatus()
		i := slices.IndexFunc(c.in.Pods, func(p *corev1.Pod) bool {
			return p.Spec.NodeName != "n1" && p.Status.Phase != corev1.PodSucceeded && p.Status.PodIP != "198.18.1.251"
		})
		c.replacePod(i, change)
		history = append(history, "status written elsewhere, and a pod elsewhere "+what)
		matchesScratch(t, k, c.in, what, history)
		if k.Stats().Patched {
			t.Fatalf("a peer %s was patched: %+v", what, k.Stats())
		}
	}
}
