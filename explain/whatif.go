package explain

import (
	"fmt"
	"slices"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// Flip is one pod pair, protocol and port whose verdict a change reverses,
// with what causes it.
type Flip struct {
	From string `json:"from"`
	To   string `json:"to"`
	PortKey
	Before bool `json:"before"`
	After  bool `json:"after"`
	// Causes say which policies make the difference, from explain's
	// reports of the connection before and after: for each direction
	// (egress of From, ingress of To) whose verdict changed, the policies
	// that newly isolate it or no longer do, or whose rules newly admit the
	// connection or no longer do. Sorted; never empty.
	Causes []string `json:"causes"`
}

func (f Flip) String() string {
	word := map[bool]string{true: "allowed", false: "denied"}
	return fmt.Sprintf("%s -> %s %s/%d: %s -> %s", f.From, f.To, f.Protocol, f.Port, word[f.Before], word[f.After])
}

// Cause is the flip's causes as one line: what what-if groups flips by.
func (f Flip) Cause() string { return strings.Join(f.Causes, "; ") }

// Flips compares every pair of pods both documents have and returns the
// pairs, protocols and ports whose verdict reverses, each with its causes.
// The ports of a pair are the ones a connection of that pair can be about:
// the destination's container ports, and the numeric ports named by the
// rules of the policies that select the destination for ingress or the
// source for egress, in either model (a named port is a container port).
func Flips(before, after *Model) ([]Flip, error) {
	ports := slices.Concat(before.Ports(), after.Ports())
	slices.SortFunc(ports, comparePorts)
	ports = slices.Compact(ports)
	mb, err := before.Matrices(ports)
	if err != nil {
		return nil, err
	}
	ma, err := after.Matrices(ports)
	if err != nil {
		return nil, err
	}
	var out []Flip
	pairPorts := map[[2]string]map[PortKey]bool{}
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
				pp := pairPorts[[2]string{src, dst}]
				if pp == nil {
					pp = pairPortsOf(before, after, src, dst)
					pairPorts[[2]string{src, dst}] = pp
				}
				if !pp[ports[k]] {
					continue
				}
				f := Flip{From: src, To: dst, PortKey: ports[k], Before: mb[k].Reachable[i][j], After: ma[k].Reachable[ai][aj]}
				if f.Causes, err = causes(before, after, f); err != nil {
					return nil, err
				}
				out = append(out, f)
			}
		}
	}
	return out, nil
}

func comparePorts(a, b PortKey) int {
	if a.Protocol != b.Protocol {
		return strings.Compare(a.Protocol, b.Protocol)
	}
	return int(a.Port) - int(b.Port)
}

// pairPortsOf is the ports of the pair src -> dst in either model.
func pairPortsOf(before, after *Model, src, dst string) map[PortKey]bool {
	out := map[PortKey]bool{}
	for _, m := range []*Model{before, after} {
		if p := m.pods[dst]; p != nil {
			for _, c := range p.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
						out[PortKey{protoOf(cp.Protocol), uint16(cp.ContainerPort)}] = true
					}
				}
			}
		}
		for _, np := range m.Inputs.Policies {
			var ps []networkingv1.NetworkPolicyPort
			if p := m.pods[dst]; p != nil && np.Namespace == p.Namespace && isolates(np, "ingress") && selects(np, p) {
				for _, r := range np.Spec.Ingress {
					ps = append(ps, r.Ports...)
				}
			}
			if p := m.pods[src]; p != nil && np.Namespace == p.Namespace && isolates(np, "egress") && selects(np, p) {
				for _, r := range np.Spec.Egress {
					ps = append(ps, r.Ports...)
				}
			}
			for _, k := range numeric(ps) {
				out[k] = true
			}
		}
	}
	return out
}

// causes explains a flip by comparing explain's reports of the connection
// in the two models, direction by direction.
func causes(before, after *Model, f Flip) ([]string, error) {
	rb, err := reportOf(before, f)
	if err != nil {
		return nil, err
	}
	ra, err := reportOf(after, f)
	if err != nil {
		return nil, err
	}
	var out []string
	out = append(out, directionCauses(rb.Egress, ra.Egress)...)
	out = append(out, directionCauses(rb.Ingress, ra.Ingress)...)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		// No policy direction changed its verdict: something outside
		// NetworkPolicy decides (an exclusive ENI, source validation).
		notes := slices.Concat(rb.Notes, ra.Notes)
		slices.Sort(notes)
		notes = slices.Compact(notes)
		out = append(out, "outside NetworkPolicy: "+strings.Join(notes, "; "))
	}
	return out, nil
}

func reportOf(m *Model, f Flip) (*Report, error) {
	src, err := m.Resolve(f.From)
	if err != nil {
		return nil, err
	}
	dst, err := m.Resolve(f.To)
	if err != nil {
		return nil, err
	}
	return m.Explain(src, dst, f.Protocol, f.Port)
}

// directionCauses says why one direction's verdict changed between b and
// a (nil: the direction does not apply, so it allows): which policies
// newly select the pod, or no longer do, or newly admit the connection, or
// no longer do. Nothing when the direction's verdict did not change.
func directionCauses(b, a *Direction) []string {
	allows := func(d *Direction) bool { return d == nil || !d.Isolated || d.Allowed }
	isolated := func(d *Direction) bool { return d != nil && d.Isolated }
	if allows(b) == allows(a) {
		return nil
	}
	d := a
	if d == nil {
		d = b
	}
	where := fmt.Sprintf("%s of %s", d.Direction, d.Pod)
	policies := func(d *Direction) []string {
		if d == nil {
			return nil
		}
		return d.Policies
	}
	var out []string
	switch {
	case !allows(a) && !isolated(b):
		// Isolated now, and nothing admits: each policy that selects the
		// pod now (and did not) takes the connection away.
		for _, p := range policies(a) {
			if !slices.Contains(policies(b), p) {
				out = append(out, fmt.Sprintf("%s now selects %s for %s", p, d.Pod, d.Direction))
			}
		}
		if len(out) == 0 {
			out = append(out, fmt.Sprintf("%s is isolated now (chain %s) by %s", where, a.Chain, strings.Join(policies(a), ", ")))
		}
	case !allows(a):
		// Isolated before and after: what admitted it no longer does.
		for _, p := range b.AdmittedBy {
			out = append(out, fmt.Sprintf("%s no longer admits it (%s)", p, where))
		}
		if len(out) == 0 {
			out = append(out, fmt.Sprintf("chain %s no longer admits it (%s)", a.Chain, where))
		}
	case !isolated(a):
		// Not isolated any more: each policy that selected the pod, and
		// does not now, gave the connection back.
		for _, p := range policies(b) {
			if !slices.Contains(policies(a), p) {
				out = append(out, fmt.Sprintf("%s no longer selects %s for %s", p, d.Pod, d.Direction))
			}
		}
		if len(out) == 0 {
			out = append(out, fmt.Sprintf("%s is not isolated any more", where))
		}
	default:
		// Isolated before and after: a rule admits it now.
		for _, p := range a.AdmittedBy {
			out = append(out, fmt.Sprintf("%s now admits it (%s)", p, where))
		}
		if len(out) == 0 {
			out = append(out, fmt.Sprintf("chain %s now admits it (%s)", a.Chain, where))
		}
	}
	return out
}
