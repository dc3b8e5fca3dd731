// Package rules converges the IPv4 policy routing rules of a NodeState.
// A rule is ours when its priority is in [spec.RulePriorityMin,
// spec.RulePriorityMax]; rules outside the band are never read into a
// plan, changed or deleted (DESIGN.md §4).
package rules

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/links"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every rule operation.
const Kind = "rule"

// Observe returns the IPv4 rules in our priority band, in the host
// namespace and each listed namespace that still exists. It only reads.
//
// A rule in the band with selectors the document cannot express (iif,
// fwmark, ports, …) is observed by priority, from, to and table alone.
func Observe(ns op.Namespaces, namespaces []string, _ *spec.NodeState) ([]spec.Rule, error) {
	var out []spec.Rule
	for _, n := range links.Namespaces(ns, namespaces) {
		// The kernel cannot filter a rule dump (not by priority either):
		// every rule of the namespace is read, ours kept.
		msgs, err := op.RouteDump(ns, n, unix.RTM_GETRULE, unix.RTM_NEWRULE, &ruleHeader{family: unix.AF_INET})
		if err != nil {
			return nil, fmt.Errorf("list rules in %s: %w", links.NetnsName(n), err)
		}
		for _, m := range msgs {
			r, ok := parse(m)
			if !ok || r.priority < spec.RulePriorityMin || r.priority > spec.RulePriorityMax {
				continue
			}
			out = append(out, spec.Rule{Netns: n, Priority: r.priority, From: prefix(r.src), To: prefix(r.dst), Table: r.table})
		}
	}
	slices.SortStableFunc(out, order)
	return out, nil
}

// ruleHeader is struct fib_rule_hdr, the fixed part of a rule message; a
// dump request carries only the family (strict checking refuses more).
type ruleHeader struct {
	family uint8
}

func (h *ruleHeader) Len() int { return ruleHeaderLen }

func (h *ruleHeader) Serialize() []byte {
	b := make([]byte, ruleHeaderLen)
	b[0] = h.family
	return b
}

// ruleHeaderLen is sizeof(struct fib_rule_hdr).
const ruleHeaderLen = 12

// kernelRule is what Observe reads of one rule.
type kernelRule struct {
	priority int
	src, dst *net.IPNet
	table    int
}

// parse decodes one IPv4 rule message as the netlink library does: the
// table from FRA_TABLE (the header's is 8 bits), priority 0 when the
// message has none (the kernel's rule of priority 0).
func parse(m []byte) (kernelRule, bool) {
	if len(m) < ruleHeaderLen || m[0] != unix.AF_INET {
		return kernelRule{}, false
	}
	dstLen, srcLen := int(m[1]), int(m[2])
	attrs := m[ruleHeaderLen:]
	var r kernelRule
	if v, ok := op.AttrU32(attrs, unix.FRA_PRIORITY); ok {
		r.priority = int(v)
	}
	if v, ok := op.AttrU32(attrs, unix.FRA_TABLE); ok {
		r.table = int(v)
	}
	if v, ok := op.Attr(attrs, unix.FRA_SRC); ok {
		r.src = &net.IPNet{IP: v, Mask: net.CIDRMask(srcLen, 8*len(v))}
	}
	if v, ok := op.Attr(attrs, unix.FRA_DST); ok {
		r.dst = &net.IPNet{IP: v, Mask: net.CIDRMask(dstLen, 8*len(v))}
	}
	return r, true
}

func prefix(n *net.IPNet) string {
	if n == nil {
		return ""
	}
	if ones, _ := n.Mask.Size(); ones == 0 {
		return ""
	}
	return n.String()
}

// norm puts a rule's selectors in canonical text ("0.0.0.0/0" is no
// selector; prefixes are masked) so equal rules compare equal.
func norm(r spec.Rule) spec.Rule {
	r.From, r.To = normPrefix(r.From), normPrefix(r.To)
	r.Pod = ""
	return r
}

func normPrefix(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return s
	}
	if p.Bits() == 0 {
		return ""
	}
	return p.Masked().String()
}

func key(r spec.Rule) string { return norm(r).Key() }

// order is the document's canonical rule order: host first, then each
// namespace by path; priority; selectors by value; table.
func order(a, b spec.Rule) int {
	a, b = norm(a), norm(b)
	return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Priority, b.Priority),
		spec.CompareValues(a.From, b.From), spec.CompareValues(a.To, b.To), cmp.Compare(a.Table, b.Table))
}

