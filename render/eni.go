package render

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// eniState is one attached shared ENI while the needs are computed.
type eniState struct {
	want    spec.ENIWant
	primary string
	idle    []string // the idle IPs, primary first when idle
	inUse   int
}

// renderENINeeds computes the eni section in eni-multi-ip mode: the IPs in
// use, plus an idle pool kept between MinPoolSize and MaxPoolSize (pods that
// wait for an IP count as demand), bounded by the instance type's limits.
// Shared ENIs are filled before new ones are asked for; idle IPs are released
// from the least used ENIs first, so that an ENI can empty and be deleted.
func (r *renderer) renderENINeeds() {
	if r.cfg.Mode != spec.PodModeENIMultiIP {
		return
	}
	needs := &spec.ENINeeds{
		MaxENIs: r.cfg.MaxENIs, IPsPerENI: r.cfg.IPsPerENI,
		MinIdle: r.cfg.MinPoolSize, MaxIdle: r.cfg.MaxPoolSize,
	}
	used := map[string]bool{}
	pendingShared := 0
	for _, p := range r.pods {
		switch {
		case !p.local:
		case p.entry != nil:
			used[p.entry.IP] = true
		case p.alloc == nil && WantsExclusiveENI(p.pod):
			needs.ExclusiveWanted++
			needs.ENIs = append(needs.ENIs, spec.ENIWant{Name: "exclusive-" + p.key, Exclusive: true, Pod: p.key, Add: 1})
		case p.alloc == nil:
			pendingShared++
		}
	}
	var shared []*eniState
	exclusive := 0
	for _, name := range sortedKeys(r.enis) {
		e := r.enis[name]
		if e.Spec.Exclusive {
			exclusive++
			w := spec.ENIWant{ID: name, Name: name, MAC: e.Spec.MAC, Exclusive: true}
			if used[e.Spec.PrimaryIP] {
				w.InUse = []string{e.Spec.PrimaryIP}
				w.Pod = r.ipOwners[netip.MustParseAddr(e.Spec.PrimaryIP)].key
			} else {
				// An exclusive ENI whose pod is gone goes back to the cloud.
				w.Release, w.Delete = []string{e.Spec.PrimaryIP}, true
			}
			needs.ENIs = append(needs.ENIs, w)
			continue
		}
		st := &eniState{want: spec.ENIWant{ID: name, Name: name, MAC: e.Spec.MAC}, primary: e.Spec.PrimaryIP}
		for _, ip := range append([]string{e.Spec.PrimaryIP}, e.Spec.SecondaryIPs...) {
			if used[ip] {
				st.want.InUse = append(st.want.InUse, ip)
				st.inUse++
			} else {
				st.idle = append(st.idle, ip)
			}
		}
		needs.IPsInUse += st.inUse
		shared = append(shared, st)
	}
	// Every secondary ENI slot not held by an exclusive ENI may serve shared IPs.
	slots := r.cfg.MaxENIs - 1 - exclusive - needs.ExclusiveWanted
	if slots < 0 {
		r.problem("Node", "", r.node, "eni", "%d exclusive ENIs are needed but the instance type allows %d besides the primary ENI",
			exclusive+needs.ExclusiveWanted, r.cfg.MaxENIs-1)
		slots = 0
	}
	idle := 0
	for _, st := range shared {
		idle += len(st.idle)
	}
	capacity := max(slots, len(shared)) * r.cfg.IPsPerENI
	wantIdle := min(pendingShared+r.cfg.MinPoolSize, capacity-needs.IPsInUse)
	maxIdle := pendingShared + r.cfg.MaxPoolSize
	switch {
	case idle < wantIdle:
		r.addIPs(needs, shared, slots, wantIdle-idle)
	case idle > maxIdle:
		releaseIPs(shared, idle-maxIdle)
	}
	if needs.IPsInUse+pendingShared > capacity {
		r.problem("Node", "", r.node, "eni", "%d pods need shared ENI IPs but the instance type allows %d (%d ENIs x %d IPs)",
			needs.IPsInUse+pendingShared, capacity, max(slots, len(shared)), r.cfg.IPsPerENI)
	}
	total := 0
	for _, st := range shared {
		st.want.Keep = st.idle
		total += len(st.want.InUse) + len(st.want.Keep) + st.want.Add
		needs.ENIs = append(needs.ENIs, st.want)
	}
	for _, w := range needs.ENIs {
		if w.ID == "" && !w.Exclusive {
			total += w.Add
		}
	}
	needs.IPsWanted = total
	r.state.ENI = needs
}

// addIPs fills shared ENIs with room, then asks for new ENIs while slots last.
func (r *renderer) addIPs(needs *spec.ENINeeds, shared []*eniState, slots, n int) {
	for _, st := range shared {
		room := r.cfg.IPsPerENI - st.inUse - len(st.idle)
		add := min(room, n)
		if add > 0 {
			st.want.Add = add
			n -= add
		}
	}
	for i := 1; n > 0 && len(shared)+i-1 < slots; i++ {
		add := min(r.cfg.IPsPerENI, n)
		needs.ENIs = append(needs.ENIs, spec.ENIWant{Name: fmt.Sprintf("new-%d", i), Add: add})
		n -= add
	}
}

// releaseIPs releases n idle IPs, starting with the least used ENIs and their
// secondaries; an ENI left with no IP at all is deleted.
func releaseIPs(shared []*eniState, n int) {
	order := slices.Clone(shared)
	slices.SortStableFunc(order, func(a, b *eniState) int { return cmp.Compare(a.inUse, b.inUse) })
	for _, st := range order {
		if n == 0 {
			return
		}
		// Secondaries go first, from the end; the primary IP goes only with
		// the whole ENI, when nothing on it is used.
		for len(st.idle) > 0 && n > 0 {
			last := st.idle[len(st.idle)-1]
			if last == st.primary && st.inUse > 0 {
				break // the primary of an ENI that still serves pods
			}
			st.want.Release = append(st.want.Release, last)
			st.idle = st.idle[:len(st.idle)-1]
			n--
		}
		if st.inUse == 0 && len(st.idle) == 0 {
			st.want.Delete = true
		}
	}
}
