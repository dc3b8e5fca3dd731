package eni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

// Reconciler converges the ENIs and secondary IPs of one instance. Create
// it with New, call Start once with the holdings the agent has persisted,
// then run Run in a goroutine; AllocateIP/ReleaseIP and
// AllocateENI/ReleaseENI serve pods. It is safe for concurrent use.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	api *api
	own ownership
	now func() time.Time

	// opMu serialises everything that changes the cloud or re-reads it: a
	// plan is made and carried out against one view, and two creations
	// never race for the last ENI slot.
	opMu sync.Mutex

	mu      sync.Mutex // guards the fields below
	started bool
	limits  Limits
	enis    map[string]*eniEntry
	// foreign counts attached ENIs that are neither primary nor ours.
	foreign int
	// pending and waitingENI count callers waiting for an IP or an ENI.
	pending    int
	waitingENI map[string]int
	blocks     blocklist
	nets       map[string]netInfo
	problems   map[string]string
	lastResync time.Time
	lastErr    string
	// lostScanned is the count of lost create answers at the last scan for
	// tagged ENIs we do not know of.
	lostScanned uint64

	kick chan struct{}
}

// Holding is one IP (or exclusive ENI) the agent has handed to a pod and
// persisted. Owner is the agent's key for it (e.g. "containerID/ifName",
// or the pod key "namespace/name" for exclusive ENIs so that the
// document's ENIWant.Pod matches); IP is the pod's IP; ENI its ENI id
// (empty: found by IP).
type Holding struct {
	Owner string
	IP    string
	ENI   string
	// ExclusiveOwner, when set, is the owner instead of Owner if the ENI
	// turns out to be exclusive (its tag says so): a restarted agent cannot
	// always tell from its inputs (the pod object may already be gone).
	ExclusiveOwner string
}

// New checks the configuration and prepares the SDK clients; nothing is
// called yet.
func New(cfg Config) (*Reconciler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a, err := newAPI(cfg)
	if err != nil {
		return nil, err
	}
	cfg.Logger.Info("ENI reconciler configured", "region", cfg.RegionID, "instance", cfg.InstanceID,
		"vswitches", cfg.VSwitchIDs, "minIdle", cfg.MinIdle, "maxIdle", cfg.MaxIdle, "credentials", cfg.credentialSource())
	return &Reconciler{
		cfg: cfg, log: cfg.Logger, api: a, now: time.Now,
		own:        ownership{instanceID: cfg.InstanceID, primaryENIID: cfg.PrimaryENIID},
		enis:       map[string]*eniEntry{},
		waitingENI: map[string]int{},
		nets:       map[string]netInfo{},
		problems:   map[string]string{},
		kick:       make(chan struct{}, 1),
	}, nil
}

// Start reads the limits, checks the vswitches, reads our ENIs (tagged
// ENIs left unattached by a crash are marked for deletion; the first pool
// pass deletes them), and restores holdings: their IPs are held again and
// never unassigned. Nothing is released before Start has restored the
// holdings. Holdings that match no IP of ours are reported by Status, not
// fatal. Start makes no write.
func (r *Reconciler) Start(ctx context.Context, holdings []Holding) error {
	r.opMu.Lock()
	defer r.opMu.Unlock()
	limits := r.cfg.Limits
	if limits.MaxENIs == 0 {
		typ := r.cfg.InstanceType
		if typ == "" {
			var err error
			if typ, err = r.api.instanceType(ctx, r.cfg.InstanceID); err != nil {
				return fmt.Errorf("start ENI reconciler: %w", err)
			}
		}
		var err error
		if limits, err = r.api.limits(ctx, typ); err != nil {
			return fmt.Errorf("start ENI reconciler: %w", err)
		}
	}
	if err := r.checkVSwitches(ctx); err != nil {
		return fmt.Errorf("start ENI reconciler: %w", err)
	}
	r.mu.Lock()
	r.limits = limits
	r.mu.Unlock()
	if err := r.resync(ctx, true); err != nil {
		return fmt.Errorf("start ENI reconciler: %w", err)
	}
	r.mu.Lock()
	r.restoreLocked(holdings)
	r.retireDetachingLocked()
	r.started = true
	r.mu.Unlock()
	slots := r.Status().Slots
	r.log.Info("ENI reconciler started", "maxENIs", limits.MaxENIs, "ipsPerENI", limits.IPsPerENI, "holdings", len(holdings),
		"slotsSplit", slots.Split, "sharedSlots", slots.Shared, "exclusiveSlots", slots.Exclusive)
	r.Kick()
	return nil
}

