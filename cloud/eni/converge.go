package eni

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/terway-reconciler/terway/spec"
)

// Converge makes the cloud match needs, the document's eni section (from
// render, or from Needs). It reads needs declaratively, so that applying
// the same needs twice, or needs computed before a change the reconciler
// has since made, does no harm:
//
//   - an existing ENI is brought to len(InUse)+len(Keep)+Add IPs, not given
//     Add more; Release unassigns only IPs that are idle now; Delete only
//     happens to an ENI that holds nothing now;
//   - a new shared ENI (no ID) is created unless an ENI of ours missing
//     from needs (one made since needs was computed) stands for it; a new
//     exclusive ENI unless one is reserved for or owned by its Pod;
//   - ENIs that are not ours (no ownership tags) or are the primary ENI are
//     refused with an error naming them, never touched.
//
// Releases and deletions run first (they free slots and IPs), then
// additions, then creations (in parallel). Errors are joined; one ENI's
// failure does not stop the others.
func (r *Reconciler) Converge(ctx context.Context, needs *spec.ENINeeds) error {
	if err := r.checkStarted(); err != nil {
		return err
	}
	if needs == nil {
		return nil
	}
	r.opMu.Lock()
	defer r.opMu.Unlock()
	return r.converge(ctx, needs)
}

// converge is Converge with opMu held.
func (r *Reconciler) converge(ctx context.Context, needs *spec.ENINeeds) error {
	var errs []error
	listed := map[string]bool{}
	for _, w := range needs.ENIs {
		if w.ID == "" {
			continue
		}
		listed[w.ID] = true
		if err := r.checkOurs(w.ID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		// A document that names what is not ours is wrong as a whole.
		return errors.Join(errs...)
	}
	for _, w := range needs.ENIs {
		switch {
		case w.ID == "":
		case w.Delete:
			errs = append(errs, r.deleteENI(ctx, w.ID))
		case len(w.Release) > 0:
			errs = append(errs, r.releaseIPs(ctx, w.ID, w.Release))
		}
	}
	for _, w := range needs.ENIs {
		if w.ID == "" || w.Delete || w.Exclusive {
			continue
		}
		errs = append(errs, r.fillENI(ctx, w.ID, len(w.InUse)+len(w.Keep)+w.Add))
	}
	errs = append(errs, r.createMissing(ctx, needs, listed)...)
	return errors.Join(errs...)
}

// checkOurs refuses an ENI id that is not one of ours.
func (r *Reconciler) checkOurs(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id == r.cfg.PrimaryENIID {
		return fmt.Errorf("eni section: ENI %s: is the instance's primary ENI; never touched", id)
	}
	if r.enis[id] == nil {
		return fmt.Errorf("eni section: ENI %s: not an ENI of ours on instance %s (no ownership tags, not attached, or gone); not touched", id, r.cfg.InstanceID)
	}
	return nil
}

// fillENI brings a shared ENI to target IPs (releasing ones not counted).
func (r *Reconciler) fillENI(ctx context.Context, id string, target int) error {
	r.mu.Lock()
	e := r.enis[id]
	n := 0
	if e != nil && e.serves() {
		held, idle, _ := e.counts()
		n = min(target, r.limits.IPsPerENI) - held - idle
	}
	r.mu.Unlock()
	if n <= 0 {
		return nil
	}
	return r.assignIPs(ctx, id, n)
}

// createMissing creates the new ENIs of needs that nothing stands for yet.
func (r *Reconciler) createMissing(ctx context.Context, needs *spec.ENINeeds, listed map[string]bool) []error {
	type job struct {
		ips         int
		exclusive   bool
		reservedFor string
	}
	r.mu.Lock()
	spare := 0 // shared ENIs of ours that needs does not list
	for id, e := range r.enis {
		if !listed[id] && !e.exclusive && !e.deleting {
			spare++
		}
	}
	var jobs []job
	for _, w := range needs.ENIs {
		switch {
		case w.ID != "":
		case w.Exclusive:
			if !r.hasExclusiveLocked(w.Pod) {
				jobs = append(jobs, job{ips: 1, exclusive: true, reservedFor: w.Pod})
			}
		case spare > 0:
			spare--
		case w.Add > 0:
			jobs = append(jobs, job{ips: w.Add})
		}
	}
	r.mu.Unlock()

	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			first := min(j.ips, r.cfg.IPsAtCreate, r.limits.IPsPerENI)
			id, err := r.createENI(ctx, first, j.exclusive, j.reservedFor)
			if err == nil && j.ips > first {
				err = r.assignIPs(ctx, id, j.ips-first)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errs
}

// hasExclusiveLocked reports an exclusive ENI owned by or reserved for pod.
func (r *Reconciler) hasExclusiveLocked(pod string) bool {
	for _, e := range r.enis {
		if e.exclusive && !e.deleting && (e.owner == pod || e.reservedFor == pod) {
			return true
		}
	}
	return false
}

// hasWork reports whether needs asks for any change.
func hasWork(needs *spec.ENINeeds) bool {
	for _, w := range needs.ENIs {
		if w.ID == "" || w.Add > 0 || w.Delete || len(w.Release) > 0 {
			return true
		}
	}
	return false
}
