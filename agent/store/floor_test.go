package store

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestAllocationWalksFromTheFloor: allocations keep the lowest free
// address, and the walk for it starts at the first gap (the floor) rather
// than at the pool's first address. A release lowers the floor at once; a
// request with other reserved addresses does not use it.
func TestAllocationWalksFromTheFloor(t *testing.T) {
	s := openTemp(t)
	floorAt := func() netip.Addr {
		s.floor.mu.Lock()
		defer s.floor.mu.Unlock()
		return s.floor.addr
	}
	alloc := func(pod string, reserved ...netip.Addr) string {
		t.Helper()
		req := vpcReq(cidr24, pod, "c-"+strings.ReplaceAll(pod, "/", "-"))
		req.Reserved = reserved
		a, _ := mustAlloc(t, s, req)
		return a.Spec.IP
	}
	for i := range 40 {
		if ip, want := alloc(fmt.Sprintf("default/p%d", i)), fmt.Sprintf("10.0.0.%d", i+1); ip != want {
			t.Fatalf("allocation %d: %s, want %s", i, ip, want)
		}
	}
	if got, want := floorAt(), netip.MustParseAddr("10.0.0.41"); got != want {
		t.Fatalf("after 40 allocations in order the floor is %v, want %v: the next walk would visit allocated addresses", got, want)
	}

	// Releases lower it to the lowest address they free, which is the
	// next one given.
	for _, cid := range []string{"c-default-p20", "c-default-p5"} {
		if _, _, err := s.Release(cid, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := floorAt(), netip.MustParseAddr("10.0.0.6"); got != want {
		t.Fatalf("after releasing 10.0.0.21 and 10.0.0.6 the floor is %v, want %v", got, want)
	}
	for _, want := range []string{"10.0.0.6", "10.0.0.21", "10.0.0.41"} {
		if ip := alloc("default/q" + want); ip != want {
			t.Fatalf("after the releases: %s, want the lowest free %s", ip, want)
		}
	}
	if got, want := floorAt(), netip.MustParseAddr("10.0.0.42"); got != want {
		t.Fatalf("the floor is %v after the gaps filled, want %v", got, want)
	}

	// Another reserved set is another pool: its walk starts at the first
	// address and finds 10.0.0.42, the first not allocated nor reserved
	// past 10.0.0.42's reservation.
	if ip := alloc("default/r", netip.MustParseAddr("10.0.0.42")); ip != "10.0.0.43" {
		t.Fatalf("with 10.0.0.42 reserved: %s, want 10.0.0.43", ip)
	}
	// Back to no reservation: the floor is that pool's now, the walk
	// starts at the first address and finds the gap at 10.0.0.42.
	if ip := alloc("default/s"); ip != "10.0.0.42" {
		t.Fatalf("without the reservation again: %s, want 10.0.0.42", ip)
	}
}

// TestWrongFloorNeverExhaustsThePool: a floor above a free address (which
// the rules of floor.go do not make, but a defect could) does not make the
// pool look full: the walk starts again at the first address.
func TestWrongFloorNeverExhaustsThePool(t *testing.T) {
	s := openTemp(t)
	small := netip.MustParsePrefix("10.0.0.0/29") // 10.0.0.1 to 10.0.0.6
	for i := range 6 {
		mustAlloc(t, s, vpcReq(small, fmt.Sprintf("default/p%d", i), fmt.Sprintf("c%d", i)))
	}
	if _, _, err := s.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	s.floor.mu.Lock()
	s.floor.addr = netip.MustParseAddr("10.0.0.6")
	s.floor.mu.Unlock()
	if a, _ := mustAlloc(t, s, vpcReq(small, "default/q", "cq")); a.Spec.IP != "10.0.0.2" {
		t.Fatalf("with the floor wrongly above the free 10.0.0.2: %s", a.Spec.IP)
	}
}

// TestGroupedAllocationsRaiseTheFloorOnce: allocations sharing one write
// transaction (updateGrouped) each walk from the floor as it was before
// the transaction, seeing the others' writes; once it commits the floor is
// past them all.
func TestGroupedAllocationsRaiseTheFloorOnce(t *testing.T) {
	s := openTemp(t)
	// Open until the first commit: the later allocations join the first's
	// transaction rather than wait for its writer lock.
	was := groupMaxOpen
	groupMaxOpen = time.Minute
	t.Cleanup(func() { groupMaxOpen = was })
	var commits []func() error
	var ips []string
	for i := range 3 {
		a, _, _, commit, err := s.AllocateVPCDeferred(vpcReq(cidr24, fmt.Sprintf("default/g%d", i), fmt.Sprintf("g%d", i)))
		if err != nil || commit == nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		commits = append(commits, commit)
		ips = append(ips, a.Spec.IP)
	}
	for _, commit := range commits {
		if err := commit(); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}; fmt.Sprint(ips) != fmt.Sprint(want) {
		t.Fatalf("grouped allocations got %v, want %v", ips, want)
	}
	s.floor.mu.Lock()
	got := s.floor.addr
	s.floor.mu.Unlock()
	if want := netip.MustParseAddr("10.0.0.4"); got != want {
		t.Fatalf("after the group's commit the floor is %v, want %v", got, want)
	}
}
