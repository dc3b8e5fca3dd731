package emulator

import (
	"crypto/sha1"
	"fmt"
	"net/netip"
	"time"
)

// ENI statuses, as the cloud spells them.
const (
	statusAvailable = "Available"
	statusAttaching = "Attaching"
	statusInUse     = "InUse"
	statusDetaching = "Detaching"
	statusDeleting  = "Deleting"
)

// ENI types.
const (
	typePrimary   = "Primary"
	typeSecondary = "Secondary"
	typeTrunk     = "Trunk"
)

// unattachedIPv4Limit caps the IPv4 addresses (primary included) of an ENI
// that is not attached: the cloud allows 49 secondaries at creation and on
// an Available ENI; the instance type's quota applies once attached.
const unattachedIPv4Limit = 50

type vswitchState struct {
	VSwitch
	pool *pool
}

type instanceState struct {
	Instance
	typ     InstanceType
	created time.Time
}

type tag struct{ Key, Value string }

// eniState is one ENI. gen changes on every status change so that a
// delayed transition started for an earlier status does nothing.
type eniState struct {
	seq         int
	id, mac     string
	typ         string
	status      string
	vsw         *vswitchState
	instanceID  string
	deviceIndex int
	primaryIP   netip.Addr
	secondary   []netip.Addr
	// assignedAt tells the metadata service when a secondary IP appeared,
	// for the optional metadata lag.
	assignedAt     map[netip.Addr]time.Time
	tags           []tag
	securityGroups []string
	name, desc     string
	trafficMode    string
	created        time.Time
	attachedAt     time.Time
	gen            uint64
	// plugged: the attach hook ran and the NIC is on the instance, so the
	// metadata service lists its MAC (until the detach completes).
	plugged bool
}

func (n *eniState) ips() []netip.Addr {
	return append([]netip.Addr{n.primaryIP}, n.secondary...)
}

func (n *eniState) hasIP(a netip.Addr) bool {
	for _, x := range n.ips() {
		if x == a {
			return true
		}
	}
	return false
}

// newENIID returns the next ENI id. Ids and MACs are deterministic for a
// given sequence of calls, which makes failures reproducible.
func (e *Emulator) newENIID() (string, int) {
	e.eniSeq++
	return fmt.Sprintf("eni-emu%015d", e.eniSeq), e.eniSeq
}

// newMAC derives a MAC in the cloud's 00:16:3e OUI from the ENI id and
// steps past collisions, so every ENI has its own.
func (e *Emulator) newMAC(id string) string {
	h := sha1.Sum([]byte(id))
	v := uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
	for {
		mac := fmt.Sprintf("00:16:3e:%02x:%02x:%02x", byte(v>>16), byte(v>>8), byte(v))
		if _, taken := e.macs[mac]; !taken {
			e.macs[mac] = id
			return mac
		}
		v = (v + 1) & 0xffffff
	}
}

// addENI allocates addresses and records a new ENI; the caller checked
// everything else.
func (e *Emulator) addENI(vsw *vswitchState, typ string, primary netip.Addr, explicit []netip.Addr, count int, now time.Time) (*eniState, *apiError) {
	id, seq := e.newENIID()
	want := 1 + len(explicit) + count
	if want > vsw.pool.available() {
		e.eniSeq-- // nothing was created: keep ids dense
		return nil, errf(codeIPNotEnough, "The specified vSwitch %s does not have enough IP addresses: %d wanted, %d available.", vsw.ID, want, vsw.pool.available())
	}
	var fixed []netip.Addr
	if primary.IsValid() {
		fixed = append(fixed, primary)
	}
	fixed = append(fixed, explicit...)
	if bad, taken, ok := vsw.pool.take(id, fixed); !ok {
		e.eniSeq--
		if taken {
			return nil, errf(codeIPAssigned, "The specified IP address %s of vSwitch %s is already in use.", bad, vsw.ID)
		}
		return nil, errf(codeIPInvalid, "The specified IP address %s is not a usable address of vSwitch %s (%s).", bad, vsw.ID, vsw.CIDR)
	}
	auto := count
	if !primary.IsValid() {
		auto++
	}
	got, _ := vsw.pool.alloc(id, auto) // enough: checked above
	all := append(fixed, got...)
	if !primary.IsValid() {
		// The auto-allocated primary is the first address handed out.
		primary = got[0]
		all = append(append(append([]netip.Addr{}, primary), explicit...), got[1:]...)
	}
	n := &eniState{
		seq: seq, id: id, mac: e.newMAC(id), typ: typ, status: statusAvailable, vsw: vsw,
		primaryIP: primary, secondary: all[1:], assignedAt: map[netip.Addr]time.Time{},
		securityGroups: []string{e.world.SecurityGroupID}, trafficMode: "Standard", created: now,
	}
	for _, a := range n.secondary {
		n.assignedAt[a] = now
	}
	e.enis[id] = n
	return n, nil
}

