package eni_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/emulator"
)

// faultyCloud sets the fault mix of the goal on every action: 30 %
// Throttling, 5 % InternalError, 5 % of the remaining calls take effect
// and lose their answer; attach takes 2 s.
func faultyCloud(emu *emulator.Emulator) {
	emu.SetAsyncDelay(2*time.Second, 200*time.Millisecond, 100*time.Millisecond)
	emu.SetFault("", emulator.Fault{Code: "Throttling", Rate: 0.30, SecondCode: "InternalError", SecondRate: 0.05, DropRate: 0.05})
}

func TestFaultsAllThirtyPodsComeUp(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 15 s")
	}
	// One ADD at a time, as the agent serialises them; and six at a time,
	// to look for an IP handed out twice.
	for _, concurrency := range []int{1, 6} {
		t.Run(fmt.Sprintf("concurrency=%d", concurrency), func(t *testing.T) {
			e := startEmulator(t, nil)
			faultyCloud(e.emu)
			r := start(t, e.config(0, 0), nil)
			allocs := allocate(t, r, "pod", 30, concurrency)
			checkNoDuplicates(t, allocs)
			d := e.emu.Dump()
			t.Logf("calls %v", d.Calls)
			t.Logf("faults injected %v", d.Faults)
			t.Logf("errors seen %v", r.Counters().Errors)
			if d.Faults["AttachNetworkInterface"]+d.Faults["CreateNetworkInterface"]+d.Faults["AssignPrivateIpAddresses"] == 0 {
				t.Fatalf("no fault hit a changing action; the test proves nothing")
			}

			// A resync finds ENIs whose create answer was lost; then no leak.
			if err := r.Resync(context.Background()); err != nil {
				t.Fatalf("Resync: %v", err)
			}
			if err := r.Maintain(context.Background()); err != nil {
				t.Fatalf("Maintain: %v", err)
			}
			checkNoLeaks(t, e, r)

			// Everything goes back, through the same faults.
			for i, a := range allocs {
				if err := r.ReleaseIP(fmt.Sprintf("pod-%d", i), a.IP); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(time.Minute)
			for {
				err := r.Maintain(context.Background())
				if err == nil && len(ours(settled(t, e))) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("ENIs of ours left after a minute: %+v (last error %v)", ours(e.emu.Dump()), err)
				}
			}
			e.emu.ClearFaults()
			if err := r.Resync(context.Background()); err != nil {
				t.Fatal(err)
			}
			if n := len(ours(settled(t, e))); n != 0 {
				t.Fatalf("%d ENIs of ours leaked", n)
			}
		})
	}
}

// Every change whose answer is lost once is recovered without a duplicate
// ENI or IP: create and assign by their ClientToken, attach, detach,
// unassign and delete by their "already done" answers.
func TestLostAnswersAreRecovered(t *testing.T) {
	e := startEmulator(t, nil)
	once := emulator.Fault{DropRate: 1, Times: 1}
	for _, a := range []string{"CreateNetworkInterface", "AttachNetworkInterface", "AssignPrivateIpAddresses"} {
		e.emu.SetFault(a, once)
	}
	r := start(t, e.config(0, 0), nil)
	allocs := allocate(t, r, "pod", 12, 1)
	checkNoDuplicates(t, allocs)
	mine := ours(settled(t, e))
	if len(mine) != 2 || 1+len(mine[0].IPs) != 10 || 1+len(mine[1].IPs) != 2 {
		t.Fatalf("after lost answers: %+v, want two ENIs with 10 and 2 IPs", mine)
	}
	checkNoLeaks(t, e, r)

	for _, a := range []string{"UnassignPrivateIpAddresses", "DetachNetworkInterface", "DeleteNetworkInterface"} {
		e.emu.SetFault(a, once)
	}
	// Half of the first ENI's pods and both of the second's go.
	for i, a := range allocs {
		if i%2 == 0 || i >= 10 {
			if err := r.ReleaseIP(fmt.Sprintf("pod-%d", i), a.IP); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.Maintain(context.Background()); err != nil {
		t.Fatalf("Maintain: %v", err)
	}
	mine = ours(settled(t, e))
	if len(mine) != 1 || mine[0].ID != allocs[0].ENI {
		t.Fatalf("after release: %+v, want only %s", mine, allocs[0].ENI)
	}
	left := append([]string{mine[0].PrimaryIP}, mine[0].IPs...)
	for i, a := range allocs[:10] {
		if i%2 == 1 && !slices.Contains(left, a.IP) {
			t.Fatalf("held IP %s of pod-%d is gone", a.IP, i)
		}
	}
	// The primary IP stays with its ENI: 5 held + the primary if idle.
	if n := len(left); n != 5 && n != 6 {
		t.Fatalf("%d IPs left on %s, want the 5 held (and the primary): %v", n, mine[0].ID, left)
	}
	checkNoLeaks(t, e, r)
	got := r.Counters().Errors
	for _, a := range []string{"CreateNetworkInterface", "AttachNetworkInterface", "AssignPrivateIpAddresses",
		"UnassignPrivateIpAddresses", "DetachNetworkInterface", "DeleteNetworkInterface"} {
		if got[a+"/NoAnswer"] != 1 {
			t.Errorf("%s: %d lost answers seen, want 1 (errors %v)", a, got[a+"/NoAnswer"], got)
		}
	}
}
