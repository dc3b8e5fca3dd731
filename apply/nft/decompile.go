package nft

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// decompile is compileRule's inverse: it recognises exactly the bytecode
// shapes we generate (and nft's equivalent spellings of them) and returns
// the canonical IR rule. Anything else is an error, so a rule someone added
// or changed by hand never compares equal to a desired rule.
func decompile(ex []expr.Any, anon func(name string) (*set, bool)) (spec.NFTRule, error) {
	var r spec.NFTRule
	guarded := false
	for i := 0; i < len(ex); {
		if ex[i] == nil {
			return r, fmt.Errorf("expression %d is not one we write", i+1)
		}
		if _, ok := ex[i].(*expr.Counter); ok {
			// Only right before the verdict, where compileRule puts it; its
			// values are the kernel's and not compared.
			if _, last := at[*expr.Verdict](ex, i+1); !last || i+1 != len(ex)-1 || r.Counter {
				return r, fmt.Errorf("counter is not right before the verdict")
			}
			r.Counter = true
			i++
			continue
		}
		if v, ok := ex[i].(*expr.Verdict); ok {
			if i != len(ex)-1 {
				return r, fmt.Errorf("verdict before the end of the rule")
			}
			r.Verdict = verdictOf(v.Kind, v.Chain)
			if strings.HasPrefix(r.Verdict.Kind, "verdict(") {
				return r, fmt.Errorf("unsupported %s", r.Verdict.Kind)
			}
			return r, nil
		}
		if isGuard(ex, i) {
			guarded = true
			i += 2
			continue
		}
		sels, n := readLoads(ex[i:])
		if n == 0 {
			return r, fmt.Errorf("expression %d (%T) is not a load we write", i+1, ex[i])
		}
		for _, s := range sels {
			if isIPSelector(s) && !guarded {
				return r, fmt.Errorf("%s is read without the meta nfproto ipv4 guard", s)
			}
		}
		i += n
		if i >= len(ex) {
			return r, fmt.Errorf("%s is loaded but never tested", strings.Join(sels, " . "))
		}
		types, _ := selectorTypes(sels)
		switch e := ex[i].(type) {
		case *expr.Lookup:
			if e.SourceRegister != unix.NFT_REG_1 {
				return r, fmt.Errorf("lookup from register %d", e.SourceRegister)
			}
			if e.IsDestRegSet {
				if e.DestRegister != unix.NFT_REG_VERDICT || i != len(ex)-1 || e.Invert {
					return r, fmt.Errorf("lookup into a data map is not one we write")
				}
				r.Verdict = spec.NFTVerdict{Kind: spec.VerdictVmap, Map: e.SetName, Selectors: sels}
				return r, nil
			}
			m := spec.NFTMatch{Selectors: sels, Negate: e.Invert}
			if strings.HasPrefix(e.SetName, anonPrefix) {
				s, ok := anon(e.SetName)
				if !ok || s.foreign != "" || !slices.Equal(s.typeNames, typeNamesOf(sels)) {
					return r, fmt.Errorf("anonymous set %s does not fit %s", e.SetName, strings.Join(sels, " . "))
				}
				m.Values = sortedElems(s)
			} else {
				m.Set = e.SetName
			}
			r.Match = append(r.Match, m)
			i++
		case *expr.Cmp:
			m, err := cmpMatch(sels, types, e)
			if err != nil {
				return r, err
			}
			r.Match = append(r.Match, m)
			i++
		case *expr.Bitwise:
			if len(sels) != 1 || sels[0] != spec.SelCtState || i+1 >= len(ex) {
				return r, fmt.Errorf("bitwise test on %s is not one we write", strings.Join(sels, " . "))
			}
			c, ok := ex[i+1].(*expr.Cmp)
			zero := make([]byte, 4)
			if !ok || e.Len != 4 || !bytes.Equal(e.Xor, zero) || !bytes.Equal(c.Data, zero) ||
				(c.Op != expr.CmpOpEq && c.Op != expr.CmpOpNeq) {
				return r, fmt.Errorf("ct state bitmask test is not one we write")
			}
			names, ok := ctNames(nativeU32(e.Mask))
			if !ok || len(names) == 0 {
				return r, fmt.Errorf("ct state mask %#x has unknown bits", nativeU32(e.Mask))
			}
			r.Match = append(r.Match, spec.NFTMatch{Selectors: sels, Negate: c.Op == expr.CmpOpEq, Values: names})
			i += 2
		default:
			return r, fmt.Errorf("expression %d (%T) after a load is not a test we write", i+1, ex[i])
		}
	}
	return r, fmt.Errorf("rule has no verdict")
}

func isGuard(ex []expr.Any, i int) bool {
	if i+1 >= len(ex) {
		return false
	}
	m, ok1 := ex[i].(*expr.Meta)
	c, ok2 := ex[i+1].(*expr.Cmp)
	return ok1 && ok2 && m.Key == expr.MetaKeyNFPROTO && !m.SourceRegister && m.Register == unix.NFT_REG_1 &&
		c.Register == unix.NFT_REG_1 && c.Op == expr.CmpOpEq && bytes.Equal(c.Data, []byte{unix.NFPROTO_IPV4})
}

