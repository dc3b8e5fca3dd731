package eni

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// ipState is what one IP of one of our ENIs is doing.
type ipState uint8

const (
	// ipIdle: in the pool, free to hand out.
	ipIdle ipState = iota
	// ipHeld: handed to an owner; never unassigned while held.
	ipHeld
	// ipReleasing: an unassign call is in flight; not handed out.
	ipReleasing
)

// ipEntry is one IP of one of our ENIs.
type ipEntry struct {
	state ipState
	owner string
	// idleSince orders idle IPs: the longest idle is handed out first, so
	// that an IP just freed is not reused while the old pod's connections
	// may still be in a peer's conntrack.
	idleSince time.Time
}

// eniEntry is one ENI we own, as we believe it is. The states exist for
// these failure modes:
//   - ready is false from creation until the ENI is InUse on our instance,
//     its gateway known and its link present: no IP of it is handed out
//     before the pod's traffic can flow.
//   - deleting is set before detach starts: the ENI takes no new owner
//     while it goes away, even if the detach or delete fails and is retried.
//   - an exclusive ENI has one owner (its pod) or a reservation for one
//     caller waiting in AllocateENI; without either it is deleted.
type eniEntry struct {
	id, mac, vswitch, primaryIP string
	cidr, gateway               string
	deviceIndex                 int
	status                      string
	exclusive                   bool
	owner                       string
	reservedFor                 string
	ready                       bool
	deleting                    bool
	ips                         map[string]*ipEntry
}

func newENIEntry(c cloudENI, exclusive bool, now time.Time) *eniEntry {
	e := &eniEntry{id: c.ID, exclusive: exclusive, ips: map[string]*ipEntry{}}
	e.observe(c, now)
	return e
}

// observe takes the cloud's description, keeping what we know about each
// IP that is still there. It returns the held IPs that the cloud no longer
// lists (someone unassigned them behind our back).
func (e *eniEntry) observe(c cloudENI, now time.Time) (lost []string) {
	e.mac, e.vswitch, e.primaryIP, e.status = c.MAC, c.VSwitchID, c.PrimaryIP, c.Status
	if c.DeviceIndex > 0 {
		e.deviceIndex = c.DeviceIndex
	}
	present := map[string]bool{}
	for _, ip := range c.IPs {
		present[ip] = true
		if _, ok := e.ips[ip]; !ok {
			e.ips[ip] = &ipEntry{state: ipIdle, idleSince: now}
		}
	}
	for ip, st := range e.ips {
		if present[ip] {
			continue
		}
		if st.state == ipHeld {
			lost = append(lost, ip)
		}
		delete(e.ips, ip)
	}
	slices.Sort(lost)
	return lost
}

// counts returns the held, idle and releasing IPs.
func (e *eniEntry) counts() (held, idle, releasing int) {
	for _, st := range e.ips {
		switch st.state {
		case ipHeld:
			held++
		case ipIdle:
			idle++
		case ipReleasing:
			releasing++
		}
	}
	return
}

// sortedIPs returns the ENI's IPs in state st, primary first, then by
// address.
func (e *eniEntry) sortedIPs(st ipState) []string {
	var out []string
	for ip, x := range e.ips {
		if x.state == st {
			out = append(out, ip)
		}
	}
	sortIPs(out, e.primaryIP)
	return out
}

// oldestIdle returns the idle IP idle the longest (ties by address).
func (e *eniEntry) oldestIdle() (string, bool) {
	best := ""
	var bestAt time.Time
	for ip, x := range e.ips {
		if x.state != ipIdle {
			continue
		}
		if best == "" || x.idleSince.Before(bestAt) || (x.idleSince.Equal(bestAt) && compareIP(ip, best) < 0) {
			best, bestAt = ip, x.idleSince
		}
	}
	return best, best != ""
}

// serves reports whether the ENI can hand out shared IPs now.
func (e *eniEntry) serves() bool {
	return e.ready && !e.deleting && !e.exclusive
}

func sortIPs(ips []string, primary string) {
	slices.SortFunc(ips, func(a, b string) int {
		switch {
		case a == primary && b != primary:
			return -1
		case b == primary && a != primary:
			return 1
		}
		return compareIP(a, b)
	})
}

func compareIP(a, b string) int {
	x, errA := netip.ParseAddr(a)
	y, errB := netip.ParseAddr(b)
	if errA != nil || errB != nil {
		return cmp.Compare(a, b)
	}
	return x.Compare(y)
}

// ownership decides which ENIs are ours: both ownership tags, never the
// primary ENI.
type ownership struct {
	instanceID   string
	primaryENIID string
}

func (o ownership) ours(c cloudENI) bool {
	if c.Type == typePrimary || (o.primaryENIID != "" && c.ID == o.primaryENIID) {
		return false
	}
	return c.Tags[TagOwner] == OwnerValue && c.Tags[TagInstance] == o.instanceID
}

// tags are the ownership tags of our instance.
func (o ownership) tags() map[string]string {
	return map[string]string{TagOwner: OwnerValue, TagInstance: o.instanceID}
}

func exclusiveTagged(c cloudENI) bool { return c.Tags[TagExclusive] == "true" }
