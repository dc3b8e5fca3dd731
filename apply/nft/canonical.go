package nft

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Canonicalising a document: the desired table, parsed and printed back
// the way nft prints it (model.go has the form), with errors that name the
// set, chain, element or rule and the reason.

// canonical turns the document's table into the comparable form, with
// errors that name the set, chain, element or rule and the reason. Sets and
// chains of cache (the last document's) are reused as far as their content
// is the same (reuse.go); the returned cache holds exactly this document's
// objects, for the next call.
func canonical(t *spec.NFTable, cache *canonCache) (*table, *canonCache, error) {
	if t.Family != spec.NFTFamily || t.Name != spec.NFTTable {
		return nil, nil, fmt.Errorf("nftables: table is %s %s, only %s %s is ours", t.Family, t.Name, spec.NFTFamily, spec.NFTTable)
	}
	out := emptyTable()
	for i := range t.Sets {
		in := t.Sets[i]
		s, err := canonicalSet(in, cache.set(in))
		if err != nil {
			return nil, nil, err
		}
		if out.sets.get(s.name) != nil {
			return nil, nil, fmt.Errorf("nft set %s: defined twice", s.name)
		}
		out.sets.put(s.name, s)
	}
	for i := range t.Chains {
		in := &t.Chains[i]
		c := cache.chain(in)
		if c == nil {
			var err error
			if c, err = canonicalChain(in); err != nil {
				return nil, nil, err
			}
		}
		if out.chains.get(c.name) != nil {
			return nil, nil, fmt.Errorf("nft chain %s: defined twice", c.name)
		}
		out.chains.put(c.name, c)
	}
	if err := out.checkRefs(); err != nil {
		return nil, nil, err
	}
	return out, cache.next(out.sets.plain(), out.chains.plain()), nil
}

// canonicalSet canonicalises a set. prev, the canonical set of the same
// name in the last document (may be nil), is returned as it is if the set
// is the same, and otherwise lends the elements of the common prefix and
// suffix of the two element lists, so that a changed set costs the parsing
// of its changed elements only.
func canonicalSet(in *spec.NFTSet, prev *set) (*set, error) {
	if prev != nil && prev.madeFrom(in) {
		return prev, nil
	}
	if err := checkName(in.Name); err != nil {
		return nil, fmt.Errorf("nft set %s: name: %w", in.Name, err)
	}
	if len(in.Type) == 0 || len(in.Type) > 5 {
		return nil, fmt.Errorf("nft set %s: type: needs 1 to 5 parts, has %d", in.Name, len(in.Type))
	}
	s := &set{name: in.Name, typeNames: slices.Clone(in.Type), interval: in.Interval, verdict: in.Verdict,
		comment: in.Comment, pod: in.Pod, id: setIDs.Add(1), src: slices.Clone(in.Elements), of: refOf(in.Elements),
		seen: &seenList{}}
	for _, tn := range in.Type {
		t, err := lookupType(tn)
		if err != nil {
			return nil, fmt.Errorf("nft set %s: type: %w", in.Name, err)
		}
		s.types = append(s.types, t)
	}
	if concatLen(s.types) > 64 {
		return nil, fmt.Errorf("nft set %s: type: key of %d bytes exceeds the kernel's 64", in.Name, concatLen(s.types))
	}
	if err := checkComment(in.Comment); err != nil {
		return nil, fmt.Errorf("nft set %s: comment: %w", in.Name, err)
	}
	elems := in.Elements
	prefix, suffix := 0, 0
	s.canon = make([]*elem, 0, len(elems))
	if prev != nil && slices.Equal(prev.typeNames, in.Type) && prev.interval == in.Interval && prev.verdict == in.Verdict {
		// Same definition: the elements canonicalise as they did.
		prefix, suffix = commonEnds(prev.src, elems)
		s.from = prev.id
		s.elems, s.jumps = prev.elems.derive(), maps.Clone(prev.jumps)
		s.removed = slices.Clip(prev.canon[prefix : len(prev.canon)-suffix]) // prev's, read only
		for _, e := range s.removed {
			s.elems.del(e.text)
			s.countJump(e, -1)
		}
		s.canon = append(s.canon, prev.canon[:prefix]...)
	} else {
		s.elems = newElemMap(len(elems))
		s.jumps = map[string]int{}
	}
	for _, e := range elems[prefix : len(elems)-suffix] {
		ce, err := canonicalElem(s, e)
		if err != nil {
			return nil, fmt.Errorf("nft set %s: element %q: %w", in.Name, spec.FormatElement(e), err)
		}
		if other := s.elems.get(ce.text); other != nil {
			if s.from != 0 {
				// Name the two in document order, as from scratch.
				return canonicalSet(in, nil)
			}
			return nil, fmt.Errorf("nft set %s: element %q: same key as %q", in.Name, spec.FormatElement(e), other.String())
		}
		s.elems.put(ce.text, ce)
		s.countJump(ce, 1)
		s.canon = append(s.canon, ce)
		s.added = append(s.added, ce)
	}
	if suffix > 0 {
		s.canon = append(s.canon, prev.canon[len(prev.canon)-suffix:]...)
	}
	return s, nil
}

