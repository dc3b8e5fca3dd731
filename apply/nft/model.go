package nft

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// table is our table as comparable data. The desired side is the document
// canonicalised (values parsed and printed back the way nft prints them);
// the observed side is decoded from the kernel into the same form; the
// record of the last write is a desired table. Diff compares them as text.
type table struct {
	sets   byName[set]
	chains byName[chain]
	// opaque, when set, says why the kernel table holds something we
	// cannot observe object by object; the plan then replaces the table.
	opaque string
	// dormant is an observed table whose hooks are switched off
	// (`flags dormant`): every rule is present and none runs.
	dormant bool
	// anonSets is how many anonymous sets (of rules) an observed table
	// listed, for a use count checked later (CheckAhead).
	anonSets int
}

// set is a named set or verdict map.
type set struct {
	name      string
	typeNames []string
	types     []dtype
	interval  bool
	verdict   bool
	comment   string
	pod       string
	elems     elemMap // by key text (without the verdict)
	// Desired sets only (see reuse.go): src is the document's element list
	// the set was made from and canon its canonical elements in the same
	// order; jumps counts the elements that jump or go to each chain.
	src   []spec.NFTElement
	canon []*elem
	jumps map[string]int
	// of is the document's own list src copies, and seen the last other
	// list found equal to it (see madeFrom).
	of   listRef
	seen *seenList
	// id numbers a desired set. A set derived from another (from, its id)
	// differs from it by the elements removed and the elements added (or
	// replaced); every other element is the same object in both.
	id, from       uint64
	removed, added []*elem
	// foreign says why an observed set is not one we could have made
	// (flags, types); such a set is recreated or deleted.
	foreign string
}

// sameDef compares everything about two sets but their elements; sets
// with different definitions cannot be converted in place, only recreated.
func (s *set) sameDef(o *set) bool {
	return slices.Equal(s.typeNames, o.typeNames) && s.interval == o.interval && s.verdict == o.verdict &&
		s.comment == o.comment && s.foreign == o.foreign
}

// changes names the definition fields that differ, for the plan line.
func (s *set) changes(o *set) string {
	var out []string
	if !slices.Equal(s.typeNames, o.typeNames) {
		out = append(out, "type")
	}
	if s.interval != o.interval {
		out = append(out, "flags")
	}
	if s.verdict != o.verdict {
		out = append(out, "set or map")
	}
	if s.comment != o.comment {
		out = append(out, "comment")
	}
	if s.foreign != o.foreign {
		out = append(out, "not made by us: "+cmp.Or(s.foreign, o.foreign))
	}
	return changed(out)
}

func changed(fields []string) string {
	if len(fields) == 0 {
		return "definition changed"
	}
	return strings.Join(fields, ", ") + " changed"
}

func (s *set) word() string {
	if s.verdict {
		return "map"
	}
	return "set"
}

// elem is one element, parsed (key ranges) and printed (text).
type elem struct {
	key     []keyRange
	text    string // canonical key text, "198.18.0.0/24 . tcp . 80"
	verdict *spec.NFTVerdict
}

// same reports whether two elements have the same key and verdict.
func (e *elem) same(o *elem) bool {
	if e.text != o.text || (e.verdict == nil) != (o.verdict == nil) {
		return false
	}
	return e.verdict == nil || (e.verdict.Kind == o.verdict.Kind && e.verdict.Chain == o.verdict.Chain)
}

func (e *elem) String() string {
	if e.verdict == nil {
		return e.text
	}
	return e.text + " : " + spec.FormatVerdict(*e.verdict)
}

// chain is a base or regular chain with its rules in order.
type chain struct {
	name     string
	hook     string
	priority int
	policy   string // "" for regular chains
	comment  string
	pod      string
	rules    []rule
	foreign  string
	// src is the document chain a desired chain was made from (a copy).
	src *spec.NFTChain
}

