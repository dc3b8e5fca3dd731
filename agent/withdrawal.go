package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Peer withdrawal: the DEL's counterpart of the peer admission
// (admission.go).
//
// A DEL removes its pod's own part of the node: its network, its source
// validation and its isolation (its entries in the dispatch maps stay
// while the pod awaits another ADD: a sandbox made again). Its
// address in the peer sets of the policies that admitted it as a peer (40
// to 130 group sets for a pod of synth's 1,000 policies) is withdrawn
// later, once no CNI ADD or DEL has come for withdrawQuiet or at most
// withdrawDelay after the DEL, in steps of a few pods. Rendering and writing those sets was most of a DEL at scale
// (issue 17: 157 ms against 32 ms on an empty node), none of it needed to
// take the pod's network down. Nothing waits for the withdrawal but the
// address's next pod, so it waits for the agent to be quiet, as long as
// an admission does and for DELs too: the kernel takes a pod's elements
// out of those sets in 70 to 170 ms at that scale (withdrawChunk), and a
// CNI request arriving meanwhile waits for the agent's lock; DELs a
// runtime sends one after the other come 10 to 40 ms apart. Under continuous churn it runs
// withdrawDelay after the oldest DEL at the latest, a pod or a few per
// step. An ADD that finds no free address but quarantined ones has it run
// at once. (The AWS VPC CNI, for comparison, keeps a released address
// from new pods for 30 s.)
//
// Until its withdrawal the pod departs (render.Inputs.PeersDeparting):
// renders keep its address in the peer sets as it was, so that the DEL's
// render patches the pod out and its scoped plan writes only the pod's own
// elements. The address is quarantined meanwhile: the VPC allocator
// skips it (store.VPCRequest.Reserved) and, in the ENI modes, it goes back
// to the cloud only after the withdrawal. No pod can hold it, so an
// address still in a peer set lets no one in: sources are validated by
// veth and address (pod-sources), and no veth has it. Without the
// quarantine a new pod given the address would have the deleted pod's
// peer permissions until the withdrawal.
//
// The quarantine ends only when nothing of the old pod's can be written
// with the address any more:
//   - a step's scope includes every pod with a table of its own
//     (exclusive-ENI pods), whose tables hold copies of their groups' peer
//     sets (withdrawalScope);
//   - a resync's nftables commit, planned under the lock but made outside
//     it, may have the address in a group new to the record, which a
//     scoped plan leaves to the resync: a step that ran across such a
//     commit waits for it and writes once more (withdrawStep).
//
// A pod departs only if it was admitted (a pod held back is no peer), the
// inputs are synced, it is not departing already, and its address is not
// a whole ENI: an exclusive ENI is the pod's, not its sandbox's, and a new
// sandbox of the pod gets it back from the cloud's reconciler at once,
// with no lock that would order that against the withdrawal's release; an
// exclusive-ENI pod's DEL withdraws its address itself, as before (such a
// DEL moves an ENI and renders the node whole anyway). Render gives a
// departing address only to the pod object it was allocated for, while
// that has no allocation and runs here. The departing pods
// are the agent's memory only: after a restart the first full resync,
// which runs before the agent serves an ADD, renders none and withdraws
// them all, and the store already has their addresses free.

// withdrawQuiet is how long the agent must have had no CNI ADD or DEL
// before it withdraws, and withdrawDelay the longest a deleted pod's
// address waits for it.
const (
	withdrawQuiet = 100 * time.Millisecond
	withdrawDelay = 5 * time.Second
)

// withdrawChunk is how many pods one withdrawal step withdraws at perPod
// each (0: not known yet): as many as fit in admitBudget, at least one.
// Taking an element out of a set of concatenated ranges costs the kernel
// far more than putting it in: at synth's 1,000 policies, 279 ms for 4
// pods' peer elements against 16 ms to add them back
// (BenchmarkPeerElementsAtScale in apply/nft), so one pod's withdrawal
// alone is a step of 70 ms or more there, while at 0 policies a step
// takes dozens of pods.
func withdrawChunk(perPod time.Duration) int {
	if perPod <= 0 {
		return 1
	}
	return max(1, int(admitBudget/perPod))
}