func canonicalElem(s *set, e spec.NFTElement) (*elem, error) {
	rs, texts, err := canonKey(s.types, s.interval, e.Key)
	if err != nil {
		return nil, err
	}
	if s.verdict != (e.Verdict != nil) {
		return nil, fmt.Errorf("verdict maps need a verdict on every element, plain sets none")
	}
	ce := &elem{key: rs, text: strings.Join(texts, " . ")}
	if e.Verdict != nil {
		v := *e.Verdict
		switch v.Kind {
		case spec.VerdictAccept, spec.VerdictDrop, spec.VerdictReturn:
			v.Chain = ""
		case spec.VerdictJump, spec.VerdictGoto:
		default:
			return nil, fmt.Errorf("verdict %q is not accept, drop, return, jump or goto", v.Kind)
		}
		v.Map, v.Selectors = "", nil
		ce.verdict = &v
	}
	return ce, nil
}

func canonicalChain(c *spec.NFTChain) (*chain, error) {
	if err := checkName(c.Name); err != nil {
		return nil, fmt.Errorf("nft chain %s: name: %w", c.Name, err)
	}
	if err := checkComment(c.Comment); err != nil {
		return nil, fmt.Errorf("nft chain %s: comment: %w", c.Name, err)
	}
	out := &chain{name: c.Name, hook: c.Hook, priority: c.Priority, comment: c.Comment, pod: c.Pod, src: cloneChain(c)}
	if c.Hook != "" {
		if _, ok := hookNums[c.Hook]; !ok {
			return nil, fmt.Errorf("nft chain %s: hook: %q is not prerouting, forward, input or output", c.Name, c.Hook)
		}
		out.policy = cmp.Or(c.Policy, spec.VerdictAccept)
		if out.policy != spec.VerdictAccept && out.policy != spec.VerdictDrop {
			return nil, fmt.Errorf("nft chain %s: policy: %q is not accept or drop", c.Name, c.Policy)
		}
	} else if c.Policy != "" || c.Priority != 0 {
		return nil, fmt.Errorf("nft chain %s: policy and priority need a hook", c.Name)
	}
	for i, r := range c.Rules {
		cr, err := canonicalRule(r)
		if err != nil {
			return nil, fmt.Errorf("nft chain %s: rule %d %q: %w", c.Name, i+1, spec.FormatRule(r), err)
		}
		out.rules = append(out.rules, cr)
	}
	return out, nil
}

