package engine

import (
	"maps"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// podScope restricts a plan to some pods.
type podScope struct {
	pods map[string]bool
	// only is the pod when there is one (the CNI path): reduce asks about
	// every item of the document, and a string comparison is cheaper than a
	// map lookup.
	only       string
	veths      []string // host veth names of the pods, present or removed
	namespaces []string // the pods' network namespaces still in the document
	// hostLinks are the host links a scoped plan observes: the pods' veths
	// and the node's ENI links (by their names in the document).
	hostLinks []string
	// byAddr names the scoped pod of each address: from the document, and
	// from PlanOptions.PodIPs for pods it no longer has.
	byAddr map[string]string
	// observed are the namespaces other than the host's that the plan
	// observes: the pods' and PlanOptions.Namespaces.
	observed []string
	// others are the namespaces of the document's pods outside the scope,
	// of those the plan observes: a scoped plan writes nothing there but
	// its own pods' items, even when a scoped pod names the same namespace
	// (a second sandbox's ADD into a namespace that holds a pod must not
	// move that pod's ENI out).
	others map[string]bool
}

// fewScopedAddrs is the most addresses newPodScope compares one by one.
const fewScopedAddrs = 8

func newPodScope(desired *spec.NodeState, opts PlanOptions) *podScope {
	s := &podScope{pods: map[string]bool{}, byAddr: map[string]string{}}
	for _, key := range opts.Pods {
		s.pods[key] = true
		s.veths = append(s.veths, spec.HostVethName(key))
	}
	if len(s.pods) == 1 {
		s.only = opts.Pods[0]
	}
	for key, ip := range opts.PodIPs {
		if s.has(key) && ip != "" {
			s.byAddr[ip] = key
		}
	}
	for _, p := range desired.Pods {
		if s.has(p.Key) {
			if p.Netns != spec.HostNetns {
				s.namespaces = append(s.namespaces, p.Netns)
			}
			s.byAddr[p.IP] = p.Key
		}
	}
	// A plan observes the host, the pods' namespaces and those of
	// opts.Namespaces: others need hold no more than those of them (a map
	// of every pod's was a tenth of what a CNI request allocated at 250
	// pods), as filter drops what is in any other.
	s.observed = slices.Concat(s.namespaces, opts.Namespaces)
	// A CNI request's one or two addresses are compared one by one with
	// every other pod's: a delete from the map for each of them hashed
	// hundreds of addresses per request at scale. A larger scope (an
	// admission's, a batch's) deletes from the map.
	var fewAddrs []string
	few := len(s.byAddr) <= fewScopedAddrs
	if few {
		fewAddrs = slices.Collect(maps.Keys(s.byAddr))
	}
	for _, p := range desired.Pods {
		if !s.has(p.Key) {
			// Another pod holds the address: its rules are not the
			// scope's, whatever the caller remembers.
			if !few || slices.Contains(fewAddrs, p.IP) {
				delete(s.byAddr, p.IP)
			}
			if p.Netns != spec.HostNetns && s.observes(p.Netns) {
				if s.others == nil {
					s.others = map[string]bool{}
				}
				s.others[p.Netns] = true
			}
		}
	}
	slices.Sort(s.namespaces)
	s.hostLinks = slices.Clone(s.veths)
	for _, l := range desired.Links {
		if l.Netns == spec.HostNetns && l.Kind == spec.LinkENI {
			s.hostLinks = append(s.hostLinks, l.Name)
		}
	}
	return s
}

// filter keeps the operations of the scoped pods: their own items (by Pod),
// deletions of what lives on their host veths, node-level creations and
// updates (cheap, and converged on a healthy node), and every nftables
// operation (nft.Reconciler.PlanScoped limits that diff to the pods).
// Items of other pods whose namespaces were not observed would otherwise
// plan as creations.
func (s *podScope) filter(ops []op.Op) []op.Op {
	var out []op.Op
	for _, o := range ops {
		switch {
		case o.Kind == nft.Kind, s.has(o.Pod):
			out = append(out, o)
		case s.others[o.Netns]:
			// Another pod's namespace: nothing there is the scope's.
		case o.Netns != spec.HostNetns && !slices.Contains(s.observed, o.Netns):
			// A namespace the plan did not observe: none of the
			// scope's, and maybe another pod's.
		case o.Pod == "" && o.Action != op.Delete:
			out = append(out, o)
		case o.Pod == "" && s.onScopedVeth(o.Text):
			out = append(out, o)
		}
	}
	return out
}

// claimRules gives the observed host rules that name a scoped pod's
// address to that pod: rules name no link, so this is how a scoped plan
// knows a stale rule (of a deleted pod, or of an address that moved to
// another ENI) for the scope's to delete.
func (s *podScope) claimRules(observed []spec.Rule) {
	for i, r := range observed {
		if r.Netns != spec.HostNetns {
			continue
		}
		for _, sel := range []string{r.From, r.To} {
			if ip, host := strings.CutSuffix(sel, "/32"); host {
				if key, ok := s.byAddr[ip]; ok {
					observed[i].Pod = key
				}
			}
		}
	}
}

// nftScope names the scoped pods, their addresses and their host veths
// (the dispatch maps' keys) for a scoped nftables plan
// (nft.Reconciler.PlanScoped). It is false when a pod's address is unknown
// (a DEL without PodIPs): only the whole table's diff then finds the pod's
// elements in other pods' sets and maps.
func (s *podScope) nftScope() (nft.Scope, bool) {
	sc := nft.Scope{Pods: slices.Sorted(maps.Keys(s.pods)), Addrs: slices.Clone(s.veths)}
	known := map[string]bool{}
	for ip, key := range s.byAddr {
		sc.Addrs = append(sc.Addrs, ip)
		known[key] = true
	}
	slices.Sort(sc.Addrs)
	return sc, len(known) == len(s.pods)
}

// has reports whether the pod (namespace/name) is in the scope.
func (s *podScope) has(pod string) bool {
	if s.only != "" {
		return equalFromEnd(pod, s.only)
	}
	return s.pods[pod]
}

// equalFromEnd is a == b for the names newPodScope compares with every
// pod's: pod keys and namespace paths, which share their beginnings and
// mostly differ in their last byte. Looking at that byte first spares
// most calls to the runtime's comparison, 15 µs of an ADD at 250 pods.
func equalFromEnd(a, b string) bool {
	return len(a) == len(b) && (len(a) == 0 || a[len(a)-1] == b[len(b)-1]) && a == b
}

// observes reports whether the plan observes the namespace ns.
func (s *podScope) observes(ns string) bool {
	for _, o := range s.observed {
		if equalFromEnd(o, ns) {
			return true
		}
	}
	return false
}

func (s *podScope) onScopedVeth(text string) bool {
	for _, v := range s.veths {
		if strings.Contains(text, v) {
			return true
		}
	}
	return false
}

// reduce returns the part of the document a scoped plan works on: the
// scoped pods' items and node-level items (no pod), and the whole nftables
// table (nft.Reconciler.PlanScoped takes the pods' part of it). Kinds then
// build ownership, observe and diff only that much; other pods' observed
// objects plan as deletions, which filter drops.
func (s *podScope) reduce(d *spec.NodeState) *spec.NodeState {
	r := withItemsOf(&spec.NodeState{APIVersion: d.APIVersion, Kind: d.Kind, Node: d.Node, Mode: d.Mode, NFTables: d.NFTables, ENI: d.ENI},
		d, func(pod string) bool { return pod == "" || s.has(pod) })
	r.Pods = filterItems(d.Pods, func(x *spec.Pod) bool { return s.has(x.Key) })
	return r
}

// withItemsOf sets r's kernel item sections to d's items whose pod keep
// accepts (node-level items have pod ""), and returns r.
func withItemsOf(r, d *spec.NodeState, keep func(pod string) bool) *spec.NodeState {
	r.SetItems(d.ItemsOf(keep))
	return r
}

func filterItems[T any](items []T, keep func(T) bool) []T {
	var out []T
	for _, it := range items {
		if keep(it) {
			out = append(out, it)
		}
	}
	return out
}
