// Package explain answers "is this connection allowed, and why?" from a
// rendered node document. The verdict comes from walking the document's
// nftables table the way the kernel walks it (base chains of a hook in
// priority order, verdict maps, jumps, set lookups over intervals and
// concatenations), never from a second reading of the NetworkPolicies, so
// explain cannot disagree with the datapath the document programs. The
// policies are consulted only to say, in the API's terms, why a candidate
// rule did not admit the connection.
package explain

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Packet is the first packet of a connection as the node's netfilter sees
// it. CtState is "new" unless set.
type Packet struct {
	Src, Dst netip.Addr
	Proto    string // tcp, udp or sctp
	Port     uint16
	// IIF and OIF are the input and output interface names; the host veth of
	// a local pod, empty when unknown.
	IIF, OIF string
	CtState  string
}

// Step is one rule the packet reached in one chain, with what it matched.
type Step struct {
	Chain string `json:"chain"`
	// Rule is the rule's index in the chain; -1 for the chain's policy.
	Rule int    `json:"rule"`
	Text string `json:"text"`
	// Matched tells whether every match of the rule held.
	Matched bool `json:"matched"`
	// Set and Element name the set or map lookup that decided the rule and
	// the element that matched (empty when none did).
	Set     string `json:"set,omitempty"`
	Element string `json:"element,omitempty"`
	// Verdict is what the rule did: accept, drop, return, jump CHAIN, or
	// "continue" when it did not match.
	Verdict string `json:"verdict"`
}

// Result is the kernel's decision for one packet at one hook.
type Result struct {
	Hook    string `json:"hook"`
	Allowed bool   `json:"allowed"`
	Trace   []Step `json:"trace"`
}

// Table is a document's nftables table prepared for evaluation: every set
// element parsed once.
type Table struct {
	t      *spec.NFTable
	sets   map[string]*set
	chains map[string]*spec.NFTChain
}

type set struct {
	s     *spec.NFTSet
	types []string
	elems []elem
}

type elem struct {
	parts []value
	raw   *spec.NFTElement
}

// value is a key part: a closed numeric interval, or an interface name
// (with a trailing * meaning any suffix).
type value struct {
	lo, hi uint64
	name   string
	isName bool
}

// Compile parses the table's sets. A malformed element is an error naming
// the set and the element: the kernel would refuse such a table too.
func Compile(t *spec.NFTable) (*Table, error) {
	ct := &Table{t: t, sets: map[string]*set{}, chains: map[string]*spec.NFTChain{}}
	if t == nil {
		return ct, nil
	}
	for i := range t.Chains {
		ct.chains[t.Chains[i].Name] = &t.Chains[i]
	}
	for i := range t.Sets {
		s := t.Sets[i]
		cs := &set{s: s, types: s.Type}
		for j := range s.Elements {
			e := &s.Elements[j]
			if len(e.Key) != len(s.Type) {
				return nil, fmt.Errorf("nft set %s: element %q has %d key parts, want %d", s.Name, spec.FormatElement(*e), len(e.Key), len(s.Type))
			}
			pe := elem{raw: e}
			for k, part := range e.Key {
				v, err := parseValue(s.Type[k], part)
				if err != nil {
					return nil, fmt.Errorf("nft set %s: element %q: %w", s.Name, spec.FormatElement(*e), err)
				}
				pe.parts = append(pe.parts, v)
			}
			cs.elems = append(cs.elems, pe)
		}
		ct.sets[s.Name] = cs
	}
	return ct, nil
}

var protoNums = map[string]uint64{"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}

// parseValue reads one key part of the given nft type: an address, CIDR or
// address range; a protocol; a port or port range; an interface name.
func parseValue(typ, s string) (value, error) {
	switch typ {
	case spec.TypeIfName:
		return value{name: s, isName: true}, nil
	case spec.TypeIPv4Addr:
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			lo := addrNum(p.Masked().Addr())
			return value{lo: lo, hi: lo | (1<<(32-p.Bits()) - 1)}, nil
		}
		return parseRange(s, func(x string) (uint64, error) {
			a, err := netip.ParseAddr(x)
			if err != nil || !a.Is4() {
				return 0, fmt.Errorf("%q is not an IPv4 address", x)
			}
			return addrNum(a), nil
		})
	case spec.TypeProto:
		return parseRange(s, protoNum)
	case spec.TypeService:
		return parseRange(s, func(x string) (uint64, error) {
			n, err := strconv.ParseUint(x, 10, 16)
			if err != nil {
				return 0, fmt.Errorf("%q is not a port", x)
			}
			return n, nil
		})
	}
	return value{}, fmt.Errorf("type %q is not one explain knows", typ)
}