// changes names the definition fields that differ, for the plan line.
func (c *chain) changes(o *chain) string {
	var out []string
	if c.hook != o.hook {
		out = append(out, "hook")
	}
	if c.priority != o.priority {
		out = append(out, "priority")
	}
	if c.policy != o.policy {
		out = append(out, "policy")
	}
	if c.comment != o.comment {
		out = append(out, "comment")
	}
	if c.foreign != o.foreign {
		out = append(out, "not made by us: "+cmp.Or(c.foreign, o.foreign))
	}
	return changed(out)
}

func (c *chain) sameDef(o *chain) bool {
	return c.hook == o.hook && c.priority == o.priority && c.policy == o.policy && c.comment == o.comment && c.foreign == o.foreign
}

func (c *chain) sameRules(o *chain) bool {
	if len(c.rules) != len(o.rules) {
		return false
	}
	for i := range c.rules {
		if c.rules[i].text != o.rules[i].text {
			return false
		}
	}
	return true
}

// rule is a canonical rule; text is spec.FormatRule of it, or for a rule
// we could not decode a description of its expressions.
type rule struct {
	ir   spec.NFTRule
	text string
	// refs are the sets, maps and chains the rule names (ruleRefs).
	refs []string
}

func emptyTable() *table {
	return &table{sets: newByName(func(s *set) string { return s.pod }), chains: newByName(func(c *chain) string { return c.pod })}
}

// countJump counts an element's jump or goto (d: +1 added, -1 removed).
func (s *set) countJump(e *elem, d int) {
	if v := e.verdict; v != nil && (v.Kind == spec.VerdictJump || v.Kind == spec.VerdictGoto) {
		if s.jumps == nil {
			s.jumps = map[string]int{}
		}
		if s.jumps[v.Chain] += d; s.jumps[v.Chain] == 0 {
			delete(s.jumps, v.Chain)
		}
	}
}