func (e *Emulator) eni(id string) (*eniState, *apiError) {
	n, ok := e.enis[id]
	if !ok {
		return nil, errf(codeENINotFound, "The specified ENI %s does not exist.", id)
	}
	return n, nil
}

func (e *Emulator) instance(id string) (*instanceState, *apiError) {
	in, ok := e.instances[id]
	if !ok {
		return nil, errf(codeInstanceNotFound, "The specified instance %s does not exist.", id)
	}
	return in, nil
}

// enisOf lists the ENIs attached to (or attaching to, or detaching from) an
// instance: all of them count against the type's ENI quota.
func (e *Emulator) enisOf(instanceID string) []*eniState {
	var out []*eniState
	for _, n := range e.enis {
		if n.instanceID == instanceID {
			out = append(out, n)
		}
	}
	return out
}

func (e *Emulator) attach(n *eniState, in *instanceState) *apiError {
	if n.status != statusAvailable {
		return errf(codeInvalidENIState, "The ENI %s is %s; it must be Available to attach.", n.id, n.status)
	}
	if in.Status != "Running" && in.Status != "Stopped" {
		return errf(codeIncorrectInstance, "The instance %s is %s; it must be Running or Stopped to attach an ENI.", in.ID, in.Status)
	}
	if n.vsw.ZoneID != in.ZoneID {
		return errf(codeZoneMismatch, "The ENI %s is in zone %s (vSwitch %s) but instance %s is in zone %s.", n.id, n.vsw.ZoneID, n.vsw.ID, in.ID, in.ZoneID)
	}
	attached := e.enisOf(in.ID)
	if len(attached) >= in.typ.ENIQuantity {
		return errf(codeENIPerInstanceLimit, "The instance %s (type %s) already has %d ENIs, the most its type allows.", in.ID, in.typ.ID, len(attached))
	}
	if ips := len(n.ips()); ips > in.typ.ENIPrivateIPAddressQuantity {
		return errf(codeIPv4CountExceeded, "The ENI %s has %d IPv4 addresses; instance type %s allows %d per ENI.", n.id, ips, in.typ.ID, in.typ.ENIPrivateIPAddressQuantity)
	}
	used := map[int]bool{}
	for _, o := range attached {
		used[o.deviceIndex] = true
	}
	idx := 1
	for used[idx] {
		idx++
	}
	n.status, n.instanceID, n.deviceIndex = statusAttaching, in.ID, idx
	n.gen++
	gen := n.gen
	e.after(e.attachDelay, func() { e.finishAttach(n.id, gen) })
	return nil
}