func protoNum(x string) (uint64, error) {
	if n, ok := protoNums[x]; ok {
		return n, nil
	}
	n, err := strconv.ParseUint(x, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("%q is not a protocol", x)
	}
	return n, nil
}

func parseRange(s string, num func(string) (uint64, error)) (value, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := num(lo)
	if err != nil {
		return value{}, err
	}
	b := a
	if isRange {
		if b, err = num(hi); err != nil {
			return value{}, err
		}
	}
	if b < a {
		return value{}, fmt.Errorf("range %q is empty", s)
	}
	return value{lo: a, hi: b}, nil
}

func addrNum(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

// field is the packet's value for one selector.
func (p *Packet) field(sel string) (value, error) {
	switch sel {
	case spec.SelIPSaddr:
		n := addrNum(p.Src)
		return value{lo: n, hi: n}, nil
	case spec.SelIPDaddr:
		n := addrNum(p.Dst)
		return value{lo: n, hi: n}, nil
	case spec.SelL4Proto:
		n, err := protoNum(p.Proto)
		return value{lo: n, hi: n}, err
	case spec.SelTHDport:
		return value{lo: uint64(p.Port), hi: uint64(p.Port)}, nil
	case spec.SelIIFName:
		return value{name: p.IIF, isName: true}, nil
	case spec.SelOIFName:
		return value{name: p.OIF, isName: true}, nil
	}
	return value{}, fmt.Errorf("selector %q is not one explain knows", sel)
}

// covers tells whether the element part v contains the packet's value x.
func covers(v, x value) bool {
	if v.isName {
		if pre, ok := strings.CutSuffix(v.name, "*"); ok {
			return strings.HasPrefix(x.name, pre)
		}
		return v.name == x.name
	}
	return v.lo <= x.lo && x.hi <= v.hi
}

// lookup finds the first element of set name whose every key part covers
// the packet's value for the corresponding selector.
func (t *Table) lookup(name string, sels []string, p *Packet) (*elem, error) {
	s := t.sets[name]
	if s == nil {
		return nil, fmt.Errorf("set %s is not in the table", name)
	}
	if len(sels) != len(s.types) {
		return nil, fmt.Errorf("set %s has %d key parts, the rule gives %d selectors", name, len(s.types), len(sels))
	}
	xs := make([]value, len(sels))
	for i, sel := range sels {
		x, err := p.field(sel)
		if err != nil {
			return nil, err
		}
		xs[i] = x
	}
	for i := range s.elems {
		e := &s.elems[i]
		ok := true
		for k, v := range e.parts {
			if !covers(v, xs[k]) {
				ok = false
				break
			}
		}
		if ok {
			return e, nil
		}
	}
	return nil, nil
}

// match evaluates one match; set and elem report the lookup it made.
func (t *Table) match(m spec.NFTMatch, p *Packet) (ok bool, setName, element string, err error) {
	if len(m.Selectors) == 1 && m.Selectors[0] == spec.SelCtState {
		state := p.CtState
		if state == "" {
			state = "new"
		}
		return slices.Contains(m.Values, state) != m.Negate, "", "", nil
	}
	if m.Set != "" {
		e, err := t.lookup(m.Set, m.Selectors, p)
		if err != nil {
			return false, "", "", err
		}
		if e != nil {
			element = spec.FormatElement(*e.raw)
		}
		return (e != nil) != m.Negate, m.Set, element, nil
	}
	if len(m.Selectors) != 1 {
		return false, "", "", fmt.Errorf("match %q: literal values with a concatenation are not supported", spec.FormatMatch(m))
	}
	x, err := p.field(m.Selectors[0])
	if err != nil {
		return false, "", "", err
	}
	for _, s := range m.Values {
		v, err := parseValue(spec.SelectorType[m.Selectors[0]], s)
		if err != nil {
			return false, "", "", fmt.Errorf("match %q: %w", spec.FormatMatch(m), err)
		}
		if covers(v, x) {
			return !m.Negate, "", s, nil
		}
	}
	return m.Negate, "", "", nil
}

// outcome of a chain: a final verdict, or fall back to the caller.
const (
	outAccept = iota
	outDrop
	outReturn
)

// maxDepth bounds jumps, as the kernel does (it refuses loops at load).
const maxDepth = 16

// Eval runs the packet through the base chains of hook in priority order,
// as netfilter does: accept in one base chain moves on to the next, drop
// ends it, and a base chain that falls off its end applies its policy.
func (t *Table) Eval(hook string, p Packet) (Result, error) {
	res := Result{Hook: hook, Allowed: true}
	var bases []*spec.NFTChain
	if t.t != nil {
		for i := range t.t.Chains {
			if t.t.Chains[i].Hook == hook {
				bases = append(bases, &t.t.Chains[i])
			}
		}
	}
	slices.SortStableFunc(bases, func(a, b *spec.NFTChain) int { return a.Priority - b.Priority })
	for _, c := range bases {
		out, err := t.chain(c, &p, &res, 0)
		if err != nil {
			return res, err
		}
		if out == outReturn {
			policy := c.Policy
			if policy == "" {
				policy = spec.VerdictAccept
			}
			res.Trace = append(res.Trace, Step{Chain: c.Name, Rule: -1, Text: "policy " + policy, Matched: true, Verdict: policy})
			if policy == spec.VerdictDrop {
				out = outDrop
			}
		}
		if out == outDrop {
			res.Allowed = false
			return res, nil
		}
	}
	return res, nil
}

func (t *Table) chain(c *spec.NFTChain, p *Packet, res *Result, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("chain %s: jumps nest deeper than %d", c.Name, maxDepth)
	}
	for i, r := range c.Rules {
		step := Step{Chain: c.Name, Rule: i, Text: spec.FormatRule(r), Matched: true, Verdict: "continue"}
		for _, m := range r.Match {
			ok, setName, element, err := t.match(m, p)
			if err != nil {
				return 0, fmt.Errorf("chain %s rule %d: %w", c.Name, i, err)
			}
			if setName != "" || element != "" {
				step.Set, step.Element = setName, element
			}
			if !ok {
				step.Matched = false
				break
			}
		}
		if !step.Matched {
			res.Trace = append(res.Trace, step)
			continue
		}
		v := r.Verdict
		if v.Kind == spec.VerdictVmap {
			e, err := t.lookup(v.Map, v.Selectors, p)
			if err != nil {
				return 0, fmt.Errorf("chain %s rule %d: %w", c.Name, i, err)
			}
			step.Set = v.Map
			if e == nil || e.raw.Verdict == nil {
				res.Trace = append(res.Trace, step) // no element: fall through
				continue
			}
			step.Element = spec.FormatElement(*e.raw)
			v = *e.raw.Verdict
		}
		step.Verdict = spec.FormatVerdict(v)
		res.Trace = append(res.Trace, step)
		switch v.Kind {
		case spec.VerdictAccept:
			return outAccept, nil
		case spec.VerdictDrop:
			return outDrop, nil
		case spec.VerdictReturn:
			return outReturn, nil
		case spec.VerdictJump, spec.VerdictGoto:
			next := t.chains[v.Chain]
			if next == nil {
				return 0, fmt.Errorf("chain %s rule %d: %s: no such chain", c.Name, i, step.Verdict)
			}
			out, err := t.chain(next, p, res, depth+1)
			if err != nil || out != outReturn {
				return out, err
			}
			if v.Kind == spec.VerdictGoto {
				return outReturn, nil
			}
		default:
			return 0, fmt.Errorf("chain %s rule %d: verdict %q is not one explain knows", c.Name, i, v.Kind)
		}
	}
	return outReturn, nil
}
