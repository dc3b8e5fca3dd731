package eni

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
)

// IPAllocation is a shared-ENI IP handed to a pod, with what the datapath
// needs: the ENI's link (by MAC), its route table (by device index) and
// the vswitch's gateway.
type IPAllocation struct {
	IP          string
	ENI         string
	MAC         string
	DeviceIndex int
	VSwitchID   string
	VSwitchCIDR string
	Gateway     string
}

// ENIAllocation is a whole ENI handed to one pod: its primary IP is the
// pod's IP.
type ENIAllocation struct {
	ENI         string
	MAC         string
	IP          string
	DeviceIndex int
	VSwitchID   string
	VSwitchCIDR string
	Gateway     string
}

// AllocateIP hands owner an idle IP of a ready shared ENI. From the warm
// pool it makes no API call; when the pool is empty it grows it (assign,
// or create and attach an ENI) and waits, until ctx ends or the instance
// or the vswitches have nothing left (an error wrapping ErrNoCapacity or
// ErrVSwitchExhausted). Asking again for the same owner returns the IP it
// holds.
func (r *Reconciler) AllocateIP(ctx context.Context, owner string) (IPAllocation, error) {
	if owner == "" {
		return IPAllocation{}, fmt.Errorf("allocate IP: owner: empty")
	}
	if err := r.checkStarted(); err != nil {
		return IPAllocation{}, fmt.Errorf("allocate IP for %s: %w", owner, err)
	}
	for attempt := 0; ; attempt++ {
		if a, ok := r.takeIP(owner); ok {
			return a, nil
		}
		r.mu.Lock()
		r.pending++
		r.mu.Unlock()
		final, err := r.grow(ctx)
		r.mu.Lock()
		r.pending--
		r.mu.Unlock()
		if a, ok := r.takeIP(owner); ok {
			return a, nil
		}
		if final || ctx.Err() != nil {
			return IPAllocation{}, fmt.Errorf("allocate IP for %s: %w", owner, errors.Join(err, ctx.Err()))
		}
		delay := r.cfg.Retry.Delay(0, rand.Float64())
		switch {
		case errors.Is(err, ErrVSwitchExhausted):
			// The vswitch is now skipped: plan again at once.
			delay = 0
		case err != nil:
			r.log.Warn("growing the IP pool failed; retrying", "owner", owner, "err", err)
			delay = r.cfg.Retry.Delay(min(attempt, 10), rand.Float64())
		}
		// Without an error, another caller took what was made: again.
		if serr := sleep(ctx, delay); serr != nil {
			return IPAllocation{}, fmt.Errorf("allocate IP for %s: %w", owner, errors.Join(err, serr))
		}
	}
}

// takeIP gives owner the IP it holds, or the longest-idle IP of the
// busiest ready shared ENI (so that the least used ENIs can empty).
func (r *Reconciler) takeIP(owner string) (IPAllocation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *eniEntry
	bestHeld := -1
	for _, id := range sortedKeys(r.enis) {
		e := r.enis[id]
		for ip, st := range e.ips {
			if st.state == ipHeld && st.owner == owner && !e.exclusive {
				return r.allocationLocked(e, ip), true
			}
		}
		if !e.serves() {
			continue
		}
		held, idle, _ := e.counts()
		if idle > 0 && held > bestHeld {
			best, bestHeld = e, held
		}
	}
	if best == nil {
		return IPAllocation{}, false
	}
	ip, _ := best.oldestIdle()
	st := best.ips[ip]
	st.state, st.owner = ipHeld, owner
	if r.idleLocked() < r.cfg.MinIdle {
		r.Kick()
	}
	return r.allocationLocked(best, ip), true
}

func (r *Reconciler) allocationLocked(e *eniEntry, ip string) IPAllocation {
	return IPAllocation{
		IP: ip, ENI: e.id, MAC: e.mac, DeviceIndex: e.deviceIndex, VSwitchID: e.vswitch,
		VSwitchCIDR: e.cidr, Gateway: e.gateway,
	}
}

// idleLocked counts idle IPs of ready shared ENIs.
func (r *Reconciler) idleLocked() int {
	n := 0
	for _, e := range r.enis {
		if e.serves() {
			_, idle, _ := e.counts()
			n += idle
		}
	}
	return n
}

// grow plans with the waiting callers counted and carries the plan out.
// final is set when the plan itself cannot cover the callers: then err
// wraps ErrNoCapacity or is a VSwitchExhaustedError, and trying again now
// is pointless. Errors of carrying the plan out are not final.
func (r *Reconciler) grow(ctx context.Context) (final bool, err error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	r.mu.Lock()
	enough := r.idleLocked() >= r.pending && r.pending > 0
	r.mu.Unlock()
	if enough {
		return false, nil // someone else grew the pool while we waited
	}
	p := r.plan()
	if p.Short > 0 && p.Reason == shortLimits && !hasWork(&p.Needs) {
		return true, fmt.Errorf("%w: %s", ErrNoCapacity, p.Why)
	}
	if p.Short > 0 && p.Reason == shortVSwitches && !hasWork(&p.Needs) {
		return true, r.exhaustedError(append(r.cfg.VSwitchIDs, r.sharedVSwitches()...))
	}
	return false, r.converge(ctx, &p.Needs)
}