// checkVSwitches refuses configured vswitches the cloud does not know or
// that lie in another zone. If the VPC API cannot be reached the check is
// skipped with a warning: creation will say the same, later.
func (r *Reconciler) checkVSwitches(ctx context.Context) error {
	for _, id := range r.cfg.VSwitchIDs {
		v, found, err := r.api.describeVSwitch(ctx, id)
		switch {
		case err != nil:
			r.log.Warn("cannot check vswitch; continuing", "vswitch", id, "err", err)
			continue
		case !found:
			return fmt.Errorf("vswitchIDs: vswitch %s: not found in region %s", id, r.cfg.RegionID)
		case r.cfg.ZoneID != "" && v.ZoneID != r.cfg.ZoneID:
			return fmt.Errorf("vswitchIDs: vswitch %s: in zone %s, but instance %s is in zone %s", id, v.ZoneID, r.cfg.InstanceID, r.cfg.ZoneID)
		}
		r.log.Info("vswitch checked", "vswitch", id, "zone", v.ZoneID, "cidr", v.CIDR, "availableIPs", v.Available)
	}
	return nil
}

// restoreLocked marks persisted holdings as held.
func (r *Reconciler) restoreLocked(holdings []Holding) {
	for _, h := range holdings {
		e := r.enis[h.ENI]
		if e == nil || e.ips[h.IP] == nil {
			e = nil
			for _, cand := range r.enis {
				if cand.ips[h.IP] != nil {
					e = cand
					break
				}
			}
		}
		if e == nil {
			r.problem("holding/"+h.Owner, fmt.Sprintf("holding of %s: IP %s (ENI %q) is on no ENI of ours", h.Owner, h.IP, h.ENI))
			continue
		}
		owner := h.Owner
		if e.exclusive && h.ExclusiveOwner != "" {
			owner = h.ExclusiveOwner
		}
		st := e.ips[h.IP]
		st.state, st.owner = ipHeld, owner
		if e.exclusive {
			e.owner = owner
		}
	}
}

// retireDetachingLocked marks for deletion each ENI of ours that is
// detaching while we are not deleting it. Only our delete detaches an
// ENI, so at start that is a delete a crash cut off; later it is someone
// detaching it behind our back. Either way it is leaving the instance,
// and it would otherwise stay in the cloud, not ready, until a resync
// finds it detached (every ResyncInterval). It needs the holdings
// restored: an ENI whose IPs pods hold is reported instead.
func (r *Reconciler) retireDetachingLocked() {
	for _, id := range sortedKeys(r.enis) {
		e := r.enis[id]
		if e.status != statusDetaching || e.deleting {
			continue
		}
		if held, _, _ := e.counts(); held > 0 || e.owner != "" {
			r.problem("eni/"+id, fmt.Sprintf("ENI %s: detaching from instance %s but %d of its IPs are held by pods (owner %q)", id, r.cfg.InstanceID, held, e.owner))
			continue
		}
		e.deleting, e.ready = true, false
		r.log.Warn("ENI of ours detaching that we are not deleting (a delete cut off by a restart); deleting it", "eni", id)
	}
}

