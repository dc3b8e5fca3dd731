package nft

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// The check of a scoped plan's shortcuts (CheckKeptSetsEnv): kept sets
// (keptsets.go), the chain index (chainsets.go) and the diff limited to
// the scope's changes (differ.classify) must plan what the plan without
// them plans.

// CheckKeptSetsEnv, set to 1 in the environment, makes every scoped plan
// check its shortcuts, and fail if one changed the plan: a plan that used
// kept sets or the chain index (chainsets.go) plans again without them,
// and the diff that looked only at the scope's changes (differ.classify)
// classifies the whole table again. `make test` sets it, so that the
// agent's and the simulated nodes' tests check them too, at twice a scoped
// plan's CPU.
const CheckKeptSetsEnv = "TERWAY_CHECK_KEPT_SETS"

// recheckKeptSets is CheckKeptSetsEnv's check, on; this package's tests
// turn it on too.
var recheckKeptSets = os.Getenv(CheckKeptSetsEnv) == "1"

// keptSetsRechecked, when set (by this package's tests), is told of each
// plan recheckKeptSets found right, with the sets its memo skipped.
var keptSetsRechecked func(hits int)

// sameScoped compares two scoped tables by the plans they make against
// the record, and their changed sets; "" when they are the same.
func sameScoped(written, a, b *table, changedA, changedB *scopedChanges) string {
	namesA, namesB := slices.Sorted(maps.Keys(changedA.sets)), slices.Sorted(maps.Keys(changedB.sets))
	if !slices.Equal(namesA, namesB) {
		return fmt.Sprintf("changed sets %v, without the memo %v", namesA, namesB)
	}
	lines := func(want *table) ([]string, error) {
		p, err := diff("check", want, written, written, DefaultReplaceCost, stageMinElems, nil)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, o := range p.ops() {
			out = append(out, o.String())
		}
		slices.Sort(out)
		return out, nil
	}
	la, errA := lines(a)
	lb, errB := lines(b)
	if errA != nil || errB != nil {
		return fmt.Sprintf("diff: %v; without the memo: %v", errA, errB)
	}
	if !slices.Equal(la, lb) {
		return fmt.Sprintf("plan:\n%s\nwithout the memo:\n%s", strings.Join(la, "\n"), strings.Join(lb, "\n"))
	}
	return ""
}

// recheckWithoutMemo is recheckKeptSets' check: an error naming the
// difference, or nil.
func recheckWithoutMemo(desired *spec.NFTable, written *table, sc *Scope, cache *canonCache, index func(*set) addrIndex,
	wantIndex func(*spec.NFTSet, []int) wantIndex, want *table, changed *scopedChanges) error {
	again, changedAgain, _, err := scopedTable(desired, written, sc, cache, index, wantIndex, nil, nil, nil)
	if err != nil {
		return fmt.Errorf("%s: the plan of pods %v without kept sets and the chain index failed: %w", CheckKeptSetsEnv, sc.Pods, err)
	}
	if why := sameScoped(written, want, again, changed, changedAgain); why != "" {
		return fmt.Errorf("%s: the plan of pods %v with kept sets and the chain index differs from the one without: %s", CheckKeptSetsEnv, sc.Pods, why)
	}
	return nil
}

// recheckClassify is the check of CheckKeptSetsEnv for a classification
// limited to a scoped plan's changes: the same table classified whole
// must come to the same actions. An error names the first difference.
func (d *differ) recheckClassify() error {
	p := &plan{netns: d.p.netns, staged: map[string]*stagedSet{}}
	whole := newDiffer(p, d.want, d.have, d.rec, d.replaceCost, d.stageMin)
	whole.classify(nil)
	for _, c := range []struct {
		what          string
		limited, full map[string]string
	}{{"set", d.setAct, whole.setAct}, {"chain", d.chainAct, whole.chainAct}, {"map element", d.bounce, whole.bounce}} {
		if maps.Equal(c.limited, c.full) {
			continue
		}
		for _, name := range sortedKeys(mergeKeys(c.limited, c.full)) {
			if a, b := c.limited[name], c.full[name]; a != b {
				return fmt.Errorf("%s: a scoped plan classified %s %s as %q, the whole table's classification as %q",
					CheckKeptSetsEnv, c.what, name, a, b)
			}
		}
	}
	if !slices.Equal(sortedKeys(d.p.staged), sortedKeys(p.staged)) {
		return fmt.Errorf("%s: a scoped plan stages sets %v, the whole table's classification %v",
			CheckKeptSetsEnv, sortedKeys(d.p.staged), sortedKeys(p.staged))
	}
	return nil
}

func mergeKeys(a, b map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}
