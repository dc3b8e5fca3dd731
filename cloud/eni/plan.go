package eni

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// poolView is the input of planPool: what we own, who waits, the limits.
type poolView struct {
	Limits           Limits
	MinIdle, MaxIdle int
	// Foreign counts attached ENIs that are neither the primary nor ours:
	// they take slots of the instance type all the same.
	Foreign int
	// ENIs are ours, sorted by ID.
	ENIs []eniView
	// Pending counts AllocateIP callers waiting for an IP.
	Pending int
	// PendingExclusive are the AllocateENI callers waiting, sorted.
	PendingExclusive []string
	// CanCreate is false while every configured vswitch is exhausted.
	CanCreate bool
	// Blocked are the exhausted vswitches: no IP is asked of them.
	Blocked map[string]bool
	// ReservedShared, when set, divides the slots between shared and
	// exclusive ENIs (SplitSlots).
	ReservedShared *int
}

// eniView is one of our ENIs as the planner sees it.
type eniView struct {
	ID, MAC, VSwitch, Primary string
	Exclusive                 bool
	Owner, ReservedFor        string
	// Held and Idle are sorted, the primary IP first.
	Held, Idle []string
	Releasing  int
	Ready      bool
	Deleting   bool
}

func (e eniView) total() int { return len(e.Held) + len(e.Idle) + e.Releasing }

// Why the plan falls short.
const (
	shortNone = iota
	shortLimits
	shortVSwitches
)

// plan is planPool's answer: the document-shaped needs, and what it could
// not provide.
type plan struct {
	Needs spec.ENINeeds
	// Short counts IPs that waiting callers and the pool's minimum need
	// but no ENI can provide; Reason (shortLimits, shortVSwitches) and Why
	// say why.
	Short  int
	Reason int
	Why    string
	// ExclusiveShort are waiting AllocateENI callers no ENI can serve.
	ExclusiveShort []string
	// newShared collects the new shared ENIs while the plan is made.
	newShared []spec.ENIWant
}

// refillTarget is the idle count a refill aims at: the middle of the pool's
// range, so that churn of a few pods around either bound crosses neither,
// and one call brings several IPs.
func refillTarget(minIdle, maxIdle int) int {
	return max(minIdle, (minIdle+maxIdle+1)/2)
}

// planPool decides what the pool needs, in the document's shape. It is pure.
//
//   - Exclusive ENIs with an owner, or reserved for a waiting caller, stay;
//     the others are deleted. Waiting callers without an ENI get a new one
//     while the instance type has slots for exclusive ENIs (SplitSlots:
//     never one kept for shared ENIs).
//   - Idle shared IPs below MinIdle+Pending are refilled to
//     refillTarget+Pending: first on ENIs with room (the busiest first, so
//     that the least used can empty), then on new ENIs while slots for
//     shared ENIs last. Exhausted vswitches are skipped.
//   - Idle IPs above MaxIdle are released from the least used ENIs first:
//     an ENI holding nothing is deleted whole when all its IPs are excess,
//     otherwise its idle secondaries are unassigned (its primary IP goes
//     only with the ENI).
func planPool(v poolView) plan {
	var p plan
	p.Needs = spec.ENINeeds{MaxENIs: v.Limits.MaxENIs, IPsPerENI: v.Limits.IPsPerENI, MinIdle: v.MinIdle, MaxIdle: v.MaxIdle}
	needs := &p.Needs
	used := v.Foreign // slots taken besides the primary ENI
	waiting := map[string]bool{}
	for _, o := range v.PendingExclusive {
		waiting[o] = true
	}
	var shared []*sharedPlan
	usedExclusive, usedShared := 0, 0
	for _, e := range v.ENIs {
		used++
		// A deleting ENI holds its slot until it is gone.
		if e.Exclusive {
			usedExclusive++
		} else {
			usedShared++
		}
		w := spec.ENIWant{ID: e.ID, Name: e.ID, MAC: e.MAC, Exclusive: e.Exclusive}
		switch {
		case e.Deleting:
			w.Release, w.Delete = slices.Clone(e.Idle), true
		case e.Exclusive && e.Owner != "":
			w.Pod, w.InUse = e.Owner, slices.Clone(e.Held)
		case e.Exclusive && e.ReservedFor != "" && waiting[e.ReservedFor]:
			w.Pod, w.Keep = e.ReservedFor, slices.Clone(e.Idle)
			delete(waiting, e.ReservedFor)
		case e.Exclusive:
			w.Release, w.Delete = slices.Clone(e.Idle), true
		default:
			shared = append(shared, &sharedPlan{view: e, want: w})
			continue
		}
		needs.ENIs = append(needs.ENIs, w)
	}
	free := v.Limits.MaxENIs - 1 - used
	slots := SplitSlots(v.Limits.MaxENIs, v.Foreign, v.ReservedShared)
	freeExclusive := min(free, slots.Exclusive-usedExclusive)
	for _, o := range sortedKeys(waiting) {
		if freeExclusive < 1 || !v.CanCreate {
			p.ExclusiveShort = append(p.ExclusiveShort, o)
			continue
		}
		needs.ENIs = append(needs.ENIs, spec.ENIWant{Name: "exclusive-" + o, Exclusive: true, Pod: o, Add: 1})
		needs.ExclusiveWanted++
		free--
		freeExclusive--
	}
	if len(p.ExclusiveShort) > 0 {
		p.Reason, p.Why = shortLimits, slots.exclusiveWhy(v.Limits.MaxENIs, v.Foreign, usedExclusive+needs.ExclusiveWanted)
		if freeExclusive > 0 && !v.CanCreate {
			p.Reason, p.Why = shortVSwitches, "every configured vswitch is exhausted"
		}
	}

	idle := 0
	for _, s := range shared {
		needs.IPsInUse += len(s.view.Held)
		if s.view.Ready {
			idle += len(s.view.Idle)
		}
	}
	want := v.MinIdle + v.Pending
	switch {
	case idle < want:
		planRefill(&p, v, shared, min(free, slots.Shared-usedShared), idle, want)
	case idle > v.MaxIdle+v.Pending:
		planRelease(shared, idle-v.MaxIdle-v.Pending)
	}

	for _, s := range shared {
		s.want.InUse = slices.Clone(s.view.Held)
		s.want.Keep = without(s.view.Idle, s.want.Release)
		if !s.want.Delete {
			needs.IPsWanted += len(s.want.InUse) + len(s.want.Keep) + s.want.Add + s.view.Releasing
		}
		needs.ENIs = append(needs.ENIs, s.want)
	}
	for _, w := range p.newShared {
		needs.IPsWanted += w.Add
		needs.ENIs = append(needs.ENIs, w)
	}
	p.newShared = nil
	slices.SortStableFunc(needs.ENIs, func(a, b spec.ENIWant) int { return cmp.Compare(a.Name, b.Name) })
	return p
}

