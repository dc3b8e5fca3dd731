package store

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// The lowest free address, without walking every allocated one.
//
// An allocation takes the pool's lowest free address (lowestFree), which
// it finds by walking the IP index from the pool's first address to the
// first gap. On a node whose pods took the addresses in order, that walk
// visits every allocated address on every CNI ADD (250 at 250 pods). The
// store keeps, between transactions, an address below which none is free:
// the walk starts there.
//
// The floor only ever makes the walk start later, never changes what it
// checks: an address is still free only where the IP index has no entry,
// so a wrong floor could pick an address higher than the lowest free one,
// never one in use. It is kept right by these rules:
//   - it holds for one pool, its CIDR and its reserved addresses (a
//     request with others starts from the pool's first address);
//   - every removal of an IP index entry lowers it at once, before its
//     transaction commits (txn.unindex): a removal that rolls back leaves
//     it lower than it could be, never higher;
//   - a walk's answer raises it only after its transaction commits, and
//     only when no removal lowered it since the walk began (a removal in
//     the same transaction later, or in the next one, which may begin as
//     soon as bbolt's writer lock is free).
//
// A walk from the floor that finds no free address walks again from the
// pool's first one before it reports the pool exhausted.

// freeFloor is the store's floor: every usable address of the pool named
// key below addr is allocated or reserved. The zero value knows of none.
type freeFloor struct {
	mu   sync.Mutex
	key  string
	addr netip.Addr
	// lowered counts the removals of IP index entries, for a raise to
	// tell that none came since its walk began.
	lowered uint64
}

// floorRaise is what a walk learned: every usable address of the pool
// below to is allocated or reserved, as of the walk, which began with
// the floor's lowered count at seen.
type floorRaise struct {
	key  string
	to   netip.Addr
	seen uint64
}

// poolKey names a pool for the floor: its CIDR and reserved addresses.
func poolKey(p pool) string {
	reserved := make([]string, 0, len(p.reserved))
	for a := range p.reserved {
		reserved = append(reserved, a.String())
	}
	slices.Sort(reserved)
	return p.cidr.String() + " " + strings.Join(reserved, ",")
}

// start returns where a walk of the pool named key may begin (invalid:
// at the pool's first address) and the lowered count to raise with.
func (f *freeFloor) start(key string) (netip.Addr, uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key != key {
		return netip.Addr{}, f.lowered
	}
	return f.addr, f.lowered
}

// lower takes the floor down to a, an address whose IP index entry a
// transaction is removing.
func (f *freeFloor) lower(a netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lowered++
	if f.addr.IsValid() && a.Compare(f.addr) < 0 {
		f.addr = a // outside the pool, lower than its first: a walk starts there
	}
}

// raise applies r, from a committed transaction, unless a removal came
// since its walk began.
func (f *freeFloor) raise(r floorRaise) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lowered != r.seen {
		return
	}
	if f.key != r.key || !f.addr.IsValid() || f.addr.Compare(r.to) < 0 {
		f.key, f.addr = r.key, r.to
	}
}
