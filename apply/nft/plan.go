package nft

import (
	"github.com/terway-reconciler/terway/apply/op"
)

// Phases order the messages of one transaction so that every reference
// exists when it is made and is gone before its target is deleted:
// rules that name a set or chain are flushed and map elements that jump to
// a chain are deleted before that set or chain is; chains are created before
// the map elements and rules that jump to them.
const (
	phDropTable    = iota // delete the table (nil desired, or unobservable contents)
	phTable               // create the table
	phDetach              // flush chains, delete elements
	phDeleteSets          // delete sets and maps (their elements go with them)
	phDeleteChains        // delete chains (already flushed)
	phCreateChains        // create chains, so that map elements may jump to them
	phCreateSets          // create sets and maps
	phAttach              // add elements
	phRules               // add rules
	numPhases
)

// plan is the outcome of a diff: plan lines, the transaction's messages by
// phase, and what to read back after the commit.
type plan struct {
	netns  string
	msgs   [numPhases][]batchMsg
	groups [numGroups][]op.Op
	nextID uint32
	// verifySets and verifyChains name what the transaction wrote, with
	// the desired content to compare after the commit. verifyElems does
	// the same for a few elements of a kept set (see elemCheck).
	verifySets   map[string]*set
	verifyChains map[string]int
	verifyElems  map[string]*elemCheck
	// staged are the recreated sets filled outside the transaction, by
	// name (stage.go).
	staged map[string]*stagedSet
	// counts says the sync counts towards the periodic full one (done).
	counts bool
	// rec is the record the plan was made on: a commit finding another
	// (the namespace forgotten, or made again at its path) is refused.
	rec *record
	// locks are record keys the commit locks as it records (stage.go).
	locks map[string]bool
	// scopedSets, for a scoped plan (PlanScoped), are the sets it put or
	// dropped, written or not (a group taken whole, a pod's own set made
	// again the same): its commit leaves the record's other sets the very
	// objects they were, whose address indexes stay (warmIndexes). nil for
	// any other plan.
	scopedSets []string
}

// verifyPerElemMax is how many changed elements of one kept set are
// always read back one by one; a larger change is too while that costs
// less than reading the whole set back (verifyByElems).
const verifyPerElemMax = 16

// verifyElemCost is what reading back one element costs, counted in
// elements of a set's dump: 10 to 12 µs against 1.7 to 2.1 µs, on Linux
// 6.18, for concatenated group sets of 200 and 800 elements
// (BenchmarkVerifyWays).
const verifyElemCost = 6

// verifyByElems tells whether changed elements of a kept set ws are read
// back one by one rather than by a dump of the set. An
// admission step adds tens of its pods' elements to each of a hundred
// group sets of hundreds of elements: dumping each of them was most of
// the step's time, with the agent's lock held. A one-field interval set
// asks two queries an element (getElems), so half as many are.
func verifyByElems(ws *set, changed int) bool {
	cost := verifyElemCost
	if ws.interval && len(ws.types) == 1 {
		cost *= 2
	}
	return changed <= max(verifyPerElemMax, ws.elems.len()/cost)
}

// elemCheck is what a transaction changed in a set it kept: the elements
// that must now be there as written, and those that must be gone (getElems
// reads an interval back whole, so a key names exactly one element).
// Reading back these few instead of the whole set keeps a pod's change
// from costing a read of every pod's element of a map.
type elemCheck struct {
	set     *set
	present []*elem
	absent  []*elem // as the kernel held them (the set's observed form)
}

// Groups order the plan's lines for reading: the table, what goes away,
// then what is written. (The transaction's order is the phases'.)
const (
	gTable = iota
	gSetDel
	gChainDel
	gElemDel
	gObjects // sets, maps and chains created, recreated or rewritten
	gElemAdd
	numGroups
)

func (p *plan) newID() uint32 { p.nextID++; return p.nextID }

func (p *plan) add(group int, a op.Action, key, pod, text string) {
	p.groups[group] = append(p.groups[group], op.Op{Kind: Kind, Action: a, Key: key, Text: text, Netns: p.netns, Pod: pod})
}

func (p *plan) ops() []op.Op {
	var out []op.Op
	for _, g := range p.groups {
		out = append(out, g...)
	}
	return out
}

func (p *plan) messages() []batchMsg {
	var out []batchMsg
	for _, m := range p.msgs {
		out = append(out, m...)
	}
	return out
}
