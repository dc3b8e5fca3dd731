package explain

import (
	"fmt"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Flip is one pod pair, protocol and port whose verdict a change reverses.
type Flip struct {
	From, To string
	PortKey
	Before, After bool
}

func (f Flip) String() string {
	word := map[bool]string{true: "allowed", false: "denied"}
	return fmt.Sprintf("%s -> %s %s/%d: %s -> %s", f.From, f.To, f.Protocol, f.Port, word[f.Before], word[f.After])
}

// Flips compares every pair of pods both documents have, on the ports
// either model considers, and groups the reversals by cause: the changed
// policies (named in changed) that isolate the destination for ingress or
// the source for egress in either model; "other changes" when none does.
func Flips(before, after *Model, changed []string) (map[string][]Flip, error) {
	ports := slices.Concat(before.Ports(), after.Ports())
	slices.SortFunc(ports, func(a, b PortKey) int {
		if a.Protocol != b.Protocol {
			return strings.Compare(a.Protocol, b.Protocol)
		}
		return int(a.Port) - int(b.Port)
	})
	ports = slices.Compact(ports)
	mb, err := before.Matrices(ports)
	if err != nil {
		return nil, err
	}
	ma, err := after.Matrices(ports)
	if err != nil {
		return nil, err
	}
	out := map[string][]Flip{}
	for k := range ports {
		idx := map[string]int{}
		for i, p := range ma[k].Pods {
			idx[p] = i
		}
		for i, src := range mb[k].Pods {
			ai, ok := idx[src]
			if !ok {
				continue
			}
			for j, dst := range mb[k].Pods {
				aj, ok := idx[dst]
				if !ok || mb[k].Reachable[i][j] == ma[k].Reachable[ai][aj] {
					continue
				}
				f := Flip{From: src, To: dst, PortKey: ports[k], Before: mb[k].Reachable[i][j], After: ma[k].Reachable[ai][aj]}
				cause := causes(before, after, src, dst, changed)
				out[cause] = append(out[cause], f)
			}
		}
	}
	return out, nil
}

func causes(before, after *Model, src, dst string, changed []string) string {
	var names []string
	for _, m := range []*Model{before, after} {
		for _, e := range []struct{ key, dir string }{{src, "egress"}, {dst, "ingress"}} {
			pod := m.pods[e.key]
			if pod == nil {
				continue
			}
			for _, np := range m.Inputs.Policies {
				name := np.Namespace + "/" + np.Name
				if slices.Contains(changed, name) && np.Namespace == pod.Namespace && isolates(np, e.dir) && selects(np, pod) {
					names = append(names, fmt.Sprintf("%s now selects %s for %s", name, e.key, e.dir))
				}
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return "other changes (pods, labels, deletions)"
	}
	return strings.Join(names, "; ")
}

// TableChanges lists what the kernel's table would change between two
// documents: chains added, removed or rewritten, set elements added and
// removed. It reads the documents only; nothing is applied.
func TableChanges(before, after *spec.NFTable) []string {
	var out []string
	chains := func(t *spec.NFTable) map[string]string {
		m := map[string]string{}
		if t != nil {
			for _, c := range t.Chains {
				var b strings.Builder
				for _, r := range c.Rules {
					b.WriteString(spec.FormatRule(r) + "\n")
				}
				m[c.Name] = c.Hook + "|" + c.Policy + "|" + b.String()
			}
		}
		return m
	}
	sets := func(t *spec.NFTable) map[string]map[string]bool {
		m := map[string]map[string]bool{}
		if t != nil {
			for _, s := range t.Sets {
				e := map[string]bool{}
				for _, el := range s.Elements {
					e[spec.FormatElement(el)] = true
				}
				m[s.Name] = e
			}
		}
		return m
	}
	cb, ca := chains(before), chains(after)
	for _, n := range sortedKeys(ca) {
		switch old, ok := cb[n]; {
		case !ok:
			out = append(out, "add chain "+n)
		case old != ca[n]:
			out = append(out, "replace rules of chain "+n)
		}
	}
	for _, n := range sortedKeys(cb) {
		if _, ok := ca[n]; !ok {
			out = append(out, "delete chain "+n)
		}
	}
	sb, sa := sets(before), sets(after)
	for _, n := range sortedKeys(sa) {
		old, ok := sb[n]
		if !ok {
			out = append(out, "add set "+n)
		}
		for _, e := range sortedKeys(sa[n]) {
			if !old[e] {
				out = append(out, fmt.Sprintf("add element %s to %s", e, n))
			}
		}
		for _, e := range sortedKeys(old) {
			if !sa[n][e] {
				out = append(out, fmt.Sprintf("delete element %s from %s", e, n))
			}
		}
	}
	for _, n := range sortedKeys(sb) {
		if _, ok := sa[n]; !ok {
			out = append(out, "delete set "+n)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
