package eni

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/terway-reconciler/terway/cloud/metadata"
	"github.com/terway-reconciler/terway/internal/chaos"
)

// The operations on one ENI. Each is called with opMu held, makes its API
// calls without r.mu, and updates the view under r.mu.

// createENI creates an ENI with ips addresses (primary included) in the
// first configured vswitch that is not exhausted, attaches it and waits
// until it serves. An exclusive ENI is reserved for reservedFor.
func (r *Reconciler) createENI(ctx context.Context, ips int, exclusive bool, reservedFor string) (string, error) {
	tags := maps.Clone(r.cfg.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, r.own.tags())
	if exclusive {
		tags[TagExclusive] = "true"
	}
	var created cloudENI
	for {
		r.mu.Lock()
		vsw, _ := r.blocks.pick(r.cfg.VSwitchIDs, r.now())
		r.mu.Unlock()
		if vsw == "" {
			return "", r.exhaustedError(r.cfg.VSwitchIDs)
		}
		// One token per intended ENI: the retries of this call share it,
		// another vswitch is another request and gets its own.
		c, err := r.api.create(ctx, createRequest{
			VSwitchID: vsw, SecurityGroupID: r.cfg.SecurityGroupID, IPs: ips, Tags: tags, Token: newToken(),
		})
		if code := codeOf(err); vswitchExhausted(code) {
			r.blockVSwitch(vsw, code)
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create ENI in vswitch %s: %w", vsw, err)
		}
		created = c
		break
	}
	chaos.Point(chaos.ENIAfterCreate)
	e := newENIEntry(created, exclusive, r.now())
	e.reservedFor = reservedFor
	r.mu.Lock()
	r.enis[e.id] = e
	r.mu.Unlock()
	r.log.Info("ENI created", "eni", e.id, "vswitch", e.vswitch, "ips", len(created.IPs), "exclusive", exclusive)
	if err := r.attachENI(ctx, e.id); err != nil {
		// An ENI that cannot be attached goes back at once, rather than
		// holding IPs of the vswitch and a share of the account's quota.
		if derr := r.deleteENI(ctx, e.id); derr != nil {
			r.log.Warn("ENI not attached and not deleted; the next pass retries", "eni", e.id, "err", derr)
		}
		return "", err
	}
	return e.id, nil
}

// attachENI attaches an Available ENI to our instance and makes it ready.
func (r *Reconciler) attachENI(ctx context.Context, id string) error {
	err := r.api.attach(ctx, id, r.cfg.InstanceID)
	if err != nil && codeOf(err) == codeInvalidENIState {
		// Often an earlier attempt whose answer was lost: see where it is.
		if c, found, derr := r.describeOne(ctx, id); derr == nil && found && c.InstanceID == r.cfg.InstanceID &&
			(c.Status == statusAttaching || c.Status == statusInUse) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("attach ENI %s to instance %s: %w", id, r.cfg.InstanceID, err)
	}
	chaos.Point(chaos.ENIAttach)
	return r.makeReady(ctx, id, true, true)
}

