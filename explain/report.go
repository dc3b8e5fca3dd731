package explain

import (
	"fmt"
	"io"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Names of the document's verdict maps (render/policy_nft.go).
const (
	mapEgress  = "egress-pods"
	mapIngress = "ingress-pods"
)

// Report is explain's answer: the kernel's verdict, its trace, and the
// story in the API's terms.
type Report struct {
	Verdict  string     `json:"verdict"` // allowed or denied
	From     Endpoint   `json:"from"`
	To       Endpoint   `json:"to"`
	Protocol string     `json:"protocol"`
	Port     uint16     `json:"port"`
	Hook     string     `json:"hook,omitempty"`
	Notes    []string   `json:"notes,omitempty"`
	Egress   *Direction `json:"egress,omitempty"`
	Ingress  *Direction `json:"ingress,omitempty"`
	Trace    []Step     `json:"trace"`
}

// Explain decides a new connection from src to dst on proto/port from the
// document and explains it.
func (m *Model) Explain(src, dst Endpoint, proto string, port uint16) (*Report, error) {
	rep := &Report{From: src, To: dst, Protocol: proto, Port: port, Verdict: "allowed"}
	hook, _, _, ok, why := m.Route(src, dst)
	if !ok {
		rep.Notes = append(rep.Notes, why)
		return rep, nil
	}
	res, err := m.Check(src, dst, proto, port)
	if err != nil {
		return nil, err
	}
	rep.Hook, rep.Trace = hook, res.Trace
	if !res.Allowed {
		rep.Verdict = "denied"
	}
	switch {
	case src.Node:
		rep.Notes = append(rep.Notes, "traffic from the node itself passes the output hook, where the table has no policy: NetworkPolicy does not restrict the node (as upstream: the kubelet's probes must work)")
	case dst.Node:
		rep.Notes = append(rep.Notes, "the destination is the node itself: only the source pod's egress applies (input hook)")
	}
	if src.Pod != nil || src.Local != nil {
		rep.Egress = m.direction("egress", mapEgress, src, dst, proto, port, dst, res)
	}
	if (dst.Pod != nil || dst.Local != nil) && hook == spec.HookForward {
		rep.Ingress = m.direction("ingress", mapIngress, dst, src, proto, port, dst, res)
	}
	// A drop that is not a policy group's is outside NetworkPolicy (for
	// example source-address validation); say so.
	for _, s := range res.Trace {
		if s.Matched && s.Verdict == "drop" && !groupChain(rep, s.Chain) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("dropped outside NetworkPolicy by chain %s rule %d: %s", s.Chain, s.Rule, s.Text))
		}
	}
	for _, d := range []*Direction{rep.Egress, rep.Ingress} {
		if d != nil && d.Isolated && d.Allowed == (len(d.Admitted) == 0) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("the policies' text and the document disagree on %s of %s; the verdict is the document's (the kernel's)", d.Direction, d.Pod))
		}
	}
	return rep, nil
}

func groupChain(rep *Report, chain string) bool {
	for _, d := range []*Direction{rep.Egress, rep.Ingress} {
		if d != nil && d.Chain == chain {
			return true
		}
	}
	return false
}

// WriteText prints the report for people: the verdict on the first line.
func (rep *Report) WriteText(w io.Writer) {
	fmt.Fprintln(w, rep.Verdict)
	fmt.Fprintf(w, "%s (%s) -> %s (%s) %s/%d", rep.From.Key, rep.From.IP, rep.To.Key, rep.To.IP, rep.Protocol, rep.Port)
	if rep.Hook != "" {
		fmt.Fprintf(w, ", seen by the node's %s hook", rep.Hook)
	}
	fmt.Fprintln(w)
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, d := range []*Direction{rep.Egress, rep.Ingress} {
		if d != nil {
			d.writeText(w)
		}
	}
	if len(rep.Trace) > 0 {
		fmt.Fprintln(w, "kernel (table inet terway):")
		for _, s := range rep.Trace {
			line := fmt.Sprintf("  %s", s.Chain)
			if s.Rule >= 0 {
				line += fmt.Sprintf(" rule %d: %s", s.Rule, s.Text)
			} else {
				line += ": " + s.Text
			}
			switch {
			case s.Element != "":
				line += fmt.Sprintf("  [@%s element %s]", s.Set, s.Element)
			case s.Set != "":
				line += fmt.Sprintf("  [@%s: no element]", s.Set)
			}
			if s.Matched {
				line += " => " + s.Verdict
			} else {
				line += " => no match"
			}
			fmt.Fprintln(w, line)
		}
	}
}

func (d *Direction) writeText(w io.Writer) {
	if !d.Isolated {
		fmt.Fprintf(w, "%s of %s: not isolated (no NetworkPolicy selects it for %s): allowed\n", d.Direction, d.Pod, d.Direction)
		return
	}
	verdict := "allowed"
	if !d.Allowed {
		verdict = "denied"
	}
	fmt.Fprintf(w, "%s of %s: isolated by %s (chain %s): %s\n", d.Direction, d.Pod, strings.Join(d.Policies, ", "), d.Chain, verdict)
	for _, a := range d.Admitted {
		fmt.Fprintln(w, "  admitted by", a)
	}
	if d.Allowed && d.Element != "" {
		fmt.Fprintf(w, "  kernel: @%s element %s\n", d.Set, d.Element)
	}
	if !d.Allowed {
		for _, r := range d.Refused {
			fmt.Fprintln(w, "  not admitted:", r)
		}
		fmt.Fprintf(w, "  no rule admits it: chain %s ends in drop\n", d.Chain)
	}
}