// departed is a deleted pod whose address is still to be withdrawn.
type departed struct {
	// alloc is the pod's released allocation: its address, and what goes
	// back to the cloud after the withdrawal (one on an ENI).
	alloc spec.Allocation
	since time.Time
	// withdrawing is set while a withdrawal step renders without it: its
	// address is still quarantined.
	withdrawing bool
}

// departedPeers are the pods whose addresses depart.
type departedPeers struct {
	mu    sync.Mutex
	byKey map[string]*departed
	kick  chan struct{}
	// lastDel is when the last DEL ended, in Unix nanoseconds, and dels
	// counts the DELs under way (waiting for the agent's lock included): a
	// withdrawal waits for DELs to pause too.
	lastDel atomic.Int64
	dels    atomic.Int32
	// urgent is set by an ADD that found no free address but quarantined
	// ones: the withdrawal runs without waiting.
	urgent atomic.Bool
	// perPod is what the last withdrawal step took per pod under the
	// agent's lock, in nanoseconds (withdrawChunk).
	perPod atomic.Int64
	gauge  func(float64)
}

func newDepartedPeers(gauge func(float64)) *departedPeers {
	return &departedPeers{byKey: map[string]*departed{}, kick: make(chan struct{}, 1), gauge: gauge}
}

// depart records a pod's released allocation as departing; false when the
// pod departs already.
func (d *departedPeers) depart(now time.Time, key string, alloc spec.Allocation) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byKey[key] != nil {
		return false
	}
	d.byKey[key] = &departed{alloc: alloc, since: now}
	d.gauge(float64(len(d.byKey)))
	return true
}

// cancel forgets a departure that did not happen (the release found no
// record after all).
func (d *departedPeers) cancel(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.byKey, key)
	d.gauge(float64(len(d.byKey)))
}

// snapshot returns the departing addresses as render takes them (nil when
// none); pods being withdrawn are not among them.
func (d *departedPeers) snapshot() map[string]render.DepartingPeer {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out map[string]render.DepartingPeer
	for k, p := range d.byKey {
		if p.withdrawing {
			continue
		}
		if out == nil {
			out = make(map[string]render.DepartingPeer, len(d.byKey))
		}
		out[k] = render.DepartingPeer{IP: p.alloc.Spec.IP, UID: p.alloc.Spec.UID}
	}
	return out
}

// quarantined returns every address still to be withdrawn, for the
// allocator to skip.
func (d *departedPeers) quarantined() []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []netip.Addr
	for _, p := range d.byKey {
		if ip, err := netip.ParseAddr(p.alloc.Spec.IP); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// heldFromCloud counts the departing addresses the cloud gets back after
// their withdrawal.
func (d *departedPeers) heldFromCloud() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, p := range d.byKey {
		if p.alloc.Spec.ENI != "" {
			n++
		}
	}
	return n
}

// oldest returns the departing pods, sorted, and when the first of them
// departed (zero when none).
func (d *departedPeers) oldest() ([]string, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var keys []string
	var first time.Time
	for k, p := range d.byKey {
		keys = append(keys, k)
		if first.IsZero() || p.since.Before(first) {
			first = p.since
		}
	}
	slices.Sort(keys)
	return keys, first
}

// take marks pods as being withdrawn and returns them; restore undoes it,
// done forgets them.
func (d *departedPeers) take(keys []string) map[string]departed {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]departed{}
	for _, k := range keys {
		if p := d.byKey[k]; p != nil && !p.withdrawing {
			p.withdrawing = true
			out[k] = *p
		}
	}
	return out
}

func (d *departedPeers) restore(taken map[string]departed) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range taken {
		if p := d.byKey[k]; p != nil {
			p.withdrawing = false
		}
	}
}

// done forgets the pods taken.
func (d *departedPeers) done(taken map[string]departed) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k := range taken {
		delete(d.byKey, k)
	}
	d.gauge(float64(len(d.byKey)))
}

func (d *departedPeers) has(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.byKey[key] != nil
}

// hurry has the withdrawal run at once: an ADD found no free address but
// quarantined ones.
func (d *departedPeers) hurry() {
	d.urgent.Store(true)
	d.wake()
}

