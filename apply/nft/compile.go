package nft

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Rule compilation: a canonical IR rule becomes google/nftables expressions,
// the same bytecode nft generates for the printed rule (checked against
// `nft --debug=netlink` on nftables 1.0.6), so that `nft list` prints our
// rules the way spec.PrintNFT does.

// anonPrefix names the kernel's anonymous sets ("__set%d" on creation).
const anonPrefix = "__set"

// load is the expression that puts one selector's value in a register.
func load(sel string, reg uint32) expr.Any {
	switch sel {
	case spec.SelIPSaddr:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	case spec.SelIPDaddr:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}
	case spec.SelTHDport:
		return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
	case spec.SelL4Proto:
		return &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg}
	case spec.SelIIFName:
		return &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg}
	case spec.SelOIFName:
		return &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: reg}
	case spec.SelCtState:
		return &expr.Ct{Key: expr.CtKeySTATE, Register: reg}
	}
	return nil
}

func isIPSelector(sel string) bool { return sel == spec.SelIPSaddr || sel == spec.SelIPDaddr }

// regFor is the register of the concatenation part at word offset w: the
// first part goes to the 128-bit NFT_REG_1, later ones to the 32-bit
// registers that follow it (NFT_REG32_00 + w), as nft allocates them.
func regFor(w int) uint32 {
	if w == 0 {
		return unix.NFT_REG_1
	}
	return uint32(unix.NFT_REG32_00 + w)
}

// loads emits the IPv4 guard if needed and the loads of a concatenation.
func loads(sels []string, guarded *bool) []expr.Any {
	var out []expr.Any
	for _, s := range sels {
		if isIPSelector(s) && !*guarded {
			// Family inet sees IPv6 packets too; reading the IPv4 header
			// of one would compare garbage.
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: unix.NFT_REG_1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: unix.NFT_REG_1, Data: []byte{unix.NFPROTO_IPV4}})
			*guarded = true
		}
	}
	w := 0
	for _, s := range sels {
		out = append(out, load(s, regFor(w)))
		t, _ := lookupType(spec.SelectorType[s])
		w += pad4(t.size) / 4
	}
	return out
}

// anonSet is an anonymous constant set a rule creates for "any of" values.
type anonSet struct {
	set   *set
	id    uint32
	elems []*elem
}

// compiledRule is a rule ready for the wire.
type compiledRule struct {
	exprs []expr.Any
	anon  []anonSet
	ud    []byte
}

// compileRule turns a canonical rule into expressions. newID allocates
// batch-unique set ids for anonymous sets.
func compileRule(r spec.NFTRule, newID func() uint32) (compiledRule, error) {
	var out compiledRule
	guarded := false
	for _, m := range r.Match {
		types, err := selectorTypes(m.Selectors)
		if err != nil {
			return out, err
		}
		out.exprs = append(out.exprs, loads(m.Selectors, &guarded)...)
		switch {
		case m.Set != "":
			out.exprs = append(out.exprs, &expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: m.Set, Invert: m.Negate})
		case m.Selectors[0] == spec.SelCtState:
			out.exprs = append(out.exprs, ctMatch(m)...)
		default:
			vals, ranged, err := canonValues(types, m.Values)
			if err != nil {
				return out, err
			}
			if prefix, ok := ifnamePrefix(types, vals); ok {
				// nft's iifname "tw*": compare only the prefix's bytes.
				op := expr.CmpOpEq
				if m.Negate {
					op = expr.CmpOpNeq
				}
				out.exprs = append(out.exprs, &expr.Cmp{Op: op, Register: unix.NFT_REG_1, Data: []byte(prefix)})
				continue
			}
			if len(vals) == 1 && !ranged && len(types) == 1 {
				rs, _, _ := canonKey(types, false, []string{vals[0]})
				op := expr.CmpOpEq
				if m.Negate {
					op = expr.CmpOpNeq
				}
				out.exprs = append(out.exprs, &expr.Cmp{Op: op, Register: unix.NFT_REG_1, Data: rs[0].lo})
				continue
			}
			a := anonSet{set: &set{types: types, interval: ranged}, id: newID()}
			for _, v := range vals {
				rs, texts, _ := canonKey(types, true, strings.Split(v, " . "))
				a.elems = append(a.elems, &elem{key: rs, text: strings.Join(texts, " . ")})
			}
			out.anon = append(out.anon, a)
			out.exprs = append(out.exprs, &expr.Lookup{SourceRegister: unix.NFT_REG_1, SetName: anonPrefix + "%d", SetID: a.id, Invert: m.Negate})
		}
	}
	if r.Counter {
		out.exprs = append(out.exprs, &expr.Counter{})
	}
	switch v := r.Verdict; v.Kind {
	case spec.VerdictVmap:
		out.exprs = append(out.exprs, loads(v.Selectors, &guarded)...)
		out.exprs = append(out.exprs, &expr.Lookup{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_VERDICT,
			IsDestRegSet: true, SetName: v.Map})
	case spec.VerdictAccept:
		out.exprs = append(out.exprs, &expr.Verdict{Kind: expr.VerdictAccept})
	case spec.VerdictDrop:
		out.exprs = append(out.exprs, &expr.Verdict{Kind: expr.VerdictDrop})
	case spec.VerdictReturn:
		out.exprs = append(out.exprs, &expr.Verdict{Kind: expr.VerdictReturn})
	case spec.VerdictJump:
		out.exprs = append(out.exprs, &expr.Verdict{Kind: expr.VerdictJump, Chain: v.Chain})
	case spec.VerdictGoto:
		out.exprs = append(out.exprs, &expr.Verdict{Kind: expr.VerdictGoto, Chain: v.Chain})
	default:
		return out, fmt.Errorf("verdict %q is not supported", v.Kind)
	}
	out.ud = udString(nil, udComment, r.Comment)
	return out, nil
}