// sharedPlan is one shared ENI while the plan is made.
type sharedPlan struct {
	view eniView
	want spec.ENIWant
}

func planRefill(p *plan, v poolView, shared []*sharedPlan, free, idle, want int) {
	target := refillTarget(v.MinIdle, v.MaxIdle) + v.Pending
	need := target - idle
	order := slices.Clone(shared)
	slices.SortStableFunc(order, func(a, b *sharedPlan) int {
		return cmp.Or(-cmp.Compare(len(a.view.Held), len(b.view.Held)), cmp.Compare(a.view.ID, b.view.ID))
	})
	skipped := false
	for _, s := range order {
		room := v.Limits.IPsPerENI - s.view.total()
		switch {
		case need == 0:
		case !s.view.Ready || room <= 0:
		case v.Blocked[s.view.VSwitch]:
			skipped = true
		default:
			s.want.Add = min(room, need)
			need -= s.want.Add
		}
	}
	for i := 1; need > 0 && free > 0 && v.CanCreate; i++ {
		add := min(v.Limits.IPsPerENI, need)
		p.newShared = append(p.newShared, spec.ENIWant{Name: fmt.Sprintf("new-%d", i), Add: add})
		need -= add
		free--
	}
	got := target - idle - need
	if short := want - idle - got; short > 0 {
		p.Short = short
		switch {
		case skipped || (free > 0 && !v.CanCreate):
			p.Reason, p.Why = shortVSwitches, "the vswitches of the ENIs with room, or every configured vswitch, are exhausted"
		case v.ReservedShared != nil && *v.ReservedShared < v.Limits.MaxENIs-1:
			p.Reason = shortLimits
			p.Why = fmt.Sprintf("multi-IP pods may use %d ENIs (reservedENIsForMultiIP %d, less ENIs attached by others) x %d IPs, and every one is full; the other slots are for exclusive ENIs (aliyun/eni)",
				SplitSlots(v.Limits.MaxENIs, v.Foreign, v.ReservedShared).Shared, *v.ReservedShared, v.Limits.IPsPerENI)
		default:
			p.Reason = shortLimits
			p.Why = fmt.Sprintf("the instance type allows %d ENIs x %d IPs; with the primary ENI, %d ENIs of others and %d exclusive ENIs, every shared ENI is full and no slot is left",
				v.Limits.MaxENIs, v.Limits.IPsPerENI, v.Foreign, countExclusive(v.ENIs)+p.Needs.ExclusiveWanted)
		}
	}
}

func planRelease(shared []*sharedPlan, excess int) {
	order := slices.Clone(shared)
	slices.SortStableFunc(order, func(a, b *sharedPlan) int {
		return cmp.Or(cmp.Compare(len(a.view.Held), len(b.view.Held)), cmp.Compare(len(a.view.Idle), len(b.view.Idle)), cmp.Compare(a.view.ID, b.view.ID))
	})
	for _, s := range order {
		if excess == 0 {
			return
		}
		e := s.view
		if !e.Ready {
			continue
		}
		if len(e.Held) == 0 && e.Releasing == 0 && len(e.Idle) <= excess {
			s.want.Release, s.want.Delete = slices.Clone(e.Idle), true
			excess -= len(e.Idle)
			continue
		}
		var secondaries []string
		for _, ip := range e.Idle {
			if ip != e.Primary {
				secondaries = append(secondaries, ip)
			}
		}
		k := min(excess, len(secondaries))
		s.want.Release = slices.Clone(secondaries[len(secondaries)-k:])
		excess -= k
	}
}

func countExclusive(enis []eniView) int {
	n := 0
	for _, e := range enis {
		if e.Exclusive && !e.Deleting {
			n++
		}
	}
	return n
}

// without returns list minus drop, in list's order.
func without(list, drop []string) []string {
	var out []string
	for _, x := range list {
		if !slices.Contains(drop, x) {
			out = append(out, x)
		}
	}
	return out
}