// makeReady waits until the ENI is InUse on our instance (waitInUse; a
// resync may have just seen it InUse), learns its vswitch's gateway and
// CIDR from the metadata, and waits for its link (waitLink; an exclusive
// ENI found at restart has its link in its pod's namespace, not ours).
func (r *Reconciler) makeReady(ctx context.Context, id string, waitInUse, waitLink bool) error {
	if waitInUse {
		c, err := r.waitStatus(ctx, id, r.cfg.AttachTimeout, statusInUse)
		if err != nil {
			return err
		}
		r.mu.Lock()
		if e := r.enis[id]; e != nil {
			r.noteLost(e, e.observe(c, r.now()))
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	e := r.enis[id]
	if e == nil {
		r.mu.Unlock()
		return fmt.Errorf("ENI %s: gone while it was being attached", id)
	}
	mac, vsw := e.mac, e.vswitch
	r.mu.Unlock()
	info, err := r.netInfo(ctx, mac, vsw)
	if err != nil {
		return fmt.Errorf("ENI %s: %w", id, err)
	}
	if r.cfg.WaitLink != nil && waitLink {
		lctx, cancel := context.WithTimeout(ctx, r.cfg.AttachTimeout)
		err := r.cfg.WaitLink(lctx, mac)
		cancel()
		if err != nil {
			return fmt.Errorf("ENI %s: wait for a link with MAC %s: %w", id, mac, err)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.enis[id]; e != nil {
		e.cidr, e.gateway, e.ready = info.cidr, info.gateway, true
		r.log.Info("ENI ready", "eni", id, "mac", mac, "deviceIndex", e.deviceIndex, "ips", len(e.ips))
	}
	return nil
}

// netInfo is the gateway and CIDR of a vswitch, learnt from the metadata of
// an attached ENI in it.
type netInfo struct{ cidr, gateway string }

// netInfo reads (once per vswitch) the gateway and CIDR through the ENI's
// MAC, waiting for the metadata to list the MAC: it lags the attachment.
func (r *Reconciler) netInfo(ctx context.Context, mac, vswitch string) (netInfo, error) {
	r.mu.Lock()
	info, ok := r.nets[vswitch]
	r.mu.Unlock()
	if ok {
		return info, nil
	}
	deadline := time.Now().Add(r.cfg.AttachTimeout)
	delay := min(r.cfg.PollInterval, 200*time.Millisecond)
	for {
		m, err := r.cfg.Metadata.ENI(ctx, mac)
		if err == nil {
			info = netInfo{cidr: m.VSwitchCIDR, gateway: m.Gateway}
			r.mu.Lock()
			r.nets[vswitch] = info
			r.mu.Unlock()
			return info, nil
		}
		if !errors.Is(err, metadata.ErrNotFound) || time.Now().After(deadline) {
			return netInfo{}, fmt.Errorf("gateway of vswitch %s from the metadata of MAC %s: %w", vswitch, mac, err)
		}
		if err := sleep(ctx, delay); err != nil {
			return netInfo{}, err
		}
	}
}

// waitStatus polls the ENI until its status is one of want (InUse only
// counts on our instance), with a growing delay.
func (r *Reconciler) waitStatus(ctx context.Context, id string, timeout time.Duration, want ...string) (cloudENI, error) {
	deadline := time.Now().Add(timeout)
	delay := r.cfg.PollInterval
	last := "unknown"
	for {
		if err := sleep(ctx, delay); err != nil {
			return cloudENI{}, fmt.Errorf("ENI %s: wait for status %v (last %s): %w", id, want, last, err)
		}
		c, found, err := r.describeOne(ctx, id)
		switch {
		case err != nil:
			return cloudENI{}, fmt.Errorf("ENI %s: wait for status %v: %w", id, want, err)
		case !found:
			return cloudENI{}, fmt.Errorf("ENI %s: wait for status %v: %w", id, want, errENIGone)
		}
		last = c.Status
		if slices.Contains(want, c.Status) && (c.Status != statusInUse || c.InstanceID == r.cfg.InstanceID) {
			return c, nil
		}
		if time.Now().After(deadline) {
			return cloudENI{}, fmt.Errorf("ENI %s: status: still %s after %s, want %v", id, last, timeout, want)
		}
		delay = min(delay*3/2, 4*r.cfg.PollInterval)
	}
}

// errENIGone says the cloud no longer lists the ENI.
var errENIGone = errors.New("the ENI no longer exists")

func (r *Reconciler) describeOne(ctx context.Context, id string) (cloudENI, bool, error) {
	list, err := r.api.describeENIs(ctx, eniQuery{IDs: []string{id}})
	if err != nil {
		return cloudENI{}, false, err
	}
	for _, c := range list {
		if c.ID == id {
			return c, true, nil
		}
	}
	return cloudENI{}, false, nil
}

// deleteENI detaches and deletes one of our ENIs that holds nothing, and
// forgets it. Not found at any step means done.
func (r *Reconciler) deleteENI(ctx context.Context, id string) error {
	r.mu.Lock()
	e := r.enis[id]
	if e == nil {
		r.mu.Unlock()
		return nil
	}
	if held, _, _ := e.counts(); held > 0 || e.owner != "" {
		r.mu.Unlock()
		return fmt.Errorf("ENI %s: holds %d IPs of pods (owner %q); not deleted", id, held, e.owner)
	}
	e.deleting, e.ready = true, false
	r.mu.Unlock()

	c, found, err := r.describeOne(ctx, id)
	if err != nil {
		return fmt.Errorf("delete ENI %s: %w", id, err)
	}
	if !found || c.Status == statusDeleting {
		r.forget(id)
		return nil
	}
	if c.Status == statusAttaching {
		if c, err = r.waitStatus(ctx, id, r.cfg.AttachTimeout, statusInUse, statusAvailable); err != nil {
			return r.goneOr(id, fmt.Errorf("delete ENI %s: %w", id, err))
		}
	}
	if c.Status == statusInUse {
		if err := r.api.detach(ctx, id, c.InstanceID); err != nil {
			switch codeOf(err) {
			case codeENINotFound:
				r.forget(id)
				return nil
			case codeInvalidENIState: // detaching already (a lost answer)
			default:
				return fmt.Errorf("detach ENI %s from instance %s: %w", id, c.InstanceID, err)
			}
		}
		c.Status = statusDetaching
	}
	if c.Status == statusDetaching {
		if _, err := r.waitStatus(ctx, id, r.cfg.DetachTimeout, statusAvailable); err != nil {
			return r.goneOr(id, fmt.Errorf("delete ENI %s: %w", id, err))
		}
	}
	if err := r.api.delete(ctx, id); err != nil && codeOf(err) != codeENINotFound {
		return fmt.Errorf("delete ENI %s: %w", id, err)
	}
	r.forget(id)
	r.log.Info("ENI deleted", "eni", id)
	return nil
}

// goneOr forgets the ENI and returns nil when err says it no longer
// exists, else returns err.
func (r *Reconciler) goneOr(id string, err error) error {
	if errors.Is(err, errENIGone) {
		r.forget(id)
		return nil
	}
	return err
}

func (r *Reconciler) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.enis, id)
}

// assignIPs adds n secondary IPs to a ready shared ENI, in batches. One
// token per batch: a retry after a lost answer gets the same IPs back.
func (r *Reconciler) assignIPs(ctx context.Context, id string, n int) error {
	for n > 0 {
		r.mu.Lock()
		e := r.enis[id]
		if e == nil || !e.serves() {
			r.mu.Unlock()
			return fmt.Errorf("assign IPs to ENI %s: not a ready shared ENI of ours", id)
		}
		batch := min(n, r.cfg.AssignBatch, r.limits.IPsPerENI-len(e.ips))
		vsw, blocked := e.vswitch, r.blocks.blocked(e.vswitch, r.now())
		r.mu.Unlock()
		if batch <= 0 {
			return nil
		}
		if blocked {
			return r.exhaustedError([]string{vsw})
		}
		ips, err := r.api.assign(ctx, id, batch, newToken())
		if err != nil {
			code := codeOf(err)
			switch {
			case vswitchExhausted(code):
				r.blockVSwitch(vsw, code)
				return fmt.Errorf("assign %d IPs to ENI %s: %w", batch, id, r.exhaustedError([]string{vsw}))
			case code == codeIPv4CountExceeded, code == codeENINotFound:
				// Our view was wrong: read the ENI again, plan again.
				if rerr := r.refreshENI(ctx, id); rerr != nil {
					r.log.Warn("refresh ENI after assign failed", "eni", id, "err", rerr)
				}
			}
			return fmt.Errorf("assign %d IPs to ENI %s: %w", batch, id, err)
		}
		chaos.Point(chaos.ENIAfterAssign)
		now := r.now()
		r.mu.Lock()
		if e := r.enis[id]; e != nil {
			for _, ip := range ips {
				if _, ok := e.ips[ip]; !ok {
					e.ips[ip] = &ipEntry{state: ipIdle, idleSince: now}
				}
			}
		}
		r.mu.Unlock()
		r.log.Info("IPs assigned", "eni", id, "count", len(ips))
		n -= batch
	}
	return nil
}

// releaseIPs unassigns idle secondary IPs of one ENI, in batches. Held IPs
// and the ENI's primary IP are never unassigned.
func (r *Reconciler) releaseIPs(ctx context.Context, id string, ips []string) error {
	r.mu.Lock()
	e := r.enis[id]
	if e == nil {
		r.mu.Unlock()
		return nil
	}
	var list []string
	var refused []string
	for _, ip := range ips {
		st, ok := e.ips[ip]
		switch {
		case !ok, st.state == ipReleasing, ip == e.primaryIP:
		case st.state == ipHeld:
			refused = append(refused, ip)
		default:
			st.state = ipReleasing
			list = append(list, ip)
		}
	}
	r.mu.Unlock()
	var errs []error
	if len(refused) > 0 {
		errs = append(errs, fmt.Errorf("release IPs of ENI %s: %v are held by pods; not unassigned", id, refused))
	}
	for batch := range slices.Chunk(list, r.cfg.UnassignBatch) {
		err := r.api.unassign(ctx, id, batch)
		if err != nil && codeOf(err) != codeIPUnassigned && codeOf(err) != codeENINotFound {
			r.setIdle(id, batch)
			errs = append(errs, fmt.Errorf("unassign %d IPs of ENI %s: %w", len(batch), id, err))
			continue
		}
		if err != nil {
			// Some were gone already (a lost answer): ask the cloud.
			if rerr := r.refreshENI(ctx, id); rerr != nil {
				r.setIdle(id, batch)
				errs = append(errs, rerr)
			}
			continue
		}
		r.mu.Lock()
		if e := r.enis[id]; e != nil {
			for _, ip := range batch {
				delete(e.ips, ip)
			}
		}
		r.mu.Unlock()
		r.log.Info("IPs unassigned", "eni", id, "count", len(batch))
	}
	return errors.Join(errs...)
}

// setIdle puts IPs whose unassign failed back in the pool.
func (r *Reconciler) setIdle(id string, ips []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.enis[id]
	if e == nil {
		return
	}
	for _, ip := range ips {
		if st, ok := e.ips[ip]; ok && st.state == ipReleasing {
			st.state = ipIdle
		}
	}
}

// refreshENI reads one ENI again: IPs the cloud no longer lists are
// dropped, IPs being released that are still there go back to the pool.
func (r *Reconciler) refreshENI(ctx context.Context, id string) error {
	c, found, err := r.describeOne(ctx, id)
	if err != nil {
		return fmt.Errorf("refresh ENI %s: %w", id, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.enis[id]
	if e == nil {
		return nil
	}
	if !found {
		if held, _, _ := e.counts(); held > 0 {
			r.problem("eni/"+id, fmt.Sprintf("ENI %s: no longer exists but %d of its IPs are held by pods", id, held))
		}
		delete(r.enis, id)
		return nil
	}
	r.noteLost(e, e.observe(c, r.now()))
	for _, st := range e.ips {
		if st.state == ipReleasing {
			st.state = ipIdle
		}
	}
	return nil
}

// noteLost records held IPs that the cloud no longer lists. Called with
// r.mu held.
func (r *Reconciler) noteLost(e *eniEntry, lost []string) {
	for _, ip := range lost {
		r.problem("ip/"+ip, fmt.Sprintf("IP %s: was held but is no longer on ENI %s", ip, e.id))
	}
}

func (r *Reconciler) blockVSwitch(vsw, code string) {
	r.mu.Lock()
	r.blocks.block(vsw, code, r.now(), r.cfg.VSwitchCooldown)
	r.mu.Unlock()
	r.log.Warn("vswitch has no free IP; skipped for a while", "vswitch", vsw, "code", code, "for", r.cfg.VSwitchCooldown)
}

// exhaustedError names the blocked vswitches among ids.
func (r *Reconciler) exhaustedError(ids []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	e := &VSwitchExhaustedError{}
	for _, b := range r.blocks.active(now) {
		if slices.Contains(ids, b.ID) {
			e.VSwitches = append(e.VSwitches, b)
		}
	}
	return e
}