// wake asks the withdrawal loop to look at the departing pods.
func (d *departedPeers) wake() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// departs reports whether a DEL of key, whose allocation the store has,
// leaves the pod's address in the peer sets for the withdrawal: the pod
// was admitted, as far as the agent knows its object, does not depart
// already, and its address is not a whole ENI.
func (a *Agent) departs(key string, alloc spec.Allocation) bool {
	if !a.src.Synced() || a.held.has(key) || a.departing.has(key) || alloc.Spec.IP == "" {
		return false
	}
	if a.cfg.ENI != nil && alloc.Spec.ENI != "" && a.isExclusiveENI(alloc.Spec.ENI, alloc) {
		return false
	}
	_, found := a.lookupPod(key)
	return found
}

// withdrawalLoop withdraws the departing pods' addresses when the agent is
// quiet, until stop closes.
func (a *Agent) withdrawalLoop(stop <-chan struct{}) {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("work", "withdrawal")))
	sleep := func(d time.Duration) bool { return sleepUnless(stop, d) }
	for {
		select {
		case <-stop:
			return
		case <-a.departing.kick:
		}
		for {
			keys, oldest := a.departing.oldest()
			if len(keys) == 0 {
				break
			}
			if wait := a.withdrawalWait(time.Now(), oldest); wait > 0 {
				if !sleep(wait) {
					return
				}
				continue
			}
			chunk := withdrawChunk(time.Duration(a.departing.perPod.Load()))
			err := a.withdrawStep(stop, keys[:min(chunk, len(keys))])
			if errors.Is(err, errStopped) {
				return
			}
			if err != nil {
				a.log.Warn("withdrawing deleted pods' addresses from policy peer sets failed; retrying", "err", err, "retry", admitRetry)
				if !sleep(admitRetry) {
					return
				}
			} else if !sleep(time.Millisecond) {
				return // a CNI request waiting for the lock goes first
			}
		}
	}
}

// quarantineErr is an ADD's answer when it found no address, or no
// capacity, but n addresses of deleted pods wait for their withdrawal: it
// has the withdrawal run at once, and the runtime retries.
func (a *Agent) quarantineErr(what, key string, err error, n int) *types.Error {
	a.departing.hurry()
	return cniErr(codeTryAgainLater, "no "+what+" for pod "+key,
		fmt.Sprintf("%v; %d addresses of deleted pods are free once withdrawn from policy peer sets, in a moment", err, n))
}

// withdrawalWait is how long the withdrawal waits before it runs: while
// CNI ADDs or DELs are arriving or under way, until withdrawQuiet after
// the last one, and never beyond withdrawDelay after the oldest DEL, nor
// at all when an ADD needs an address.
func (a *Agent) withdrawalWait(now, oldest time.Time) time.Duration {
	deadline := oldest.Add(withdrawDelay)
	if !now.Before(deadline) || a.departing.urgent.Load() {
		return 0
	}
	last := max(a.held.lastAdd.Load(), a.departing.lastDel.Load())
	wait := time.Unix(0, last).Add(withdrawQuiet).Sub(now)
	if a.addsUnderWay() || a.departing.dels.Load() > 0 {
		wait = max(wait, time.Millisecond)
	}
	return min(wait, deadline.Sub(now))
}

// withdrawStep withdraws the addresses of the departing pods keys: under
// the agent's lock it renders the node without them and applies the
// nftables part of their scope, found by their addresses; then, off the
// lock, it reads back what it wrote (nft.LaterChecks), as an admission
// step does. Only then are their addresses free: back in the cloud's
// pool, or for the VPC allocator. On failure the pods depart again, for
// the next step; a read-back that found the kernel otherwise has made the
// next sync read the table whole, and the resync runs. A closed stop
// (Close waiting for the lock) ends it before it writes.
func (a *Agent) withdrawStep(stop <-chan struct{}, keys []string) error {
	a.departing.urgent.Store(false)
	var taken map[string]departed
	for again := false; ; again = true {
		var resync chan struct{}
		var err error
		taken, resync, err = a.withdrawOnce(stop, keys, taken)
		if len(taken) == 0 {
			return err // none of keys departs any more, or closing first
		}
		if err == nil && resync != nil && !again {
			// A resync's nftables commit, planned before this step with
			// these addresses as peers, was under way: it may write them
			// into a group this step's scoped plan left to it (one new to
			// the record). Once it is done, withdraw them again, from what
			// it wrote. Once is enough: a resync that plans nftables after
			// this step's write renders without these pods (they are
			// being withdrawn), the plan under the lock rendered again
			// because of that write (writeTracker.nftOnly).
			select {
			case <-resync:
				continue
			case <-stop:
				err = errStopped
			}
		}
		if err != nil {
			a.departing.restore(taken)
			return err
		}
		break
	}
	// The cloud's addresses go back only now (cloudRelease: those on an
	// ENI).
	a.departing.done(taken)
	now := time.Now()
	for _, p := range taken {
		a.m.withdrawal.Observe(now.Sub(p.since).Seconds())
		a.cloudRelease(p.alloc)
	}
	return nil
}

