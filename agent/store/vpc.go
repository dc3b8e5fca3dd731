package store

import (
	"bytes"
	"fmt"
	"net/netip"

	bolt "go.etcd.io/bbolt"

	"github.com/terway-reconciler/terway/spec"
)

// VPCRequest asks for a VPC-mode address for one CNI attachment.
type VPCRequest struct {
	// PodCIDR is the node's spec.podCIDR; host bits are ignored. It must be
	// the store's pod CIDR (recorded by the first request, changed only by
	// SetPodCIDR).
	PodCIDR netip.Prefix
	// Reserved addresses are never handed out (a gateway, say); those
	// outside PodCIDR are ignored.
	Reserved []netip.Addr
	// Pod is the pod's namespace and name.
	Pod spec.ObjectMeta
	// UID, ContainerID, IfName and Netns are recorded in the allocation.
	UID, ContainerID, IfName, Netns string
}

// AllocateVPC gives an attachment an address of the pod CIDR, recorded and
// synced in the same bbolt transaction that chose it (so two callers can
// never get the same address):
//
//   - an attachment that already has an allocation gets it back unchanged
//     (a retried ADD sees the same IP);
//   - otherwise it gets the lowest free usable address: never the network
//     address, never the IPv4 broadcast address, never one in Reserved;
//   - if the pod already holds an allocation of another container (its
//     sandbox was replaced), that allocation is released in the same
//     transaction and returned as replaced, for the caller to clean up. The
//     new attachment gets a different address when one is free, so nothing
//     left of the old sandbox can receive the new one's traffic;
//   - a full CIDR is an error naming it and its usage (ErrExhausted).
//
// The same container asking for a second interface of the same pod is an
// ErrConflict: a pod holds one attachment. A PodCIDR other than the store's
// is ErrCIDRChanged (see SetPodCIDR); a malformed request is ErrInvalid.
func (s *Store) AllocateVPC(req VPCRequest) (alloc spec.Allocation, replaced *spec.Allocation, err error) {
	alloc, replaced, _, commit, err := s.AllocateVPCDeferred(req)
	if err == nil && commit != nil {
		if err = commit(); err != nil {
			return spec.Allocation{}, nil, err
		}
	}
	return alloc, replaced, err
}