// readLoads reads the loads of one (possibly concatenated) key: each in
// the register regFor assigns. nft follows meta l4proto with a no-op
// byteorder in interval concatenations; it is skipped.
func readLoads(ex []expr.Any) ([]string, int) {
	var sels []string
	w, n := 0, 0
	for n < len(ex) {
		sel := loadSelector(ex[n], regFor(w))
		if sel == "" || (sel == spec.SelCtState && len(sels) > 0) {
			break
		}
		if len(sels) > 0 && sels[0] == spec.SelCtState {
			break
		}
		sels = append(sels, sel)
		n++
		if b, ok := at[*expr.Byteorder](ex, n); ok && sel == spec.SelL4Proto && sameReg(b.SourceRegister, regFor(w)) &&
			sameReg(b.DestRegister, regFor(w)) && b.Len == 1 && b.Op == expr.ByteorderHton {
			n++
		}
		t, _ := lookupType(spec.SelectorType[sel])
		w += pad4(t.size) / 4
	}
	return sels, n
}

func at[T any](ex []expr.Any, i int) (T, bool) {
	var zero T
	if i >= len(ex) {
		return zero, false
	}
	v, ok := ex[i].(T)
	return v, ok
}

// sameReg tells whether two register numbers name the same register. The
// kernel keeps registers as 32-bit slots and dumps one that starts a
// 128-bit register by that register's number: the 32-bit register 4 words
// on (NFT_REG32_04, where a concatenation's part after an interface name
// goes) reads back as NFT_REG_2.
func sameReg(a, b uint32) bool { return slot32(a) == slot32(b) }

func slot32(r uint32) uint32 {
	if r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4 {
		return (r - unix.NFT_REG_1) * 4
	}
	if r >= unix.NFT_REG32_00 {
		return r - unix.NFT_REG32_00
	}
	return ^uint32(0) - r // the verdict register, or no register at all
}

// loadSelector names the selector an expression loads into reg, or "".
func loadSelector(e expr.Any, reg uint32) string {
	switch x := e.(type) {
	case *expr.Payload:
		if x.OperationType != expr.PayloadLoad || !sameReg(x.DestRegister, reg) || x.CsumType != 0 {
			return ""
		}
		switch {
		case x.Base == expr.PayloadBaseNetworkHeader && x.Offset == 12 && x.Len == 4:
			return spec.SelIPSaddr
		case x.Base == expr.PayloadBaseNetworkHeader && x.Offset == 16 && x.Len == 4:
			return spec.SelIPDaddr
		case x.Base == expr.PayloadBaseTransportHeader && x.Offset == 2 && x.Len == 2:
			return spec.SelTHDport
		}
	case *expr.Meta:
		if x.SourceRegister || !sameReg(x.Register, reg) {
			return ""
		}
		switch x.Key {
		case expr.MetaKeyL4PROTO:
			return spec.SelL4Proto
		case expr.MetaKeyIIFNAME:
			return spec.SelIIFName
		case expr.MetaKeyOIFNAME:
			return spec.SelOIFName
		}
	case *expr.Ct:
		if !x.SourceRegister && sameReg(x.Register, reg) && x.Key == expr.CtKeySTATE && x.Direction == 0 {
			return spec.SelCtState
		}
	}
	return ""
}

func cmpMatch(sels []string, types []dtype, c *expr.Cmp) (spec.NFTMatch, error) {
	m := spec.NFTMatch{Selectors: sels}
	switch c.Op {
	case expr.CmpOpEq:
	case expr.CmpOpNeq:
		m.Negate = true
	default:
		return m, fmt.Errorf("comparison %d on %s is not one we write", c.Op, strings.Join(sels, " . "))
	}
	if c.Register != unix.NFT_REG_1 {
		return m, fmt.Errorf("comparison on register %d", c.Register)
	}
	if len(sels) == 1 && sels[0] == spec.SelCtState {
		names, ok := ctNames(nativeU32(c.Data))
		if !ok || len(names) != 1 || !m.Negate {
			return m, fmt.Errorf("exact ct state comparison is not one we write")
		}
		m.Values = names
		return m, nil
	}
	if len(types) == 1 && types[0].name == spec.TypeIfName && len(c.Data) > 0 && len(c.Data) < types[0].size &&
		!bytes.Contains(c.Data, []byte{0}) {
		// A prefix comparison: nft's iifname "tw*".
		m.Values = []string{string(c.Data) + "*"}
		return m, nil
	}
	parts, err := splitKey(types, c.Data)
	if err != nil {
		return m, fmt.Errorf("comparison on %s: %w", strings.Join(sels, " . "), err)
	}
	texts := make([]string, len(parts))
	for i, p := range parts {
		texts[i] = formatPart(types[i], keyRange{p, p})
	}
	m.Values = []string{strings.Join(texts, " . ")}
	return m, nil
}

// sortedElems lists a set's element texts in canonValues' order.
func sortedElems(s *set) []string {
	es := make([]*elem, 0, s.elems.len())
	for _, e := range s.elems.all() {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *elem) int { return compareKeys(a.key, b.key) })
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.text
	}
	return out
}

// ruleRefs lists the sets, maps and chains a rule names, as "set NAME" and
// "chain NAME" (sets and chains have separate namespaces in nft).
func ruleRefs(r spec.NFTRule) []string {
	var refs []string
	for _, m := range r.Match {
		if m.Set != "" {
			refs = append(refs, "set "+m.Set)
		}
	}
	switch r.Verdict.Kind {
	case spec.VerdictJump, spec.VerdictGoto:
		refs = append(refs, "chain "+r.Verdict.Chain)
	case spec.VerdictVmap:
		refs = append(refs, "set "+r.Verdict.Map)
	}
	return refs
}