// withdrawOnce is one write of a withdrawal step: under the agent's lock,
// the render and apply (withdraw), then off it the read-back. The first
// write takes the pods (taken nil): under the lock, so that no CNI
// request renders them taken before this write (its render would not
// patch the last document: their peer role changed). It returns the pods
// taken, and the resync commit that was under way when it wrote, if one
// was.
func (a *Agent) withdrawOnce(stop <-chan struct{}, keys []string, taken map[string]departed) (map[string]departed, chan struct{}, error) {
	var later nft.LaterChecks
	ctx := nft.WithLaterChecks(context.Background(), &later)
	a.mu.Lock()
	select {
	case <-stop:
		a.mu.Unlock()
		return taken, nil, errStopped
	default:
	}
	if taken == nil {
		if taken = a.departing.take(keys); len(taken) == 0 {
			a.mu.Unlock()
			return nil, nil, nil
		}
	}
	resync := a.resyncCommit
	if resync != nil && closed(resync) {
		resync = nil
	}
	began := time.Now()
	err := a.withdraw(ctx, taken)
	a.departing.perPod.Store(int64(time.Since(began)) / int64(len(taken)))
	a.mu.Unlock()
	if err == nil && later.Len() > 0 {
		checking := time.Now()
		err = later.Run()
		a.m.withdrawalStep.WithLabelValues("check").Observe(time.Since(checking).Seconds())
		if err != nil && a.runner != nil {
			a.runner.Run()
		}
	}
	return taken, resync, err
}

// errStopped ends a withdrawal step when the agent closes: its pods
// depart still, and the next start withdraws them (its first full resync).
var errStopped = errors.New("the agent is closing")

// closed tells whether ch is closed.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// withdraw renders the node without the pods taken and applies the
// nftables part of their scope. Called with the agent's lock held.
func (a *Agent) withdraw(ctx context.Context, taken map[string]departed) error {
	began := time.Now()
	state, _, _, err := a.renderSettledFor(forCNI, nil)
	a.m.withdrawalStep.WithLabelValues("render").Observe(time.Since(began).Seconds())
	if err != nil {
		return err
	}
	applied := time.Now()
	defer func() { a.m.withdrawalStep.WithLabelValues("apply").Observe(time.Since(applied).Seconds()) }()
	opts := withdrawalScope(state, taken)
	rep, err := a.apply(ctx, "withdraw "+strings.Join(slices.Sorted(maps.Keys(taken)), ", "), state, opts)
	if err == nil {
		err = rep.Err()
	}
	return err
}

// withdrawalScope is the scope of a withdrawal's plan: nftables only, the
// departed pods by their addresses, and the pods with tables of their own
// (exclusive-ENI pods), which hold copies of their groups' peer sets and
// are planned whole (few pods have one).
func withdrawalScope(state *spec.NodeState, taken map[string]departed) engine.PlanOptions {
	opts := engine.PlanOptions{Kinds: []string{nft.Kind}, PodIPs: map[string]string{}}
	for _, k := range slices.Sorted(maps.Keys(taken)) {
		opts.Pods = append(opts.Pods, k)
		opts.PodIPs[k] = taken[k].alloc.Spec.IP
	}
	for _, t := range state.PodNFTables {
		if !slices.Contains(opts.Pods, t.Pod) {
			opts.Pods = append(opts.Pods, t.Pod)
		}
	}
	return opts
}