// AllocateVPCDeferred allocates as AllocateVPC does, without committing:
// the transaction that chose the address stays open, and commit (nil when
// nothing was written) commits and syncs it. Allocations made before any
// commit of it has started share that transaction (updateGrouped): each
// gets a commit, the first called commits them all, and every one returns
// the outcome. existing says the attachment had its allocation already (a
// retried ADD), committed or not. The store's other writers commit an
// open transaction first and then wait for it; its readers see the store
// without the allocation until then. The caller calls commit once, from
// any goroutine, and must not use the allocation as recorded before it
// returns nil: a CNI ADD sets the pod's network up meanwhile, and answers
// only after (agent/cni.go).
func (s *Store) AllocateVPCDeferred(req VPCRequest) (alloc spec.Allocation, replaced *spec.Allocation, existing bool, commit func() error, err error) {
	id := Attachment{req.ContainerID, req.IfName}
	pod := PodKey(req.Pod)
	fail := func(err error) (spec.Allocation, *spec.Allocation, bool, func() error, error) {
		return spec.Allocation{}, nil, false, nil, fmt.Errorf("allocate an address for pod %s (attachment %s): %w", pod, id, err)
	}
	if err := id.validate(); err != nil {
		return fail(err)
	}
	if req.Pod.Namespace == "" || req.Pod.Name == "" {
		return fail(fmt.Errorf("pod namespace and name must both be set: %w", ErrInvalid))
	}
	if !req.PodCIDR.IsValid() {
		return fail(fmt.Errorf("pod CIDR is not set: %w", ErrInvalid))
	}
	cidr := req.PodCIDR.Masked()
	// A retried ADD only reads: it does not wait for the writer lock.
	var retried bool
	err = s.view(func(tx *bolt.Tx) error {
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		cur, ok, err := t.podCIDR()
		if err != nil || !ok || cur != cidr {
			return err
		}
		alloc, retried, err = t.get(id.key())
		retried = retried && PodKey(alloc.Metadata) == pod
		return err
	})
	if err != nil {
		return fail(err)
	}
	if retried {
		return alloc, nil, true, nil, nil
	}
	pool := newPool(cidr, req.Reserved)
	floorKey := poolKey(pool)
	commit, err = s.updateGrouped(func(tx *bolt.Tx) error {
		replaced, existing = nil, false // a retried closure starts over
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		wrote, err := t.usePodCIDR(cidr)
		if err != nil {
			return err
		}
		k := id.key()
		have, found, err := t.get(k)
		if err != nil {
			return err
		}
		if found {
			if p := PodKey(have.Metadata); p != pod {
				return fmt.Errorf("attachment %s already belongs to pod %s: %w", id, p, ErrConflict)
			}
			alloc, existing = have, true
			if !wrote {
				return errNoChange // a retry: no write, no fsync
			}
			return nil
		}
		var old spec.Allocation
		var oldIP netip.Addr
		if old, found, err = t.byPod(pod); err != nil {
			return err
		}
		if found {
			if old.Spec.ContainerID == req.ContainerID {
				return fmt.Errorf("container %s already holds attachment %s of this pod: %w", req.ContainerID, AttachmentOf(old), ErrConflict)
			}
			replaced = &old
			oldIP, _ = netip.ParseAddr(old.Spec.IP)
		}
		from, seen := s.floor.start(floorKey)
		ip, ok := pool.lowestFree(t.ips, from)
		if !ok && pool.startsAfterFirst(from) {
			ip, ok = pool.lowestFree(t.ips, netip.Addr{}) // the floor was wrong: every address
		}
		walked := ok
		if !ok && replaced != nil && pool.usable(oldIP.Unmap()) && !pool.reserved[oldIP.Unmap()] {
			ip, ok = oldIP.Unmap(), true // the old sandbox's address is the only one left
		}
		if !ok {
			return pool.exhausted(t.ips)
		}
		if replaced != nil {
			if err := t.remove(old, AttachmentOf(old).key()); err != nil {
				return err
			}
		}
		alloc = spec.Allocation{
			APIVersion: spec.APIVersion, Kind: spec.KindAllocation,
			Metadata: spec.ObjectMeta{Namespace: req.Pod.Namespace, Name: req.Pod.Name},
			Spec: spec.AllocationSpec{
				IP: ip.String(), Netns: req.Netns, ContainerID: req.ContainerID,
				IfName: req.IfName, UID: req.UID,
			},
		}
		if err := t.put(&alloc, ip); err != nil {
			return err
		}
		if walked {
			// Every usable address below ip was allocated or reserved,
			// and ip is now (freeFloor; a removal since, as of the old
			// sandbox above, drops the raise).
			s.writes.raiseFloor(floorRaise{key: floorKey, to: ip.Next(), seen: seen})
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if commit == nil {
		return alloc, replaced, existing, nil, nil
	}
	committed := commit
	commit = func() error {
		if err := committed(); err != nil {
			_, _, _, _, err = fail(err)
			return err
		}
		return nil
	}
	return alloc, replaced, existing, commit, nil
}

// usePodCIDR records cidr as the store's pod CIDR if none is recorded, and
// refuses another one.
func (t *txn) usePodCIDR(cidr netip.Prefix) (wrote bool, err error) {
	cur, ok, err := t.podCIDR()
	if err != nil {
		return false, err
	}
	if ok {
		if cur != cidr {
			return false, fmt.Errorf("pod CIDR %s differs from the store's %s (the node's podCIDR changed? call SetPodCIDR): %w", cidr, cur, ErrCIDRChanged)
		}
		return false, nil
	}
	t.s.mutations++
	if err := t.meta.Put(keyPodCIDR, []byte(cidr.String())); err != nil {
		return false, fmt.Errorf("record pod CIDR %s: %w", cidr, err)
	}
	return true, nil
}

func (t *txn) podCIDR() (netip.Prefix, bool, error) {
	raw := t.meta.Get(keyPodCIDR)
	if raw == nil {
		return netip.Prefix{}, false, nil
	}
	p, err := netip.ParsePrefix(string(raw))
	if err != nil || p != p.Masked() {
		return netip.Prefix{}, false, fmt.Errorf("allocation store %s: meta.podCIDR %q is not a CIDR: %w", t.s.path, raw, ErrCorrupt)
	}
	return p, true, nil
}

// PodCIDR returns the pod CIDR the store allocates from, if one is
// recorded.
func (s *Store) PodCIDR() (netip.Prefix, bool, error) {
	var p netip.Prefix
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		p, ok, err = t.podCIDR()
		return err
	})
	return p, ok, err
}

// SetPodCIDR makes cidr the pod CIDR that AllocateVPC allocates from. No
// allocation is changed: those whose address is not a usable address of
// the new CIDR are returned (sorted by pod key), for the agent to report
// and to release once their pods are gone. Their addresses stay taken
// meanwhile, so they are never handed out twice.
func (s *Store) SetPodCIDR(cidr netip.Prefix) (outside []spec.Allocation, err error) {
	if !cidr.IsValid() {
		return nil, fmt.Errorf("set pod CIDR: CIDR is not set: %w", ErrInvalid)
	}
	cidr = cidr.Masked()
	pool := newPool(cidr, nil)
	err = s.update(func(tx *bolt.Tx) error {
		outside = nil
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		err = t.allocs.ForEach(func(k, v []byte) error {
			a, err := t.decode(k, v)
			if err != nil {
				return err
			}
			if ip, perr := netip.ParseAddr(a.Spec.IP); perr != nil || !pool.usable(ip.Unmap()) {
				outside = append(outside, a)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if cur, ok, err := t.podCIDR(); err != nil || (ok && cur == cidr) {
			if err == nil {
				err = errNoChange
			}
			return err
		}
		return t.meta.Put(keyPodCIDR, []byte(cidr.String()))
	})
	if err != nil {
		return nil, fmt.Errorf("set pod CIDR %s: %w", cidr, err)
	}
	sortAllocs(outside)
	return outside, nil
}

// pool is the set of usable addresses of a pod CIDR.
type pool struct {
	cidr        netip.Prefix
	first, last netip.Addr
	reserved    map[netip.Addr]bool
}

func newPool(cidr netip.Prefix, reserved []netip.Addr) pool {
	p := pool{cidr: cidr, first: cidr.Addr(), last: lastAddr(cidr), reserved: map[netip.Addr]bool{}}
	host := p.first.BitLen() - cidr.Bits()
	if host >= 2 || (p.first.Is6() && host >= 1) {
		p.first = p.first.Next() // the network (IPv6: subnet-router anycast) address
	}
	if p.first.Is4() && host >= 2 {
		p.last = p.last.Prev() // the broadcast address
	}
	for _, r := range reserved {
		if r = r.Unmap(); p.usable(r) {
			p.reserved[r] = true
		}
	}
	return p
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr()
	b := a.AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

func (p pool) usable(a netip.Addr) bool {
	return a.IsValid() && p.cidr.Contains(a) && p.first.Compare(a) <= 0 && a.Compare(p.last) <= 0
}

// startsAfterFirst tells whether a walk from from (lowestFree) starts
// later than the pool's first address.
func (p pool) startsAfterFirst(from netip.Addr) bool {
	return p.usable(from) && p.first.Compare(from) < 0
}

// skipReserved returns the first address from a on that is not reserved.
func (p pool) skipReserved(a netip.Addr) netip.Addr {
	for p.reserved[a] {
		a = a.Next()
	}
	return a
}

// lowestFree walks the IP index from the pool's first address, or from
// from when that is a later one of the pool (the store's floor, floor.go):
// the first gap (after skipping reserved addresses) is the answer. The
// cost is the number of allocated addresses between the start and it, not
// the size of the CIDR.
func (p pool) lowestFree(ips *bolt.Bucket, from netip.Addr) (netip.Addr, bool) {
	cand := p.first
	if p.startsAfterFirst(from) {
		cand = from
	}
	cand = p.skipReserved(cand)
	c := ips.Cursor()
	for k, _ := c.Seek(ipKey(cand)); k != nil && p.usable(cand); k, _ = c.Next() {
		a, ok := addrOfKey(k)
		if !ok || !p.cidr.Contains(a) {
			break
		}
		switch a.Compare(cand) {
		case 0:
			cand = p.skipReserved(cand.Next())
		case 1:
			return cand, true
		}
	}
	return cand, p.usable(cand)
}

// exhausted builds the error for a full CIDR, with its usage.
func (p pool) exhausted(ips *bolt.Bucket) error {
	used := 0
	c := ips.Cursor()
	for k, _ := c.Seek(ipKey(p.first)); k != nil; k, _ = c.Next() {
		a, ok := addrOfKey(k)
		if !ok || bytes.Compare(k, ipKey(p.last)) > 0 {
			break
		}
		if p.usable(a) {
			used++
		}
	}
	return fmt.Errorf("pod CIDR %s has no free address: %s usable, %d allocated, %d reserved: %w",
		p.cidr, p.size(), used, len(p.reserved), ErrExhausted)
}

// size is the number of usable addresses, as text (an IPv6 /64 does not
// fit an int).
func (p pool) size() string {
	host := p.first.BitLen() - p.cidr.Bits()
	if host >= 62 {
		return fmt.Sprintf("about 2^%d", host)
	}
	n := uint64(1) << host
	switch {
	case p.first.Is4() && host >= 2:
		n -= 2
	case p.first.Is6() && host >= 1:
		n--
	}
	return fmt.Sprint(n)
}
