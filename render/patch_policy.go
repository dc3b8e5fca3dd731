package render

import (
	"cmp"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/terway-reconciler/terway/spec"
)

// A patch's policy side (patch.go): the policy groups the changed pods
// leave and join, the groups the node did not have, and the policies
// that gain their first target or lose their last.

// podPolicies are the changes to the policy groups a patch makes.
type podPolicies struct {
	groups   map[string][2]string // each changed pod's group keys now
	members  map[string]int       // group members gained (lost when negative)
	awaiting map[string]int       // awaiting pods gained (lost when negative)
	created  map[string]*patchGroup
	targets  map[*policyEntry]int // targets gained (lost when negative)
	// problems are the rule problems of the policies that gain their
	// first target (in) or lose their last (out).
	problemsIn, problemsOut []spec.Problem
	rendered                int
}

// pods are the groups' members and awaiting pods gained (lost when
// negative), by group key.
func (p *podPolicies) pods() map[string]int {
	out := maps.Clone(p.members)
	for gk, d := range p.awaiting {
		out[gk] += d
	}
	return out
}

// policyChanges finds the policy groups of the changed pods now and
// renders the groups the node did not have. A policy that gains its first
// target or awaiting pod has its rules resolved against the peers, which
// no patch changes; its rule problems show while it has a target.
func (b *patchBase) policyChanges(k *Cache, r *renderer, changes map[string]*podChange) *podPolicies {
	p := &podPolicies{groups: map[string][2]string{}, members: map[string]int{}, awaiting: map[string]int{},
		created: map[string]*patchGroup{}, targets: map[*policyEntry]int{}}
	selecting := map[string][]*policyEntry{}
	for key := range changes {
		if before := b.pods[key]; before != nil {
			var was map[string]int // where its groups count it
			switch {
			case before.entry != nil && before.obj != nil:
				for _, e := range k.selecting(before.obj) {
					p.targets[e]--
				}
				was = p.members
			case before.awaits:
				was = p.awaiting
			}
			for _, g := range before.groups {
				if g != "" && was != nil {
					was[g]--
				}
			}
		}
		after := r.byKey[key]
		switch {
		case after != nil && after.entry != nil && after.pod != nil:
			selecting[key] = k.selecting(after.pod)
			for _, e := range selecting[key] {
				p.targets[e]++
			}
		case after != nil && after.awaiting():
			selecting[key] = k.selecting(after.pod)
		}
	}
	for e, d := range p.targets {
		switch n := b.targets[e]; {
		case n == 0 && d > 0:
			p.problemsIn = append(p.problemsIn, e.parsed.ruleProblems...)
		case n > 0 && n+d == 0:
			p.problemsOut = append(p.problemsOut, e.parsed.ruleProblems...)
		}
	}
	for _, policies := range selecting {
		for _, e := range policies {
			if e.res == nil || !e.res.rulesResolved {
				b.resolveRules(k, e)
			}
		}
	}
	for key, policies := range selecting {
		ns, _ := splitKey(key)
		after := r.byKey[key]
		var keys [2]string
		for i, dir := range []string{dirIngress, dirEgress} {
			var isolating []*policyEntry
			for _, e := range policies {
				if dir == dirIngress && e.parsed.isolatesIngress || dir == dirEgress && e.parsed.isolatesEgress {
					isolating = append(isolating, e)
				}
			}
			if len(isolating) == 0 {
				continue
			}
			gk := groupKey(dir, after, isolating)
			keys[i] = gk
			if after.entry != nil {
				p.members[gk]++
			} else {
				p.awaiting[gk]++
			}
			if b.groups[gk] == nil && p.created[gk] == nil {
				g := &policyGroup{key: gk, ns: ns, policies: isolating}
				if after.entry != nil {
					g.targets = []*podInfo{after}
				} else {
					g.awaiting = []*podInfo{after}
				}
				rendered := false
				out := k.group(g, func() *groupOutput { rendered = true; return renderGroup(dir, g) })
				if rendered {
					p.rendered++
				}
				p.created[gk] = &patchGroup{out: out}
			}
		}
		p.groups[key] = keys
	}
	return p
}

// resolveRules resolves the rules of a policy that had no target and no
// awaiting pod in the last document (so none resolved) against its peers,
// as a render of the node would: the peers are the last full render's,
// which no patch changes (a peer's object there may be older than the
// inputs', but is the same to every policy: samePeer). The entry is left
// dirty, so that the next full render resolves it whole (its targets
// too) rather than trust what a patch made.
func (b *patchBase) resolveRules(k *Cache, e *policyEntry) {
	c := &policyCompiler{r: b.peers, nsLabels: b.nsLabels, nsNames: b.nsNames}
	res := &resolution{rulesResolved: true}
	for _, rule := range e.parsed.ingress {
		res.ingress = append(res.ingress, c.resolveRule(e.parsed, rule, false))
	}
	for _, rule := range e.parsed.egress {
		res.egress = append(res.egress, c.resolveRule(e.parsed, rule, true))
	}
	if e.res == nil || !res.sameRules(e.res) {
		e.version = k.nextVersion()
	}
	e.res, e.dirty = res, true
}

// selecting lists the policies of pod's namespace that select it as a
// target, in name order (the order of the render's policies).
func (k *Cache) selecting(pod *corev1.Pod) []*policyEntry {
	if out, known := k.selectedBy[pod]; known {
		return out
	}
	// The policies that need none of the pod's labels, and those that
	// need one it has (byLabel): not the namespace's every policy, which
	// was most of the work at 50 policies a namespace.
	var out []*policyEntry
	set := labels.Set(pod.Labels)
	add := func(list []*policyEntry) {
		for _, e := range list {
			if e.parsed.podSel.Matches(set) {
				out = append(out, e)
			}
		}
	}
	add(k.byNoLabel[pod.Namespace])
	for key, value := range pod.Labels {
		add(k.byLabel[nsLabel{pod.Namespace, key, value}])
	}
	slices.SortFunc(out, func(a, b *policyEntry) int { return cmp.Compare(a.parsed.key, b.parsed.key) })
	if k.selectedBy == nil || len(k.selectedBy) >= maxSelectedBy {
		// Status writes make new objects of the same pods: the memo
		// starts again rather than keep the old ones.
		k.selectedBy = map[*corev1.Pod][]*policyEntry{}
	}
	out = slices.Clip(out) // shared by every caller: an append copies
	k.selectedBy[pod] = out
	return out
}

// maxSelectedBy bounds Cache.selectedBy: a node's pods, each an object or
// two, fit many times.
const maxSelectedBy = 4096

// chainOf is the chain of group key gk, "" for none.
func (b *patchBase) chainOf(p *podPolicies, gk string) string {
	switch {
	case gk == "":
		return ""
	case b.groups[gk] != nil:
		return b.groups[gk].out.chain.Name
	}
	return p.created[gk].out.chain.Name
}