func compareKeys(a, b []keyRange) int {
	for i := range min(len(a), len(b)) {
		if c := cmp.Or(bytes.Compare(a[i].lo, b[i].lo), bytes.Compare(a[i].hi, b[i].hi)); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

// checkRefs checks that every set, map and chain a rule or map element
// names exists and fits, so that the kernel never sees a dangling name.
func (t *table) checkRefs() error {
	for _, c := range t.chains.all() {
		if err := t.checkChainRefs(c); err != nil {
			return err
		}
	}
	for _, s := range t.sets.all() {
		if err := t.checkSetRefs(s); err != nil {
			return err
		}
	}
	return nil
}

// checkRefsSince is checkRefs for a table made from base by replacing,
// adding or removing the sets and chains named in changedSets and
// changedChains (a scoped plan's, from the record). What base, the record,
// holds was checked when it was planned and passed the kernel's checks when
// it was written: only the changed objects need checking, unless one that
// other objects may name is gone or defined anew, which checks the whole
// table.
func (t *table) checkRefsSince(base *table, changedSets, changedChains map[string]bool) error {
	for name := range changedSets {
		s, was := t.sets.get(name), base.sets.get(name)
		if was != nil && (s == nil || !s.sameDef(was)) {
			return t.checkRefs()
		}
	}
	for name := range changedChains {
		c, was := t.chains.get(name), base.chains.get(name)
		if was != nil && (c == nil || c.hook != was.hook) {
			return t.checkRefs()
		}
	}
	for _, name := range sortedKeys(changedChains) {
		if c := t.chains.get(name); c != nil {
			if err := t.checkChainRefs(c); err != nil {
				return err
			}
		}
	}
	for _, name := range sortedKeys(changedSets) {
		if s := t.sets.get(name); s != nil {
			if err := t.checkSetRefs(s); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkChainRefs checks what one chain's rules name.
func (t *table) checkChainRefs(c *chain) error {
	for i, r := range c.rules {
		for _, m := range r.ir.Match {
			if m.Set == "" {
				continue
			}
			s := t.sets.get(m.Set)
			if s == nil || s.verdict {
				return fmt.Errorf("nft chain %s: rule %d %q: @%s is not a set of this table", c.name, i+1, r.text, m.Set)
			}
			if !selectorsFit(m.Selectors, s.typeNames) {
				return fmt.Errorf("nft chain %s: rule %d %q: selectors %v do not fit set %s of type %v", c.name, i+1, r.text, m.Selectors, s.name, s.typeNames)
			}
		}
		v := r.ir.Verdict
		switch v.Kind {
		case spec.VerdictJump, spec.VerdictGoto:
			if err := t.checkTarget(v.Chain); err != nil {
				return fmt.Errorf("nft chain %s: rule %d %q: %w", c.name, i+1, r.text, err)
			}
		case spec.VerdictVmap:
			m := t.sets.get(v.Map)
			if m == nil || !m.verdict {
				return fmt.Errorf("nft chain %s: rule %d %q: @%s is not a verdict map of this table", c.name, i+1, r.text, v.Map)
			}
			if !selectorsFit(v.Selectors, m.typeNames) {
				return fmt.Errorf("nft chain %s: rule %d %q: selectors %v do not fit map %s of type %v", c.name, i+1, r.text, v.Selectors, m.name, m.typeNames)
			}
		}
	}
	return nil
}

// checkSetRefs checks the chains a map's elements jump or go to: by
// target, not by element (a map of every pod's element jumps to a few
// chains).
func (t *table) checkSetRefs(s *set) error {
	for target := range s.jumps {
		if err := t.checkTarget(target); err != nil {
			return fmt.Errorf("nft map %s: %s: %w", s.name, s.elementsTo(target), err)
		}
	}
	return nil
}

// elementsTo names the elements that jump or go to a chain, for an error.
func (s *set) elementsTo(target string) string {
	var out []string
	for _, e := range s.canon {
		if v := e.verdict; v != nil && (v.Kind == spec.VerdictJump || v.Kind == spec.VerdictGoto) && v.Chain == target {
			out = append(out, strconv.Quote(e.String()))
		}
	}
	if len(out) == 1 {
		return "element " + out[0]
	}
	return "elements " + firstFew(out)
}

func (t *table) checkTarget(name string) error {
	c := t.chains.get(name)
	if c == nil {
		return fmt.Errorf("chain %q does not exist in this table", name)
	}
	if c.hook != "" {
		return fmt.Errorf("chain %q is a base chain; jump and goto need a regular chain", name)
	}
	return nil
}

// selectorsFit tells whether selectors read a key of types, as
// slices.Equal(typeNamesOf(sels), types) does, without allocating: every
// rule of the table is checked on every plan.
func selectorsFit(sels, types []string) bool {
	if len(sels) != len(types) {
		return false
	}
	for i, s := range sels {
		if spec.SelectorType[s] != types[i] {
			return false
		}
	}
	return true
}

func typeNamesOf(sels []string) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = spec.SelectorType[s]
	}
	return out
}

func checkName(n string) error {
	if n == "" || len(n) > 255 || strings.HasPrefix(n, "__") {
		return fmt.Errorf("%q is not a valid name (1 to 255 bytes, not starting with __)", n)
	}
	if c := n[0]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_') {
		return fmt.Errorf("%q does not start with a letter or _", n)
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./-", r)) {
			return fmt.Errorf("%q contains %q; names are letters, digits and _ . / -", n, r)
		}
	}
	return nil
}

// maxComment is nft's limit (NFT_USERDATA_MAXLEN is larger, but nft
// refuses longer comments, and we want nft to be able to reload a dump).
const maxComment = 128

func checkComment(c string) error {
	if len(c) > maxComment {
		return fmt.Errorf("%d bytes, nft allows %d", len(c), maxComment)
	}
	if strings.ContainsRune(c, 0) {
		return fmt.Errorf("contains a NUL byte")
	}
	return nil
}
