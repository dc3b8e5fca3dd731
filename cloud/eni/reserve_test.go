package eni_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// With one of the three secondary slots of ecs.emu.xlarge (4 ENIs x 10
// IPs) kept for multi-IP pods, against the emulator through the real SDK:
// shared IPs fill that one ENI and the eleventh fails, naming the
// reservation, instead of taking a slot promised to exclusive pods; the
// two exclusive slots (the count the device plugin advertises) serve two
// pods and the third fails, naming the reservation too. Without the
// reservation in the pool the eleventh shared IP would create a second
// shared ENI, and the second exclusive ENI would find no slot.
func TestReservedSharedSlotsHonoured(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	one := 1
	cfg.ReservedShared = &one
	r := start(t, cfg, nil)
	if s := r.Status().Slots; s.Exclusive != 2 || s.Shared != 1 || !s.Split {
		t.Fatalf("slots %+v, want 1 shared and 2 exclusive", s)
	}

	allocs := allocate(t, r, "pod", 10, 1)
	checkNoDuplicates(t, allocs)
	for _, a := range allocs[1:] {
		if a.ENI != allocs[0].ENI {
			t.Fatalf("ten shared IPs on two ENIs (%s, %s), want the one reserved", allocs[0].ENI, a.ENI)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := r.AllocateIP(ctx, "pod-10")
	if !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("11th shared IP: %v, want ErrNoCapacity", err)
	}
	for _, want := range []string{"pod-10", "reservedENIsForMultiIP 1", "aliyun/eni"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("11th shared IP: error %q does not say %q", err, want)
		}
	}
	t.Logf("11th shared IP: %v", err)

	var excl []eni.ENIAllocation
	for _, owner := range []string{"ns/a", "ns/b"} {
		a, err := r.AllocateENI(ctx, owner)
		if err != nil {
			t.Fatalf("exclusive ENI %d of 2 for %s: %v", len(excl)+1, owner, err)
		}
		if a.ENI == allocs[0].ENI {
			t.Fatalf("exclusive ENI for %s is the shared ENI %s", owner, a.ENI)
		}
		excl = append(excl, a)
	}
	_, err = r.AllocateENI(ctx, "ns/c")
	if !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("3rd exclusive ENI: %v, want ErrNoCapacity", err)
	}
	for _, want := range []string{"ns/c", "1 kept for multi-IP pods (reservedENIsForMultiIP)", "2 are for exclusive ENIs and 2 of them are taken"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("3rd exclusive ENI: error %q does not say %q", err, want)
		}
	}
	t.Logf("3rd exclusive ENI: %v", err)
	if got := len(ours(e.emu.Dump())); got != 3 {
		t.Fatalf("%d ENIs of ours in the cloud, want 3 (1 shared, 2 exclusive)", got)
	}

	// An exclusive ENI given back frees its slot for the next exclusive
	// pod, never for shared IPs.
	if err := r.ReleaseENI("ns/a", excl[0].ENI); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AllocateIP(ctx, "pod-11"); !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("shared IP after an exclusive ENI's release: %v, want ErrNoCapacity", err)
	}
	if _, err := r.AllocateENI(ctx, "ns/c"); err != nil {
		t.Fatalf("exclusive ENI for ns/c after ns/a's release: %v", err)
	}
	checkNoLeaks(t, e, r)
}

// In VPC mode nothing is kept for multi-IP pods: every secondary slot
// serves an exclusive pod, and no shared ENI is ever made.
func TestNothingReservedServesExclusiveOnly(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	zero := 0
	cfg.ReservedShared = &zero
	r := start(t, cfg, nil)
	if s := r.Status().Slots; s.Exclusive != 3 || s.Shared != 0 {
		t.Fatalf("slots %+v, want 0 shared and 3 exclusive", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.AllocateIP(ctx, "pod-0"); !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("a shared IP with nothing reserved: %v, want ErrNoCapacity", err)
	}
	for _, owner := range []string{"ns/a", "ns/b", "ns/c"} {
		if _, err := r.AllocateENI(ctx, owner); err != nil {
			t.Fatalf("exclusive ENI for %s: %v", owner, err)
		}
	}
	if _, err := r.AllocateENI(ctx, "ns/d"); !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("4th exclusive ENI: %v, want ErrNoCapacity", err)
	}
	for _, n := range ours(e.emu.Dump()) {
		if n.Tags[eni.TagExclusive] != "true" {
			t.Fatalf("a shared ENI %s was made with nothing reserved for it", n.ID)
		}
	}
}
