package nft

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/apply/op"
)

// diff plans the changes that turn have (nil: no table) into want (nil:
// no table). rec, the record of our last write (may be nil), only names the
// pods of objects that are no longer wanted, which the kernel cannot tell.
//
// replaceCost is the threshold of replaceSet: how many element additions
// one element deletion of an interval set costs (< 0: never replace).
//
// stageMin is the size from which a recreated set is filled outside the
// transaction (stage.go; <= 0: never).
//
// changed, when not nil, names every set and chain that want has other
// than have's very object (a scoped plan's, against the record): the
// others are not looked at.
func diff(netns string, want, have, rec *table, replaceCost, stageMin int, changed *scopedChanges) (*plan, error) {
	p := &plan{netns: netns, verifySets: map[string]*set{}, verifyChains: map[string]int{}, verifyElems: map[string]*elemCheck{},
		staged: map[string]*stagedSet{}}
	if want == nil {
		if have != nil {
			p.add(gTable, op.Delete, "table", "", "table inet terway")
			p.msgs[phDropTable] = append(p.msgs[phDropTable], delTableMsg())
		}
		return p, nil
	}
	switch {
	case have == nil:
		p.add(gTable, op.Create, "table", "", "table inet terway")
		p.msgs[phTable] = append(p.msgs[phTable], newTableMsg())
		have = emptyTable()
	case have.opaque != "":
		p.add(gTable, op.Update, "table", "", "table inet terway (recreate: "+have.opaque+")")
		p.msgs[phDropTable] = append(p.msgs[phDropTable], delTableMsg())
		p.msgs[phTable] = append(p.msgs[phTable], newTableMsg())
		have = emptyTable()
	case have.dormant:
		p.add(gTable, op.Update, "table", "", "table inet terway (wake: the table is dormant, none of its rules run)")
		p.msgs[phTable] = append(p.msgs[phTable], newTableMsg())
	}
	if rec == nil {
		rec = emptyTable()
	}
	d := newDiffer(p, want, have, rec, replaceCost, stageMin)
	d.classify(changed)
	if changed != nil && recheckKeptSets {
		if err := d.recheckClassify(); err != nil {
			return nil, err
		}
	}
	d.sets()
	if err := d.chains(); err != nil {
		return nil, err
	}
	return p, nil
}

type differ struct {
	p               *plan
	want, have, rec *table
	// setAct and chainAct: create, recreate, replace (chains: rules only),
	// keep or delete, with the reason after a colon for recreations.
	setAct, chainAct map[string]string
	// bounce holds map elements ("map\x00key") that must be deleted and
	// re-added because the chain they jump to is recreated.
	bounce map[string]string
	// replaceCost and deltas serve replaceSet: the element changes of kept
	// interval sets, computed once to decide and reused to plan.
	replaceCost int
	deltas      map[string]*elemDelta
	stageMin    int
}

func newDiffer(p *plan, want, have, rec *table, replaceCost, stageMin int) *differ {
	return &differ{p: p, want: want, have: have, rec: rec, setAct: map[string]string{}, chainAct: map[string]string{},
		bounce: map[string]string{}, replaceCost: replaceCost, deltas: map[string]*elemDelta{}, stageMin: stageMin}
}

func act(a string) string { v, _, _ := strings.Cut(a, ":"); return v }

// differing yields the names of wanted and had objects that may differ:
// those of changed when it is not nil (the others are the same object in
// both), else every one.
func differing[V any](want, have *byName[V], changed map[string]bool) iter.Seq[string] {
	return func(yield func(string) bool) {
		if changed != nil {
			for name := range changed {
				if !yield(name) {
					return
				}
			}
			return
		}
		for name := range want.names() {
			if !yield(name) {
				return
			}
		}
		for name := range have.names() {
			if !want.has(name) && !yield(name) {
				return
			}
		}
	}
}

