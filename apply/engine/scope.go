package engine

import (
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// podScope restricts a plan to some pods.
type podScope struct {
	pods       map[string]bool
	veths      []string // host veth names of the pods, present or removed
	namespaces []string // the pods' network namespaces still in the document
	// hostLinks are the host links a scoped plan observes: the pods' veths
	// and the node's ENI links (by their names in the document).
	hostLinks []string
}

func newPodScope(desired *spec.NodeState, pods []string) *podScope {
	s := &podScope{pods: map[string]bool{}}
	for _, key := range pods {
		s.pods[key] = true
		s.veths = append(s.veths, spec.HostVethName(key))
	}
	for _, p := range desired.Pods {
		if s.pods[p.Key] && p.Netns != spec.HostNetns {
			s.namespaces = append(s.namespaces, p.Netns)
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
// operation (that diff is incremental already). Items of other pods whose
// namespaces were not observed would otherwise plan as creations.
func (s *podScope) filter(ops []op.Op) []op.Op {
	var out []op.Op
	for _, o := range ops {
		switch {
		case o.Kind == nft.Kind, s.pods[o.Pod]:
			out = append(out, o)
		case o.Pod == "" && o.Action != op.Delete:
			out = append(out, o)
		case o.Pod == "" && s.onScopedVeth(o.Text):
			out = append(out, o)
		}
	}
	return out
}

func (s *podScope) onScopedVeth(text string) bool {
	for _, v := range s.veths {
		if strings.Contains(text, v) {
			return true
		}
	}
	return false
}