// canonicalRule parses every value of the rule and prints it back; sets,
// maps and chains are resolved later (checkRefs), when all are known.
func canonicalRule(r spec.NFTRule) (rule, error) {
	if err := checkComment(r.Comment); err != nil {
		return rule{}, fmt.Errorf("comment: %w", err)
	}
	out := spec.NFTRule{Comment: r.Comment, Counter: r.Counter}
	for _, m := range r.Match {
		types, err := selectorTypes(m.Selectors)
		if err != nil {
			return rule{}, err
		}
		cm := spec.NFTMatch{Selectors: slices.Clone(m.Selectors), Negate: m.Negate, Set: m.Set}
		switch {
		case m.Set != "":
			if len(m.Values) > 0 {
				return rule{}, fmt.Errorf("match %q has both a set and values", spec.FormatMatch(m))
			}
		case len(m.Values) == 0:
			return rule{}, fmt.Errorf("match %q needs a set or values", spec.FormatMatch(m))
		case len(m.Selectors) == 1 && m.Selectors[0] == spec.SelCtState:
			mask, err := ctMask(splitCt(m.Values))
			if err != nil {
				return rule{}, fmt.Errorf("match %q: %w", spec.FormatMatch(m), err)
			}
			cm.Values, _ = ctNames(mask)
		default:
			if err := checkWildcards(types, m.Values); err != nil {
				return rule{}, fmt.Errorf("match %q: %w", spec.FormatMatch(m), err)
			}
			vals, _, err := canonValues(types, m.Values)
			if err != nil {
				return rule{}, fmt.Errorf("match %q: %w", spec.FormatMatch(m), err)
			}
			cm.Values = vals
		}
		out.Match = append(out.Match, cm)
	}
	v := r.Verdict
	switch v.Kind {
	case spec.VerdictAccept, spec.VerdictDrop, spec.VerdictReturn:
		out.Verdict = spec.NFTVerdict{Kind: v.Kind}
	case spec.VerdictJump, spec.VerdictGoto:
		out.Verdict = spec.NFTVerdict{Kind: v.Kind, Chain: v.Chain}
	case spec.VerdictVmap:
		if _, err := selectorTypes(v.Selectors); err != nil {
			return rule{}, err
		}
		out.Verdict = spec.NFTVerdict{Kind: v.Kind, Map: v.Map, Selectors: slices.Clone(v.Selectors)}
	default:
		return rule{}, fmt.Errorf("verdict %q is not accept, drop, return, jump, goto or vmap", v.Kind)
	}
	return rule{ir: out, text: spec.FormatRule(out), refs: ruleRefs(out)}, nil
}

// checkWildcards refuses an interface-name wildcard ("tw*") anywhere but
// as the one value of a single-selector match, the only place compileRule
// turns it into a prefix comparison; elsewhere the "*" would silently be a
// character of the name.
func checkWildcards(types []dtype, vals []string) error {
	if _, ok := ifnamePrefix(types, vals); ok {
		if vals[0] == "*" {
			return fmt.Errorf("wildcard %q has no prefix", vals[0])
		}
		return nil
	}
	for i, t := range types {
		if t.name != spec.TypeIfName {
			continue
		}
		for _, v := range vals {
			if parts := strings.Split(v, " . "); i < len(parts) && strings.Contains(parts[i], "*") {
				return fmt.Errorf("interface wildcard %q: only as the one value of a single interface match", v)
			}
		}
	}
	return nil
}

// splitCt accepts "established,related" as well as separate values.
func splitCt(vals []string) []string {
	var out []string
	for _, v := range vals {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// canonValues parses "any of" values of a match (each "a . b" for a
// concatenation), sorts them and drops duplicates. It also reports whether
// any value is a range, which needs an interval set.
func canonValues(types []dtype, vals []string) ([]string, bool, error) {
	type parsed struct {
		key  []keyRange
		text string
	}
	ps := make([]parsed, 0, len(vals))
	ranged := false
	for _, v := range vals {
		rs, texts, err := canonKey(types, true, strings.Split(v, " . "))
		if err != nil {
			return nil, false, fmt.Errorf("value %q: %w", v, err)
		}
		for _, r := range rs {
			ranged = ranged || !r.single()
		}
		ps = append(ps, parsed{rs, strings.Join(texts, " . ")})
	}
	slices.SortFunc(ps, func(a, b parsed) int { return compareKeys(a.key, b.key) })
	ps = slices.CompactFunc(ps, func(a, b parsed) bool { return a.text == b.text })
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.text
	}
	return out, ranged, nil
}

func selectorTypes(sels []string) ([]dtype, error) {
	if len(sels) == 0 {
		return nil, fmt.Errorf("no selectors")
	}
	out := make([]dtype, len(sels))
	for i, s := range sels {
		tn, ok := spec.SelectorType[s]
		if !ok {
			return nil, fmt.Errorf("selector %q is not supported", s)
		}
		if s == spec.SelCtState && len(sels) > 1 {
			return nil, fmt.Errorf("ct state cannot be part of a concatenation")
		}
		out[i], _ = lookupType(tn)
	}
	return out, nil
}