// classify decides each set's and chain's action. changed (nil: look at
// all) names the objects want may have other than have's very ones.
func (d *differ) classify(changed *scopedChanges) {
	// The record's own objects (the same object wanted as had: unchanged
	// since the last sync) are kept without being listed: a scoped plan
	// keeps all but a few of a large table's, and names the few it
	// changed, so that only those are looked at. keepIdentical lists the
	// others when something goes away.
	var changedSets, changedChains map[string]bool
	if changed != nil {
		changedSets, changedChains = changed.sets, changed.chains
	}
	for name := range differing(&d.want.sets, &d.have.sets, changedSets) {
		ws, hs := d.want.sets.get(name), d.have.sets.get(name)
		switch {
		case hs == ws:
		case ws == nil:
			d.setAct[name] = "delete"
		case hs == nil:
			d.setAct[name] = "create"
		case !hs.sameDef(ws):
			d.setAct[name] = "recreate:" + hs.changes(ws)
		case d.replaceSet(ws, hs):
			d.setAct[name] = "recreate:" + d.deltas[name].reason(ws)
			// A set of the staging name left by a failed or interrupted
			// staging (its rules may name it): this plan deletes it in
			// its one transaction instead.
			if canStage(ws, d.stageMin) && d.have.sets.get(stageName(name)) == nil {
				d.p.staged[name] = &stagedSet{ws: ws, hs: hs}
				d.setAct[name] += "; filled in steps"
			}
		case d.stageChange(ws, hs):
			dl := d.deltas[name]
			d.setAct[name] = fmt.Sprintf("recreate:%d elements change, too many for one short transaction; filled in steps",
				len(dl.changed)+len(dl.gone))
			d.p.staged[name] = &stagedSet{ws: ws, hs: hs}
		default:
			d.setAct[name] = "keep"
		}
	}
	for name := range differing(&d.want.chains, &d.have.chains, changedChains) {
		wc, hc := d.want.chains.get(name), d.have.chains.get(name)
		switch {
		case hc == wc:
		case wc == nil:
			d.chainAct[name] = "delete"
		case hc == nil:
			d.chainAct[name] = "create"
		case !hc.sameDef(wc):
			d.chainAct[name] = "recreate:" + hc.changes(wc)
		case !hc.sameRules(wc):
			d.chainAct[name] = "replace"
		default:
			d.chainAct[name] = "keep"
		}
	}
	// Whatever goes away (deleted or recreated) must lose its references
	// first: kept chains whose rules name it are rewritten, kept map
	// elements that jump to it are deleted and, if still wanted, re-added.
	gone := map[string]string{}
	for name, a := range d.setAct {
		if a := act(a); a == "recreate" || a == "delete" {
			gone["set "+name] = "set " + name + " is " + a + "d"
		}
	}
	for name, a := range d.chainAct {
		if a := act(a); a == "recreate" || a == "delete" {
			gone["chain "+name] = "chain " + name + " is " + a + "d"
		}
	}
	if len(gone) == 0 {
		return
	}
	d.keepIdentical()
	for name, wc := range d.want.chains.all() {
		for _, r := range wc.rules {
			for _, ref := range r.refs {
				if st := d.p.staged[strings.TrimPrefix(ref, "set ")]; st != nil && strings.HasPrefix(ref, "set ") &&
					!slices.Contains(st.chains, name) {
					st.chains = append(st.chains, name)
				}
			}
		}
	}
	for _, st := range d.p.staged {
		slices.Sort(st.chains)
	}
	for name, hc := range d.have.chains.all() {
		if d.chainAct[name] != "keep" {
			continue
		}
		for _, r := range hc.rules {
			for _, ref := range r.refs {
				if why, ok := gone[ref]; ok {
					d.chainAct[name] = "replace:" + why
				}
			}
		}
	}
	for name, hs := range d.have.sets.all() {
		if d.setAct[name] != "keep" || !hs.verdict {
			continue
		}
		for k, e := range hs.elems.all() {
			if e.verdict != nil && e.verdict.Chain != "" && gone["chain "+e.verdict.Chain] != "" {
				d.bounce[name+"\x00"+k] = gone["chain "+e.verdict.Chain]
			}
		}
	}
}

