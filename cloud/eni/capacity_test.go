package eni_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// Thirty pods on 4 ENIs x 10 IPs: the primary ENI serves no pod, so three
// ENIs of ten IPs (their own primary IPs included) hold exactly thirty.
func TestThirtyIPsFillThreeENIsAndTheThirtyFirstFails(t *testing.T) {
	e := startEmulator(t, nil)
	r := start(t, e.config(0, 0), nil)
	allocs := allocate(t, r, "pod", 30, 1)
	checkNoDuplicates(t, allocs)

	perENI := map[string]int{}
	for _, a := range allocs {
		perENI[a.ENI]++
		if a.MAC == "" || a.Gateway == "" || a.VSwitchCIDR == "" || a.DeviceIndex < 1 {
			t.Fatalf("allocation lacks datapath facts: %+v", a)
		}
	}
	if len(perENI) != 3 {
		t.Fatalf("IPs spread over %d ENIs, want 3: %v", len(perENI), perENI)
	}
	for id, n := range perENI {
		if n != 10 {
			t.Fatalf("ENI %s serves %d pods, want 10", id, n)
		}
	}
	if got := len(ours(e.emu.Dump())); got != 3 {
		t.Fatalf("cloud has %d ENIs of ours, want 3", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := r.AllocateIP(ctx, "pod-30")
	if !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("31st allocation: %v, want ErrNoCapacity", err)
	}
	for _, want := range []string{"pod-30", "4 ENIs x 10 IPs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Logf("31st: %v", err)
	t.Logf("API calls for 30 pods: %v", e.emu.Calls())
	checkNoLeaks(t, e, r)
}

// Releasing every pod gives back IPs above the maximum and deletes the ENIs
// left empty; with a maximum of 0 nothing of ours remains in the cloud.
func TestReleaseAllGivesEverythingBack(t *testing.T) {
	for _, maxIdle := range []int{0, 5} {
		t.Run(fmt.Sprintf("maxIdle=%d", maxIdle), func(t *testing.T) {
			e := startEmulator(t, nil)
			r := start(t, e.config(0, maxIdle), nil)
			allocs := allocate(t, r, "pod", 30, 3)
			before := e.emu.Dump().VSwitches
			for i, a := range allocs {
				if err := r.ReleaseIP(fmt.Sprintf("pod-%d", i), a.IP); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Maintain(context.Background()); err != nil {
				t.Fatalf("Maintain: %v", err)
			}
			d := settled(t, e)
			mine := ours(d)
			kept := 0
			for _, n := range mine {
				kept += 1 + len(n.IPs)
			}
			if kept != maxIdle {
				t.Fatalf("%d IPs of ours left in the cloud, want %d: %+v", kept, maxIdle, mine)
			}
			if st := r.Status(); st.IdleIPs != maxIdle || st.HeldIPs != 0 {
				t.Fatalf("status: %+v", st)
			}
			if len(d.ENIs) != 1+len(mine) {
				t.Fatalf("cloud ENIs: %d, want the primary + %d of ours", len(d.ENIs), len(mine))
			}
			for i, v := range d.VSwitches {
				if v.ID == e.self.VSwitchID && v.Available != before[i].Available+30-maxIdle {
					t.Fatalf("vswitch %s: %d available, want %d", v.ID, v.Available, before[i].Available+30-maxIdle)
				}
			}
			checkNoLeaks(t, e, r)
		})
	}
}

// An exhausted vswitch is named in the error; a second configured vswitch
// takes over.
func TestExhaustedVSwitch(t *testing.T) {
	t.Run("only vswitch", func(t *testing.T) {
		e := startEmulator(t, nil)
		e.emu.SetVSwitchAvailable(e.self.VSwitchID, 0)
		r := start(t, e.config(0, 0), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := r.AllocateIP(ctx, "pod-0")
		if !errors.Is(err, eni.ErrVSwitchExhausted) || !strings.Contains(err.Error(), "vswitch "+e.self.VSwitchID+" has no free IP") {
			t.Fatalf("error %v: want ErrVSwitchExhausted naming %s", err, e.self.VSwitchID)
		}
		t.Logf("error: %v", err)
		if st := r.Status(); len(st.Blocked) != 1 || st.Blocked[0].ID != e.self.VSwitchID {
			t.Fatalf("blocked: %+v", st.Blocked)
		}
	})
	t.Run("fallback", func(t *testing.T) {
		e := startEmulator(t, nil)
		e.emu.SetVSwitchAvailable(e.self.VSwitchID, 0)
		cfg := e.config(0, 0)
		cfg.VSwitchIDs = []string{e.self.VSwitchID, sameZoneVSwitch}
		r := start(t, cfg, nil)
		allocs := allocate(t, r, "pod", 12, 1)
		for _, a := range allocs {
			if a.VSwitchID != sameZoneVSwitch {
				t.Fatalf("IP %s from vswitch %s, want the fallback %s", a.IP, a.VSwitchID, sameZoneVSwitch)
			}
		}
		checkNoLeaks(t, e, r)
	})
	t.Run("ENI with room in an exhausted vswitch", func(t *testing.T) {
		e := startEmulator(t, nil)
		cfg := e.config(0, 0)
		cfg.VSwitchIDs = []string{e.self.VSwitchID, sameZoneVSwitch}
		r := start(t, cfg, nil)
		first := allocate(t, r, "a", 5, 1) // an ENI with 5 IPs in the first vswitch
		e.emu.SetVSwitchAvailable(e.self.VSwitchID, 0)
		more := allocate(t, r, "b", 3, 1)
		for _, a := range more {
			if a.VSwitchID != sameZoneVSwitch {
				t.Fatalf("IP %s from vswitch %s after it ran out", a.IP, a.VSwitchID)
			}
		}
		checkNoDuplicates(t, append(first, more...))
		checkNoLeaks(t, e, r)
	})
}

// An exclusive ENI is made for its owner, and deleted after release.
func TestExclusiveENI(t *testing.T) {
	e := startEmulator(t, nil)
	r := start(t, e.config(0, 0), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := r.AllocateENI(ctx, "ns/db")
	if err != nil {
		t.Fatal(err)
	}
	again, err := r.AllocateENI(ctx, "ns/db")
	if err != nil || again != a {
		t.Fatalf("repeated AllocateENI: %+v %v, want %+v", again, err, a)
	}
	n, ok := e.emu.Dump().ENI(a.ENI)
	if !ok || n.PrimaryIP != a.IP || n.Status != "InUse" || n.Tags[eni.TagExclusive] != "true" || a.Gateway == "" {
		t.Fatalf("exclusive ENI %+v in the cloud: %+v", a, n)
	}
	found := false
	for _, x := range r.ENIs() {
		found = found || (x.Metadata.Name == a.ENI && x.Spec.Exclusive)
	}
	if !found {
		t.Fatalf("ENIs() lacks the exclusive ENI %s", a.ENI)
	}
	// Shared IPs never come from it.
	for _, s := range allocate(t, r, "pod", 3, 1) {
		if s.ENI == a.ENI {
			t.Fatalf("shared IP %s from exclusive ENI %s", s.IP, a.ENI)
		}
	}
	if err := r.ReleaseENI("ns/other", a.ENI); err == nil {
		t.Fatal("released an exclusive ENI for the wrong owner")
	}
	if err := r.ReleaseENI("ns/db", a.ENI); err != nil {
		t.Fatal(err)
	}
	if err := r.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := settled(t, e).ENI(a.ENI); ok {
		t.Fatalf("exclusive ENI %s not deleted after release", a.ENI)
	}
}