// sharedVSwitches lists the vswitches of our shared ENIs.
func (r *Reconciler) sharedVSwitches() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.enis {
		if !e.exclusive {
			out = append(out, e.vswitch)
		}
	}
	return out
}

// ReleaseIP returns owner's IP to the pool. Releasing an IP that owner does
// not hold is an error (it protects the IP's real holder); releasing an IP
// the reconciler does not know is not (a repeated DEL).
func (r *Reconciler) ReleaseIP(owner, ip string) error {
	if err := r.checkStarted(); err != nil {
		return fmt.Errorf("release IP %s of %s: %w", ip, owner, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.enis {
		st, ok := e.ips[ip]
		if !ok || e.exclusive {
			continue
		}
		switch {
		case st.state != ipHeld:
			return nil
		case st.owner != owner:
			return fmt.Errorf("release IP %s: held by %s, not by %s; not released", ip, st.owner, owner)
		}
		st.state, st.owner, st.idleSince = ipIdle, "", r.now()
		if r.idleLocked() > r.cfg.MaxIdle {
			r.Kick()
		}
		return nil
	}
	return nil
}

// AllocateENI hands owner a whole ENI (created, attached and ready) and
// waits for it; asking again for the same owner returns the same ENI.
// The instance type's slots bound how many exist (ErrNoCapacity).
func (r *Reconciler) AllocateENI(ctx context.Context, owner string) (ENIAllocation, error) {
	if owner == "" {
		return ENIAllocation{}, fmt.Errorf("allocate ENI: owner: empty")
	}
	if err := r.checkStarted(); err != nil {
		return ENIAllocation{}, fmt.Errorf("allocate ENI for %s: %w", owner, err)
	}
	r.mu.Lock()
	r.waitingENI[owner]++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		if r.waitingENI[owner]--; r.waitingENI[owner] <= 0 {
			delete(r.waitingENI, owner)
		}
		r.mu.Unlock()
	}()
	for attempt := 0; ; attempt++ {
		if a, ok := r.takeENI(owner); ok {
			return a, nil
		}
		final, err := r.growExclusive(ctx)
		if a, ok := r.takeENI(owner); ok {
			return a, nil
		}
		if err == nil {
			err = fmt.Errorf("no ENI became ready for %s", owner)
		}
		if final || ctx.Err() != nil {
			return ENIAllocation{}, fmt.Errorf("allocate ENI for %s: %w", owner, errors.Join(err, ctx.Err()))
		}
		r.log.Warn("creating an exclusive ENI failed; retrying", "owner", owner, "err", err)
		if serr := sleep(ctx, r.cfg.Retry.Delay(min(attempt, 10), rand.Float64())); serr != nil {
			return ENIAllocation{}, fmt.Errorf("allocate ENI for %s: %w", owner, errors.Join(err, serr))
		}
	}
}

// takeENI gives owner the exclusive ENI it owns or that is reserved for it.
func (r *Reconciler) takeENI(owner string) (ENIAllocation, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range sortedKeys(r.enis) {
		e := r.enis[id]
		if !e.exclusive || !e.ready || e.deleting || (e.owner != owner && (e.owner != "" || e.reservedFor != owner)) {
			continue
		}
		e.owner, e.reservedFor = owner, ""
		if st := e.ips[e.primaryIP]; st != nil {
			st.state, st.owner = ipHeld, owner
		}
		return ENIAllocation{
			ENI: e.id, MAC: e.mac, IP: e.primaryIP, DeviceIndex: e.deviceIndex, VSwitchID: e.vswitch,
			VSwitchCIDR: e.cidr, Gateway: e.gateway,
		}, true
	}
	return ENIAllocation{}, false
}

// growExclusive is grow for AllocateENI callers.
func (r *Reconciler) growExclusive(ctx context.Context) (final bool, err error) {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	p := r.plan()
	if len(p.ExclusiveShort) > 0 && !hasWork(&p.Needs) {
		if p.Reason == shortVSwitches {
			return true, r.exhaustedError(r.cfg.VSwitchIDs)
		}
		return true, fmt.Errorf("%w: %s", ErrNoCapacity, p.Why)
	}
	return false, r.converge(ctx, &p.Needs)
}

// ReleaseENI gives owner's exclusive ENI back; Run detaches and deletes
// it. Releasing an ENI owner does not own is an error; an unknown ENI is
// not (a repeated DEL).
func (r *Reconciler) ReleaseENI(owner, eniID string) error {
	if err := r.checkStarted(); err != nil {
		return fmt.Errorf("release ENI %s of %s: %w", eniID, owner, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.enis[eniID]
	switch {
	case e == nil || !e.exclusive || e.owner == "":
		return nil
	case e.owner != owner:
		return fmt.Errorf("release ENI %s: owned by %s, not by %s; not released", eniID, e.owner, owner)
	}
	e.owner = ""
	for _, st := range e.ips {
		st.state, st.owner = ipIdle, ""
	}
	r.Kick()
	return nil
}