// Diff returns deletions first (undesired rules of ours, and the old form
// of a rule whose table changed), then additions, each in canonical order.
// A rule has no in-place change in the kernel: changed content is a delete
// and an add.
func Diff(desired, observed []spec.Rule) []op.Op {
	want := map[string]spec.Rule{}
	for _, d := range desired {
		want[key(d)] = d
	}
	have := map[string][]spec.Rule{}
	for _, o := range observed {
		have[key(o)] = append(have[key(o)], o)
	}
	obs := slices.Clone(observed)
	slices.SortStableFunc(obs, order)
	var dels, adds []op.Op
	for _, o := range obs {
		if d, ok := want[key(o)]; ok && d.Table == o.Table {
			continue
		}
		dels = append(dels, ruleOp(op.Delete, o))
	}
	ds := slices.Clone(desired)
	slices.SortStableFunc(ds, order)
	for _, d := range ds {
		if !slices.ContainsFunc(have[key(d)], func(o spec.Rule) bool { return o.Table == d.Table }) {
			adds = append(adds, ruleOp(op.Create, d))
		}
	}
	return append(dels, adds...)
}

// Describe prints a rule the way `ip rule` does, with the namespace when
// it is not the host.
func Describe(r spec.Rule) string {
	n := norm(r)
	from, to := "all", ""
	if n.From != "" {
		from = n.From
	}
	if n.To != "" {
		to = " to " + n.To
	}
	table := strconv.Itoa(n.Table)
	if n.Table == spec.MainTable {
		table = "main"
	}
	return fmt.Sprintf("rule priority %d from %s%s lookup %s%s", n.Priority, from, to, table, links.NetnsSuffix(r.Netns))
}

func ruleOp(a op.Action, r spec.Rule) op.Op {
	// An observed rule names a pod only if the caller claimed it for one.
	o := op.Op{Kind: Kind, Action: a, Key: r.Key(), Netns: r.Netns, Text: Describe(r), Writes: 1, Pod: r.Pod}
	if a == op.Create {
		o.Exec = func(_ context.Context, ns op.Namespaces) error { return add(ns, r) }
	} else {
		o.Exec = func(_ context.Context, ns op.Namespaces) error { return del(ns, r) }
	}
	return o
}

// toKernel builds the netlink rule. It refuses a priority outside our
// band, so that not even a bad document can make us touch another's rule.
func toKernel(r spec.Rule) (*netlink.Rule, error) {
	if r.Priority < spec.RulePriorityMin || r.Priority > spec.RulePriorityMax {
		return nil, fmt.Errorf("priority: %d is outside our band %d-%d", r.Priority, spec.RulePriorityMin, spec.RulePriorityMax)
	}
	if r.Table < 0 {
		return nil, fmt.Errorf("table: %d is not a table id", r.Table)
	}
	k := netlink.NewRule()
	k.Family = netlink.FAMILY_V4
	k.Priority = r.Priority
	k.Table = r.Table
	var err error
	if k.Src, err = ipNet(r.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if k.Dst, err = ipNet(r.To); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	return k, nil
}

func ipNet(s string) (*net.IPNet, error) {
	s = normPrefix(s)
	if s == "" {
		return nil, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return nil, fmt.Errorf("%q is not an IPv4 CIDR", s)
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}, nil
}

func add(ns op.Namespaces, r spec.Rule) error {
	k, err := toKernel(r)
	if err == nil && r.Table == 0 {
		err = errors.New("table: a rule needs a table to look up")
	}
	if err != nil {
		return fmt.Errorf("rule %s: %w", r.Key(), err)
	}
	h, err := ns.Handle(r.Netns)
	if err != nil {
		return fmt.Errorf("rule %s: %w", r.Key(), err)
	}
	if err := h.RuleAdd(k); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("rule %s: add: %w", r.Key(), err)
	}
	return nil
}

// del deletes the rule with exactly this priority, selectors and table;
// the priority is in our band, so the kernel never matches anyone else's.
func del(ns op.Namespaces, r spec.Rule) error {
	if !ns.Exists(r.Netns) {
		return nil
	}
	k, err := toKernel(r)
	if err != nil {
		return fmt.Errorf("rule %s: %w", r.Key(), err)
	}
	h, err := ns.Handle(r.Netns)
	if err != nil {
		return fmt.Errorf("rule %s: %w", r.Key(), err)
	}
	if err := h.RuleDel(k); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rule %s: delete: %w", r.Key(), err)
	}
	return nil
}