// finishAttach completes an attach: the hook plugs the NIC into the node
// first, so by the time Describe says InUse the link exists, as in the cloud.
// A failing hook makes the attach fail: the ENI falls back to Available.
func (e *Emulator) finishAttach(id string, gen uint64) {
	e.mu.Lock()
	n, ok := e.enis[id]
	if !ok || n.gen != gen || n.status != statusAttaching {
		e.mu.Unlock()
		return
	}
	info, inst, hook := e.eniInfo(n), n.instanceID, e.hook
	e.mu.Unlock()

	var err error
	if hook != nil {
		err = hook.ENIAttached(inst, info)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if n.gen != gen { // nothing else may touch an Attaching ENI; be safe anyway
		return
	}
	n.gen++
	if err != nil {
		e.log.Warn("attach hook failed; ENI falls back to Available", "eni", id, "instance", inst, "err", err)
		n.status, n.instanceID, n.deviceIndex = statusAvailable, "", 0
		return
	}
	n.status, n.plugged, n.attachedAt = statusInUse, true, e.now()
	e.log.Debug("ENI attached", "eni", id, "instance", inst, "deviceIndex", n.deviceIndex)
}

func (e *Emulator) detach(n *eniState, instanceID string) *apiError {
	if n.typ == typePrimary {
		return errf(codeDetachPrimary, "The ENI %s is the primary ENI of %s and cannot be detached.", n.id, n.instanceID)
	}
	if n.instanceID != instanceID && (n.status == statusInUse || n.status == statusDetaching) {
		return errf(codeInvalidENIState, "The ENI %s is attached to instance %s, not %s.", n.id, n.instanceID, instanceID)
	}
	switch n.status {
	case statusDetaching:
		return nil // a retry while the detach runs
	case statusInUse:
	default:
		return errf(codeInvalidENIState, "The ENI %s is %s; it must be InUse to detach.", n.id, n.status)
	}
	n.status = statusDetaching
	n.gen++
	gen := n.gen
	e.after(e.detachDelay, func() { e.finishDetach(n.id, gen) })
	return nil
}

// finishDetach completes a detach: the hook unplugs the NIC, then the ENI
// is Available. The cloud detaches even if the guest objects, so a hook
// error is only logged.
func (e *Emulator) finishDetach(id string, gen uint64) {
	e.mu.Lock()
	n, ok := e.enis[id]
	if !ok || n.gen != gen || n.status != statusDetaching {
		e.mu.Unlock()
		return
	}
	info, inst, hook := e.eniInfo(n), n.instanceID, e.hook
	e.mu.Unlock()

	if hook != nil {
		if err := hook.ENIDetached(inst, info); err != nil {
			e.log.Warn("detach hook failed; ENI is detached anyway", "eni", id, "instance", inst, "err", err)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if n.gen != gen {
		return
	}
	n.gen++
	n.status, n.instanceID, n.deviceIndex, n.plugged, n.attachedAt = statusAvailable, "", 0, false, time.Time{}
	e.log.Debug("ENI detached", "eni", id, "instance", inst)
}

func (e *Emulator) remove(n *eniState) *apiError {
	if n.typ == typePrimary {
		return errf(codeInvalidENIState, "The ENI %s is the primary ENI of %s and cannot be deleted.", n.id, n.instanceID)
	}
	switch n.status {
	case statusDeleting:
		return nil // a retry while the delete runs
	case statusAvailable:
	default:
		return errf(codeInvalidENIState, "The ENI %s is %s; it must be Available (detached) to delete.", n.id, n.status)
	}
	n.status = statusDeleting
	n.gen++
	gen := n.gen
	e.after(e.deleteDelay, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if m, ok := e.enis[n.id]; ok && m.gen == gen {
			n.vsw.pool.release(n.ips()...)
			delete(e.enis, n.id)
			delete(e.macs, n.mac)
			e.log.Debug("ENI deleted", "eni", n.id)
		}
	})
	return nil
}

// ipv4Limit is how many IPv4 addresses (primary included) the ENI may hold now.
func (e *Emulator) ipv4Limit(n *eniState) (int, string) {
	if n.instanceID != "" {
		in := e.instances[n.instanceID]
		return in.typ.ENIPrivateIPAddressQuantity, fmt.Sprintf("instance type %s of %s", in.typ.ID, in.ID)
	}
	return unattachedIPv4Limit, "an unattached ENI"
}

func (e *Emulator) assign(n *eniState, count int, explicit []netip.Addr, now time.Time) ([]netip.Addr, *apiError) {
	if n.status != statusAvailable && n.status != statusInUse {
		return nil, errf(codeInvalidENIState, "The ENI %s is %s; it must be Available or InUse to assign IPs.", n.id, n.status)
	}
	want := count + len(explicit)
	limit, why := e.ipv4Limit(n)
	if have := len(n.ips()); have+want > limit {
		return nil, errf(codeIPv4CountExceeded, "The ENI %s has %d IPv4 addresses and %d more were requested; %s allows %d per ENI.", n.id, have, want, why, limit)
	}
	if want > n.vsw.pool.available() {
		return nil, errf(codeIPNotEnough, "The specified vSwitch %s does not have enough IP addresses: %d wanted, %d available.", n.vsw.ID, want, n.vsw.pool.available())
	}
	if bad, taken, ok := n.vsw.pool.take(n.id, explicit); !ok {
		if taken {
			return nil, errf(codeIPAssigned, "The specified IP address %s of vSwitch %s is already in use.", bad, n.vsw.ID)
		}
		return nil, errf(codeIPInvalid, "The specified IP address %s is not a usable address of vSwitch %s (%s).", bad, n.vsw.ID, n.vsw.CIDR)
	}
	got, _ := n.vsw.pool.alloc(n.id, count) // enough: checked above
	added := append(append([]netip.Addr{}, explicit...), got...)
	for _, a := range added {
		n.assignedAt[a] = now
	}
	n.secondary = append(n.secondary, added...)
	return added, nil
}

func (e *Emulator) unassign(n *eniState, ips []netip.Addr) *apiError {
	if n.status != statusAvailable && n.status != statusInUse {
		return errf(codeInvalidENIState, "The ENI %s is %s; it must be Available or InUse to unassign IPs.", n.id, n.status)
	}
	drop := map[netip.Addr]bool{}
	for _, a := range ips {
		if a == n.primaryIP {
			return errf(codeIPUnassigned, "The IP address %s is the primary IP of ENI %s and cannot be unassigned.", a, n.id)
		}
		found := false
		for _, s := range n.secondary {
			found = found || s == a
		}
		if !found {
			return errf(codeIPUnassigned, "The IP address %s is not assigned to ENI %s.", a, n.id)
		}
		drop[a] = true
	}
	kept := n.secondary[:0]
	for _, s := range n.secondary {
		if !drop[s] {
			kept = append(kept, s)
		}
	}
	n.secondary = kept
	for a := range drop {
		delete(n.assignedAt, a)
	}
	n.vsw.pool.release(ips...)
	return nil
}

// after runs fn once d has passed, unless the emulator closes first.
func (e *Emulator) after(d time.Duration, fn func()) {
	if e.closed {
		return
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-e.done:
		}
	}()
}
