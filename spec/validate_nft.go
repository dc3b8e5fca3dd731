package spec

import "strconv"

var validHooks = map[string]bool{HookForward: true, HookInput: true, HookOutput: true, HookPrerouting: true}

func (v *validator) nft(where string, t *NFTable) {
	if t.Family != NFTFamily || t.Name != NFTTable {
		v.add(where, "name", "table is %s %s, want %s %s", t.Family, t.Name, NFTFamily, NFTTable)
	}
	sets := make(map[string]*NFTSet, len(t.Sets))
	for i, s := range t.Sets {
		if s == nil {
			// JSON's null in the list: no set to check, and none later.
			v.add(where+".sets["+strconv.Itoa(i)+"]", "", "null where a set belongs")
			continue
		}
		item := where + ".sets[" + s.Name + "]"
		if !nftName.MatchString(s.Name) {
			v.add(item, "name", "%q is not a valid nft name", s.Name)
		}
		if sets[s.Name] != nil {
			v.add(item, "", "duplicate set name")
		}
		sets[s.Name] = s
		for _, typ := range s.Type {
			if !knownType(typ) {
				v.add(item, "type", "%q is not a supported type", typ)
			}
		}
		for _, e := range s.Elements {
			if len(e.Key) != len(s.Type) {
				v.add(item, "elements", "element %q has %d parts, the set's type has %d", FormatElement(e), len(e.Key), len(s.Type))
			}
			if s.Verdict != (e.Verdict != nil) {
				v.add(item, "elements", "element %q: verdict maps need a verdict on every element, plain sets none", FormatElement(e))
			}
		}
	}
	chains := make(map[string]bool, len(t.Chains))
	for _, c := range t.Chains {
		if chains[c.Name] {
			v.add(where+".chains["+c.Name+"]", "", "duplicate chain name")
		}
		chains[c.Name] = true
	}
	checkVerdict := func(item string, vd NFTVerdict) {
		switch vd.Kind {
		case VerdictAccept, VerdictDrop, VerdictReturn:
		case VerdictJump, VerdictGoto:
			if !chains[vd.Chain] {
				v.add(item, "verdict", "%s to unknown chain %q", vd.Kind, vd.Chain)
			}
		case VerdictVmap:
			m := sets[vd.Map]
			if m == nil || !m.Verdict {
				v.add(item, "verdict", "vmap @%s is not a verdict map of this table", vd.Map)
			} else if !selectorsFit(vd.Selectors, m.Type) {
				v.add(item, "verdict", "selectors %v do not fit map %s of type %v", vd.Selectors, vd.Map, m.Type)
			}
		default:
			v.add(item, "verdict", "unknown verdict %q", vd.Kind)
		}
	}
	for _, s := range t.Sets {
		if s == nil {
			continue
		}
		for _, e := range s.Elements {
			if e.Verdict != nil {
				checkVerdict(where+".sets["+s.Name+"]", *e.Verdict)
			}
		}
	}
	for _, c := range t.Chains {
		item := where + ".chains[" + c.Name + "]"
		if !nftName.MatchString(c.Name) {
			v.add(item, "name", "%q is not a valid nft name", c.Name)
		}
		if c.Hook != "" && !validHooks[c.Hook] {
			v.add(item, "hook", "%q is not prerouting, forward, input or output", c.Hook)
		}
		if c.Policy != "" && c.Policy != VerdictAccept && c.Policy != VerdictDrop {
			v.add(item, "policy", "%q is not accept or drop", c.Policy)
		}
		for i, r := range c.Rules {
			ritem := item + ".rules[" + strconv.Itoa(i) + "]"
			for _, m := range r.Match {
				for _, sel := range m.Selectors {
					if SelectorType[sel] == "" {
						v.add(ritem, "match", "unknown selector %q", sel)
					}
				}
				switch {
				case m.Set != "":
					s := sets[m.Set]
					if s == nil || s.Verdict {
						v.add(ritem, "match", "@%s is not a set of this table", m.Set)
					} else if !selectorsFit(m.Selectors, s.Type) {
						v.add(ritem, "match", "selectors %v do not fit set %s of type %v", m.Selectors, m.Set, s.Type)
					}
				case len(m.Values) == 0:
					v.add(ritem, "match", "a match needs a set or values")
				}
			}
			checkVerdict(ritem, r.Verdict)
		}
	}
}

func knownType(t string) bool {
	for _, known := range SelectorType {
		if known == t {
			return true
		}
	}
	return false
}

func selectorsFit(selectors, types []string) bool {
	if len(selectors) != len(types) {
		return false
	}
	for i, sel := range selectors {
		if SelectorType[sel] != types[i] {
			return false
		}
	}
	return true
}