// Resync re-reads our ENIs from the cloud and replaces the view (held
// IPs stay held); ENIs being set up are made ready. It is what Run does
// every ResyncInterval.
func (r *Reconciler) Resync(ctx context.Context) error {
	if err := r.checkStarted(); err != nil {
		return err
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.resync(ctx, r.api.stats.lost() != r.lostScanned)
}

// resync is Resync with opMu held; scan also looks for tagged ENIs we do
// not know of that are not attached (a crash or a lost create answer) and
// deletes them.
func (r *Reconciler) resync(ctx context.Context, scan bool) error {
	lost := r.api.stats.lost()
	attached, err := r.api.describeENIs(ctx, eniQuery{InstanceID: r.cfg.InstanceID})
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	var tagged []cloudENI
	if scan {
		if tagged, err = r.api.describeENIs(ctx, eniQuery{Tags: r.own.tags()}); err != nil {
			return fmt.Errorf("resync: %w", err)
		}
	}
	now := r.now()
	r.mu.Lock()
	seen := map[string]bool{}
	foreign := 0
	for _, c := range attached {
		if c.InstanceID != r.cfg.InstanceID || c.Type == typePrimary || c.ID == r.cfg.PrimaryENIID {
			continue
		}
		if !r.own.ours(c) {
			foreign++
			continue
		}
		seen[c.ID] = true
		e := r.enis[c.ID]
		if e == nil {
			e = newENIEntry(c, exclusiveTagged(c), now)
			r.enis[c.ID] = e
			r.log.Info("ENI of ours found", "eni", c.ID, "status", c.Status, "ips", len(c.IPs))
		} else {
			r.noteLost(e, e.observe(c, now))
		}
		if c.Status != statusInUse {
			e.ready = false
		}
	}
	for id, e := range r.enis {
		if seen[id] || e.deleting {
			continue
		}
		// Not attached to us any more (or never was): it goes back, unless
		// pods hold its IPs (then it is a problem to report).
		if held, _, _ := e.counts(); held > 0 {
			r.problem("eni/"+id, fmt.Sprintf("ENI %s: no longer attached to instance %s but %d of its IPs are held by pods", id, r.cfg.InstanceID, held))
			continue
		}
		e.deleting, e.ready = true, false
	}
	if r.started {
		r.retireDetachingLocked()
	}
	var strays []string
	for _, c := range tagged {
		if r.own.ours(c) && !seen[c.ID] && r.enis[c.ID] == nil && c.Status == statusAvailable {
			strays = append(strays, c.ID)
			r.enis[c.ID] = &eniEntry{id: c.ID, status: c.Status, deleting: true, ips: map[string]*ipEntry{}}
		}
	}
	// ENIs attached (or still attaching, after a restart) that do not
	// serve yet: InUse ones need their gateway and link, attaching ones
	// also the wait for InUse.
	type readyJob struct{ waitInUse, waitLink bool }
	toReady := map[string]readyJob{}
	for id, e := range r.enis {
		if (e.status == statusInUse || e.status == statusAttaching) && !e.ready && !e.deleting && seen[id] {
			toReady[id] = readyJob{waitInUse: e.status == statusAttaching, waitLink: !e.exclusive}
		}
	}
	r.foreign, r.lastResync = foreign, now
	if scan {
		r.lostScanned = lost
	}
	r.mu.Unlock()
	for _, id := range strays {
		r.log.Warn("tagged ENI of ours not attached and not known (a crash or a lost answer); deleting it", "eni", id)
	}
	var errs []error
	for _, id := range sortedKeys(toReady) {
		j := toReady[id]
		errs = append(errs, r.makeReady(ctx, id, j.waitInUse, j.waitLink))
	}
	return errors.Join(errs...)
}

// Run keeps the pool converged until ctx ends: on every Kick (an
// allocation or release crossed a pool bound) and every ResyncInterval
// (after a resync). A failed pass is retried with backoff.
func (r *Reconciler) Run(ctx context.Context) {
	ticker := time.NewTicker(r.cfg.ResyncInterval)
	defer ticker.Stop()
	failures := 0
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			if err := r.Resync(ctx); err != nil {
				r.log.Warn("ENI resync failed; the next one retries", "err", err)
			}
		case <-r.kick:
		case <-retry:
		}
		retry = nil
		if err := r.Maintain(ctx); err != nil {
			failures++
			d := r.cfg.Retry.Delay(min(failures-1, 10), rand.Float64())
			r.log.Warn("ENI pool pass failed; retrying", "err", err, "in", d)
			retry = time.After(d)
			continue
		}
		failures = 0
	}
}

// Kick asks Run for a pool pass soon.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Maintain makes one pool pass: plan from the current view, carry it out.
func (r *Reconciler) Maintain(ctx context.Context) error {
	if err := r.checkStarted(); err != nil {
		return err
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	if r.api.stats.lost() != r.lostScanned {
		// A create answer was lost: an ENI may exist that we do not know.
		if err := r.resync(ctx, true); err != nil {
			return err
		}
	}
	p := r.plan()
	if !hasWork(&p.Needs) {
		return nil
	}
	err := r.converge(ctx, &p.Needs)
	r.mu.Lock()
	r.lastErr = ""
	if err != nil {
		r.lastErr = err.Error()
	}
	r.mu.Unlock()
	return err
}

// plan builds the pool view and plans it.
func (r *Reconciler) plan() plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return planPool(r.viewLocked())
}