// ifnamePrefix reports whether vals is one interface-name wildcard ("tw*")
// and returns its prefix. Wildcards are single values only: in a set, "*"
// would be a literal character of the name.
func ifnamePrefix(types []dtype, vals []string) (string, bool) {
	if len(types) != 1 || types[0].name != spec.TypeIfName || len(vals) != 1 || !strings.HasSuffix(vals[0], "*") {
		return "", false
	}
	return strings.TrimSuffix(vals[0], "*"), true
}

// ctMatch is nft's bitmask test: "ct state a,b" is (state & mask) != 0;
// "ct state != a" compares exactly; "ct state != a,b" is (state & mask) == 0.
func ctMatch(m spec.NFTMatch) []expr.Any {
	mask, _ := ctMask(m.Values)
	mb := binary.NativeEndian.AppendUint32(nil, mask)
	zero := make([]byte, 4)
	if m.Negate && len(m.Values) == 1 {
		return []expr.Any{&expr.Cmp{Op: expr.CmpOpNeq, Register: unix.NFT_REG_1, Data: mb}}
	}
	op := expr.CmpOpNeq
	if m.Negate {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Bitwise{SourceRegister: unix.NFT_REG_1, DestRegister: unix.NFT_REG_1, Len: 4, Mask: mb, Xor: zero},
		&expr.Cmp{Op: op, Register: unix.NFT_REG_1, Data: zero},
	}
}

// ruleMsgs encodes a rule appended to chain: first the anonymous sets it
// uses (created and filled in the same transaction, bound to the rule by
// id), then the rule.
func ruleMsgs(chainName string, idx int, r rule, newID func() uint32) ([]batchMsg, error) {
	cr, err := compileRule(r.ir, newID)
	if err != nil {
		return nil, fmt.Errorf("nft chain %s: rule %d %q: %w", chainName, idx+1, r.text, err)
	}
	var out []batchMsg
	what := fmt.Sprintf("add rule %d of chain %s (%s)", idx+1, chainName, r.text)
	for _, a := range cr.anon {
		// The size must cover the kernel's elements: an interval can be two.
		size := 0
		for _, e := range a.elems {
			size += len(wireElems(a.set, e, false))
		}
		attrs := setAttrs(a.set, anonPrefix+"%d", a.id, unix.NFT_SET_ANONYMOUS|unix.NFT_SET_CONSTANT, size)
		out = append(out, batchMsg{typ: unix.NFT_MSG_NEWSET, flags: unix.NLM_F_CREATE, attrs: attrs, what: "anonymous set of " + what})
		for _, m := range elemMsgs(a.set, anonPrefix+"%d", a.id, a.elems, false) {
			m.what = "elements of the anonymous set of " + what
			out = append(out, m)
		}
	}
	var list []byte
	for _, e := range cr.exprs {
		b, err := expr.Marshal(familyInet, e)
		if err != nil {
			return nil, fmt.Errorf("nft chain %s: rule %d %q: marshal %T: %w", chainName, idx+1, r.text, e, err)
		}
		list = append(list, nested(unix.NFTA_LIST_ELEM, b)...)
	}
	a := append(attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable), attrStr(unix.NFTA_RULE_CHAIN, chainName)...)
	a = append(a, nested(unix.NFTA_RULE_EXPRESSIONS, list)...)
	if len(cr.ud) > 0 {
		a = append(a, attr(unix.NFTA_RULE_USERDATA, cr.ud)...)
	}
	out = append(out, batchMsg{typ: unix.NFT_MSG_NEWRULE, flags: unix.NLM_F_CREATE | unix.NLM_F_APPEND, attrs: a, what: what})
	return out, nil
}