// keepIdentical lists as kept the objects classify left out, those wanted
// as they are: what goes away may be named by them, and their references
// and map elements are looked at.
func (d *differ) keepIdentical() {
	for name, ws := range d.want.sets.all() {
		if d.have.sets.get(name) == ws {
			d.setAct[name] = "keep"
		}
	}
	for name, wc := range d.want.chains.all() {
		if d.have.chains.get(name) == wc {
			d.chainAct[name] = "keep"
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// setPod and chainPod name the pod an object belongs to: from the desired
// table, else from the record (observed objects carry no pod).
func (d *differ) setPod(name string) string {
	for _, t := range []*table{d.want, d.rec} {
		if s := t.sets.get(name); s != nil {
			return s.pod
		}
	}
	return ""
}

func (d *differ) chainPod(name string) string {
	for _, t := range []*table{d.want, d.rec} {
		if c := t.chains.get(name); c != nil {
			return c.pod
		}
	}
	return ""
}

// elemPod: a map element belongs to the pod of the chain it jumps to.
func (d *differ) elemPod(s *set, e *elem) string {
	if e.verdict != nil && e.verdict.Chain != "" {
		if pod := d.chainPod(e.verdict.Chain); pod != "" {
			return pod
		}
	}
	return d.setPod(s.name)
}

func sortedElemList(m *elemMap) []*elem {
	out := make([]*elem, 0, m.len())
	for _, e := range m.all() {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *elem) int { return compareKeys(a.key, b.key) })
	return out
}

// acted lists, sorted, the names of acts whose action is not keep, and
// of those kept but for which same is false: a scoped plan keeps the
// record's own objects for all but a few of a large table's, and sorting
// and visiting them all cost a CNI ADD more than its own change.
func acted(acts map[string]string, same func(name string) bool) []string {
	var out []string
	for name, a := range acts {
		if a != "keep" || !same(name) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (d *differ) sets() {
	p := d.p
	unchanged := func(name string) bool { return len(d.bounce) == 0 && d.want.sets.get(name) == d.have.sets.get(name) }
	names := acted(d.setAct, unchanged)
	creates := slices.ContainsFunc(names, func(name string) bool {
		a := act(d.setAct[name])
		return a == "create" || a == "recreate"
	})
	if creates {
		hot := baseChainSets(d.want)
		slices.SortStableFunc(names, func(a, b string) int { return cmpBool(hot[b], hot[a]) })
	}
	for _, name := range names {
		a, reason, _ := strings.Cut(d.setAct[name], ":")
		ws, hs := d.want.sets.get(name), d.have.sets.get(name)
		key := "set/" + name
		switch a {
		case "delete":
			p.add(gSetDel, op.Delete, key, d.setPod(name), fmt.Sprintf("nft %s %s", hs.word(), name))
			p.msgs[phDeleteSets] = append(p.msgs[phDeleteSets], delSetMsg(hs))
		case "create", "recreate":
			text := fmt.Sprintf("nft %s %s (%d elements)", ws.word(), name, ws.elems.len())
			action := op.Create
			if a == "recreate" {
				text = fmt.Sprintf("nft %s %s (recreate: %s; %d elements)", ws.word(), name, reason, ws.elems.len())
				action = op.Update
				p.msgs[phDeleteSets] = append(p.msgs[phDeleteSets], delSetMsg(hs))
			}
			p.add(gObjects, action, key, ws.pod, text)
			if p.staged[name] != nil {
				// Filled and read back before the transaction (stage.go),
				// which only deletes the old set.
				continue
			}
			p.msgs[phCreateSets] = append(p.msgs[phCreateSets], newSetMsg(ws, p.newID()))
			p.msgs[phAttach] = append(p.msgs[phAttach], elemMsgs(ws, ws.name, 0, sortedElemList(&ws.elems), false)...)
			p.verifySets[name] = ws
		case "keep":
			d.elems(ws, hs)
		}
	}
}

// baseChainSets names the sets and maps the base chains (those on a hook)
// of t match against, or nil: the sets every pod's ADD and DEL changes.
// A transaction creates them first. The kernel finds a set by its name
// by walking the table's sets in the order they were created
// (nft_set_lookup), for every message that adds, deletes or reads back
// elements: created after the policy groups' sets, as name order had
// it, each of a CNI request's few messages walked hundreds of sets.
func baseChainSets(t *table) map[string]bool {
	var hot map[string]bool
	mark := func(name string) {
		if name == "" {
			return
		}
		if hot == nil {
			hot = map[string]bool{}
		}
		hot[name] = true
	}
	for _, c := range t.chains.all() {
		if c.hook == "" {
			continue
		}
		for _, r := range c.rules {
			for _, m := range r.ir.Match {
				mark(m.Set)
			}
			mark(r.ir.Verdict.Map)
		}
	}
	return hot
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// elems diffs the elements of a set that stays. Only the elements that
// change are sorted and printed: one pod's change touches one element of
// a map that holds every pod's, and the others must not cost it anything.
func (d *differ) elems(ws, hs *set) {
	p := d.p
	if ws == hs && len(d.bounce) == 0 {
		// The record's own set (a partial sync of an unchanged set): the
		// same canonical object, which nothing modifies.
		return
	}
	bounce := func(e *elem) string {
		if len(d.bounce) == 0 {
			return ""
		}
		return d.bounce[ws.name+"\x00"+e.text]
	}
	var changed, gone []*elem
	switch dl := d.deltas[ws.name]; {
	case dl != nil && len(d.bounce) == 0: // computed by replaceSet
		changed, gone = dl.changed, dl.gone
	case ws.from != 0 && ws.from == hs.id && len(d.bounce) == 0:
		changed, gone = derivedChanges(ws, hs)
	default:
		changed, gone = elemChanges(ws, hs, bounce)
	}
	if len(changed)+len(gone) == 0 {
		return // the common case
	}
	byKey := func(a, b *elem) int { return compareKeys(a.key, b.key) }
	slices.SortFunc(changed, byKey)
	slices.SortFunc(gone, byKey)
	var adds, dels []*elem
	for _, e := range changed {
		he := hs.elems.get(e.text)
		key := "element/" + ws.name + "/" + e.text
		text := fmt.Sprintf("nft element %s { %s }", ws.name, e.String())
		switch {
		case he == nil:
			p.add(gElemAdd, op.Create, key, d.elemPod(ws, e), text)
			adds = append(adds, e)
		case !he.same(e):
			p.add(gElemAdd, op.Update, key, d.elemPod(ws, e), text+" (was "+he.String()+")")
			dels, adds = append(dels, he), append(adds, e)
		default:
			p.add(gElemAdd, op.Update, key, d.elemPod(ws, e), text+" (re-added: "+bounce(e)+")")
			dels, adds = append(dels, he), append(adds, e)
		}
	}
	for _, he := range gone {
		p.add(gElemDel, op.Delete, "element/"+hs.name+"/"+he.text, d.elemPod(hs, he),
			fmt.Sprintf("nft element %s { %s }", hs.name, he.String()))
		dels = append(dels, he)
	}
	if len(dels) > 0 {
		// Deletion uses the kernel's encoding of what is there (hs).
		p.msgs[phDetach] = append(p.msgs[phDetach], elemMsgs(hs, hs.name, 0, dels, true)...)
	}
	if len(adds) > 0 {
		p.msgs[phAttach] = append(p.msgs[phAttach], elemMsgs(ws, ws.name, 0, adds, false)...)
	}
	switch {
	case len(adds)+len(dels) == 0:
	case ws.interval == hs.interval && verifyByElems(ws, len(adds)+len(gone)):
		// Few elements of a kept set, for its size: read back those, not
		// the set (a pod's ADD adds its address to every group set it is
		// a peer in; reading each whole set back would cost the node's
		// size).
		p.verifyElems[ws.name] = &elemCheck{set: ws, present: adds, absent: gone}
	default:
		p.verifySets[ws.name] = ws
	}
}

// derivedChanges compares the delta of ws, derived from hs (the record,
// in a partial sync): they share every element but that delta.
func derivedChanges(ws, hs *set) (changed, gone []*elem) {
	for _, e := range ws.added {
		if he := hs.elems.get(e.text); he == nil || !he.same(e) {
			changed = append(changed, e)
		}
	}
	for _, he := range ws.removed {
		if ws.elems.get(he.text) == nil {
			gone = append(gone, he)
		}
	}
	return changed, gone
}

// elemChanges compares every element of ws and hs: the wanted elements
// that hs lacks or holds otherwise (or that bounce), and hs's elements that
// are not wanted.
func elemChanges(ws, hs *set, bounce func(*elem) string) (changed, gone []*elem) {
	kept := 0 // wanted elements the set has
	for k, e := range ws.elems.all() {
		he := hs.elems.get(k)
		if he != nil {
			kept++
		}
		if he == nil || !he.same(e) || bounce(e) != "" {
			changed = append(changed, e)
		}
	}
	if kept < hs.elems.len() {
		for k, he := range hs.elems.all() {
			if ws.elems.get(k) == nil {
				gone = append(gone, he)
			}
		}
	}
	return changed, gone
}

func (d *differ) chains() error {
	p := d.p
	for _, name := range acted(d.chainAct, func(string) bool { return true }) {
		a, reason, _ := strings.Cut(d.chainAct[name], ":")
		wc := d.want.chains.get(name)
		key := "chain/" + name
		switch a {
		case "keep":
			continue
		case "delete":
			p.add(gChainDel, op.Delete, key, d.chainPod(name), "nft chain "+name)
			p.msgs[phDetach] = append(p.msgs[phDetach], flushChainMsg(name))
			p.msgs[phDeleteChains] = append(p.msgs[phDeleteChains], delChainMsg(name))
			continue
		case "create":
			p.add(gObjects, op.Create, key, wc.pod, fmt.Sprintf("nft chain %s (%s)", name, nRules(len(wc.rules))))
			p.msgs[phCreateChains] = append(p.msgs[phCreateChains], newChainMsg(wc))
		case "recreate":
			p.add(gObjects, op.Update, key, wc.pod, fmt.Sprintf("nft chain %s (recreate: %s; %s)", name, reason, nRules(len(wc.rules))))
			p.msgs[phDetach] = append(p.msgs[phDetach], flushChainMsg(name))
			p.msgs[phDeleteChains] = append(p.msgs[phDeleteChains], delChainMsg(name))
			p.msgs[phCreateChains] = append(p.msgs[phCreateChains], newChainMsg(wc))
		case "replace":
			text := fmt.Sprintf("nft chain %s (%s)", name, nRules(len(wc.rules)))
			if reason != "" {
				text = fmt.Sprintf("nft chain %s (%s; rewritten: %s)", name, nRules(len(wc.rules)), reason)
			}
			p.add(gObjects, op.Update, key, wc.pod, text)
			p.msgs[phDetach] = append(p.msgs[phDetach], flushChainMsg(name))
		}
		for i, r := range wc.rules {
			ms, err := ruleMsgs(name, i, p.stagedRule(r), p.newID)
			if err != nil {
				return err
			}
			p.msgs[phRules] = append(p.msgs[phRules], ms...)
		}
		p.verifyChains[name] = len(wc.rules)
	}
	return nil
}

func nRules(n int) string {
	if n == 1 {
		return "1 rule"
	}
	return fmt.Sprintf("%d rules", n)
}