func (r *Reconciler) viewLocked() poolView {
	now := r.now()
	v := poolView{
		Limits: r.limits, MinIdle: r.cfg.MinIdle, MaxIdle: r.cfg.MaxIdle, Foreign: r.foreign,
		Pending: r.pending, Blocked: map[string]bool{}, ReservedShared: r.cfg.ReservedShared,
	}
	for _, b := range r.blocks.active(now) {
		v.Blocked[b.ID] = true
	}
	vsw, _ := r.blocks.pick(r.cfg.VSwitchIDs, now)
	v.CanCreate = vsw != ""
	for o, n := range r.waitingENI {
		if n > 0 {
			v.PendingExclusive = append(v.PendingExclusive, o)
		}
	}
	slices.Sort(v.PendingExclusive)
	for _, id := range sortedKeys(r.enis) {
		e := r.enis[id]
		_, _, releasing := e.counts()
		v.ENIs = append(v.ENIs, eniView{
			ID: id, MAC: e.mac, VSwitch: e.vswitch, Primary: e.primaryIP, Exclusive: e.exclusive,
			Owner: e.owner, ReservedFor: e.reservedFor, Held: e.sortedIPs(ipHeld), Idle: e.sortedIPs(ipIdle),
			Releasing: releasing, Ready: e.ready, Deleting: e.deleting,
		})
	}
	return v
}

func (r *Reconciler) checkStarted() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.started {
		return ErrNotStarted
	}
	return nil
}

// problem records a condition to report until the next restart. Called
// with r.mu held.
func (r *Reconciler) problem(key, msg string) {
	if r.problems[key] != msg {
		r.log.Warn(msg)
	}
	r.problems[key] = msg
}

// ENIs returns our attached, ready ENIs in the document's ENI kind: the
// input render needs for ENI datapaths.
func (r *Reconciler) ENIs() []spec.ENI {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []spec.ENI
	for _, id := range sortedKeys(r.enis) {
		e := r.enis[id]
		if !e.ready || e.deleting {
			continue
		}
		var secondaries []string
		for ip := range e.ips {
			if ip != e.primaryIP {
				secondaries = append(secondaries, ip)
			}
		}
		sortIPs(secondaries, "")
		out = append(out, spec.ENI{
			APIVersion: "terway/v1", Kind: "ENI", Metadata: spec.ObjectMeta{Name: id},
			Spec: spec.ENISpec{
				MAC: e.mac, PrimaryIP: e.primaryIP, SecondaryIPs: secondaries, VSwitchCIDR: e.cidr,
				Gateway: e.gateway, DeviceIndex: e.deviceIndex, Exclusive: e.exclusive,
			},
		})
	}
	return out
}

// Needs returns what the pool is converging toward, in the document's
// shape (for the eni section, or for display).
func (r *Reconciler) Needs() spec.ENINeeds { return r.plan().Needs }

// Counters returns the API calls made so far, by action, for metrics.
func (r *Reconciler) Counters() Counters { return r.api.stats.snapshot() }

// Status is a summary for health and metrics.
type Status struct {
	Started bool
	Limits  Limits
	ENIs    int // ours, ready or not
	// ForeignENIs counts attached ENIs that are neither the primary nor
	// ours: they take slots of the instance type all the same.
	ForeignENIs int
	// Slots divides the secondary ENI slots between shared and exclusive
	// ENIs as the pool does (SplitSlots); Slots.Exclusive is the count of
	// aliyun/eni devices to advertise.
	Slots      Slots
	HeldIPs    int
	IdleIPs    int
	LastResync time.Time
	// LastError is the last pool pass's error, empty when it succeeded.
	LastError string
	Blocked   []BlockedVSwitch
	// Problems are conditions the reconciler cannot repair (a held IP the
	// cloud no longer lists, a holding matching none of our IPs), sorted.
	Problems []string
}

// Status returns the summary.
func (r *Reconciler) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Status{
		Started: r.started, Limits: r.limits, ENIs: len(r.enis), ForeignENIs: r.foreign, LastResync: r.lastResync,
		LastError: r.lastErr, Blocked: r.blocks.active(r.now()),
		Slots: SplitSlots(r.limits.MaxENIs, r.foreign, r.cfg.ReservedShared),
	}
	for _, e := range r.enis {
		held, idle, _ := e.counts()
		s.HeldIPs += held
		if e.serves() {
			s.IdleIPs += idle
		}
	}
	s.Problems = slices.Sorted(maps.Values(r.problems))
	return s
}
