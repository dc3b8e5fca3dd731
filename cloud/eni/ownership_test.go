package eni_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/spec"
)

// A restart with the agent's holdings makes no write: nothing is created,
// assigned or released, and held IPs are not handed out again.
func TestRestartWithHoldingsMakesNoWrites(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(2, 6)
	r1, err := eni.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r1.Start(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	allocs := allocate(t, r1, "pod", 14, 1)
	if err := r1.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	holdings := make([]eni.Holding, len(allocs))
	for i, a := range allocs {
		holdings[i] = eni.Holding{Owner: fmt.Sprintf("pod-%d", i), IP: a.IP, ENI: a.ENI}
	}
	// One holding lost its ENI id (an old record): found by IP.
	holdings[3].ENI = ""
	before := e.emu.Calls()

	r2 := start(t, cfg, holdings)
	if err := r2.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := e.emu.Calls()
	if w := writes(after) - writes(before); w != 0 {
		t.Fatalf("restart made %d writes: before %v after %v", w, before, after)
	}
	t.Logf("restart calls: %d (all reads)", total(after)-total(before))
	if st := r2.Status(); st.HeldIPs != 14 || len(st.Problems) != 0 {
		t.Fatalf("status after restart: %+v", st)
	}
	more := allocate(t, r2, "new", 2, 1)
	checkNoDuplicates(t, append(allocs, more...))
	if err := r2.ReleaseIP("someone-else", allocs[0].IP); err == nil {
		t.Fatal("released a held IP for the wrong owner")
	}
	if err := r2.ReleaseIP("pod-0", allocs[0].IP); err != nil {
		t.Fatal(err)
	}
	// Asking again for a held IP returns it.
	again, err := r2.AllocateIP(context.Background(), "pod-1")
	if err != nil || again.IP != allocs[1].IP {
		t.Fatalf("repeated allocation for pod-1: %+v %v, want %s", again, err, allocs[1].IP)
	}
}

// A restart never releases a held IP even when the pool is far above its
// maximum, and a holding that matches nothing is reported.
func TestRestartNeverReleasesHeld(t *testing.T) {
	e := startEmulator(t, nil)
	r1, stop1 := startStoppable(t, e.config(0, 10), nil)
	allocs := allocate(t, r1, "pod", 20, 2)
	holdings := []eni.Holding{{Owner: "ghost", IP: "198.18.1.1"}}
	for i, a := range allocs[:5] {
		holdings = append(holdings, eni.Holding{Owner: fmt.Sprintf("pod-%d", i), IP: a.IP, ENI: a.ENI})
	}
	// The agent restarts: the old one is gone (its pool pass, kicked by
	// the last allocation, could otherwise assign an IP the new one
	// counts as idle after its own pass).
	stop1()
	r2 := start(t, e.config(0, 0), holdings) // max 0: every idle IP goes
	if err := r2.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := e.emu.Dump()
	present, held := map[string]bool{}, map[string]bool{}
	for _, h := range holdings[1:] {
		held[h.IP] = true
	}
	// An ENI's primary IP goes only with its ENI, which stays while it has
	// a held IP: each such primary that is not held itself stays as the
	// ENI's one idle IP. Which ENIs the held IPs are on depends on the
	// order of the concurrent allocations.
	primariesLeft := 0
	for _, n := range ours(d) {
		present[n.PrimaryIP] = true
		holds := held[n.PrimaryIP]
		for _, ip := range n.IPs {
			present[ip] = true
			holds = holds || held[ip]
		}
		if holds && !held[n.PrimaryIP] {
			primariesLeft++
		}
	}
	for _, h := range holdings[1:] {
		if !present[h.IP] {
			t.Fatalf("held IP %s was unassigned", h.IP)
		}
	}
	if st := r2.Status(); st.HeldIPs != 5 || st.IdleIPs != primariesLeft || len(st.Problems) != 1 || !strings.Contains(st.Problems[0], "ghost") {
		t.Fatalf("status: %+v, want 5 held and %d idle (primaries of ENIs kept for held IPs)", st, primariesLeft)
	}
}

// ENIs without our tags and the primary ENI are never touched, and take
// slots: with one foreign ENI attached only two ENIs of ours fit.
func TestForeignAndPrimaryENIsUntouched(t *testing.T) {
	e := startEmulator(t, nil)
	client, err := ecs.NewClientWithAccessKey(e.info.RegionID, e.info.AccessKeyID, e.info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = e.info.Endpoint
	create := ecs.CreateCreateNetworkInterfaceRequest()
	create.VSwitchId, create.SecurityGroupId = e.self.VSwitchID, "sg-emu00000000000000001"
	create.SecondaryPrivateIpAddressCount = requests.NewInteger(2)
	foreign, err := client.CreateNetworkInterface(create)
	if err != nil {
		t.Fatal(err)
	}
	attach := ecs.CreateAttachNetworkInterfaceRequest()
	attach.NetworkInterfaceId, attach.InstanceId = foreign.NetworkInterfaceId, e.self.ID
	if _, err := client.AttachNetworkInterface(attach); err != nil {
		t.Fatal(err)
	}
	// Someone else's ENI tagged as ours but for another instance, unattached.
	other := ecs.CreateCreateNetworkInterfaceRequest()
	other.VSwitchId, other.SecurityGroupId = e.self.VSwitchID, "sg-emu00000000000000001"
	other.Tag = &[]ecs.CreateNetworkInterfaceTag{{Key: eni.TagOwner, Value: eni.OwnerValue}, {Key: eni.TagInstance, Value: "i-another"}}
	otherENI, err := client.CreateNetworkInterface(other)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the attach completes
	before := e.emu.Dump()

	r := start(t, e.config(0, 0), nil)
	allocs := allocate(t, r, "pod", 20, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st := r.Status(); st.ForeignENIs != 1 {
		t.Fatalf("foreign ENIs: %d, want 1", st.ForeignENIs)
	}
	if _, err := r.AllocateIP(ctx, "pod-20"); !errors.Is(err, eni.ErrNoCapacity) {
		t.Fatalf("21st with a foreign ENI attached: %v, want ErrNoCapacity", err)
	}
	needs := &spec.ENINeeds{ENIs: []spec.ENIWant{{ID: foreign.NetworkInterfaceId, Name: foreign.NetworkInterfaceId, Delete: true}}}
	if err := r.Converge(context.Background(), needs); err == nil || !strings.Contains(err.Error(), foreign.NetworkInterfaceId) {
		t.Fatalf("Converge on a foreign ENI: %v", err)
	}
	needs = &spec.ENINeeds{ENIs: []spec.ENIWant{{ID: e.self.PrimaryENIID, Name: e.self.PrimaryENIID, Release: []string{e.self.PrimaryIP}}}}
	if err := r.Converge(context.Background(), needs); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("Converge on the primary ENI: %v", err)
	}
	for i, a := range allocs {
		if err := r.ReleaseIP(fmt.Sprintf("pod-%d", i), a.IP); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := settled(t, e)
	for _, id := range []string{foreign.NetworkInterfaceId, otherENI.NetworkInterfaceId, e.self.PrimaryENIID} {
		b, _ := before.ENI(id)
		a, ok := after.ENI(id)
		if !ok || fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("ENI %s changed:\nbefore %+v\nafter  %+v", id, b, a)
		}
	}
	if n := len(ours(after)) - 1; n != 0 { // the other instance's one carries our owner tag
		t.Fatalf("%d ENIs of ours left", n)
	}
}

// A tagged ENI of ours left unattached (a crash between create and attach)
// is deleted at start.
func TestStrayTaggedENIDeletedAtStart(t *testing.T) {
	e := startEmulator(t, nil)
	client, err := ecs.NewClientWithAccessKey(e.info.RegionID, e.info.AccessKeyID, e.info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = e.info.Endpoint
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = e.self.VSwitchID, "sg-emu00000000000000001"
	req.Tag = &[]ecs.CreateNetworkInterfaceTag{{Key: eni.TagOwner, Value: eni.OwnerValue}, {Key: eni.TagInstance, Value: e.self.ID}}
	stray, err := client.CreateNetworkInterface(req)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, e.config(0, 0), nil)
	if err := r.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := settled(t, e).ENI(stray.NetworkInterfaceId); ok {
		t.Fatalf("stray ENI %s still exists", stray.NetworkInterfaceId)
	}
}

// An exclusive ENI survives a restart with its holding: no write, no wait
// for its link (it is in the pod's namespace), the same ENI for its owner.
func TestRestartKeepsExclusiveENI(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	r1 := start(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := r1.AllocateENI(ctx, "ns/db")
	if err != nil {
		t.Fatal(err)
	}
	before := e.emu.Calls()
	cfg.WaitLink = func(_ context.Context, mac string) error {
		return fmt.Errorf("no link with MAC %s in the node's namespace", mac)
	}
	r2 := start(t, cfg, []eni.Holding{{Owner: "ns/db", IP: a.IP, ENI: a.ENI}})
	if err := r2.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := r2.AllocateENI(ctx, "ns/db")
	if err != nil || again != a {
		t.Fatalf("after restart: %+v %v, want %+v", again, err, a)
	}
	if w := writes(e.emu.Calls()) - writes(before); w != 0 {
		t.Fatalf("restart made %d writes", w)
	}
}

// A restarted agent whose pod object is already gone cannot tell an
// exclusive ENI from a shared IP: it offers both owners, and the ENI's tag
// decides. The exclusive ENI is then released by its pod's key, the shared
// IP by its attachment, and the ENI goes back to the cloud (before, the
// ENI stayed held by the attachment key and its pod's DEL could not
// release it: a leaked ENI).
func TestRestartExclusiveOwnerFromTag(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	r1 := start(t, cfg, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	excl, err := r1.AllocateENI(ctx, "ns/db")
	if err != nil {
		t.Fatal(err)
	}
	shared, err := r1.AllocateIP(ctx, "cid-web/eth0")
	if err != nil {
		t.Fatal(err)
	}
	r2 := start(t, cfg, []eni.Holding{
		{Owner: "cid-db/eth0", ExclusiveOwner: "ns/db", IP: excl.IP, ENI: excl.ENI},
		{Owner: "cid-web/eth0", ExclusiveOwner: "ns/web", IP: shared.IP, ENI: shared.ENI},
	})
	if err := r2.ReleaseENI("ns/db", excl.ENI); err != nil {
		t.Fatalf("release the exclusive ENI by its pod after a restart: %v", err)
	}
	if err := r2.ReleaseIP("cid-web/eth0", shared.IP); err != nil {
		t.Fatalf("release the shared IP by its attachment after a restart: %v", err)
	}
	if err := r2.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := settled(t, e).ENI(excl.ENI); ok {
		t.Fatalf("exclusive ENI %s still exists after its release", excl.ENI)
	}
}

// An agent killed while deleting an ENI leaves it detaching. The restarted
// one goes on deleting it at start, not at its next full resync, unless
// its holdings show pods on it: then it is reported and left alone.
func TestDetachingENIDeletedAtStart(t *testing.T) {
	for _, held := range []bool{false, true} {
		t.Run(fmt.Sprintf("held=%v", held), func(t *testing.T) {
			e := startEmulator(t, nil)
			cfg := e.config(0, 0)
			r1, stop1 := startStoppable(t, cfg, nil)
			a := allocate(t, r1, "pod", 1, 1)[0]
			stop1()
			client, err := ecs.NewClientWithAccessKey(e.info.RegionID, e.info.AccessKeyID, e.info.AccessKeySecret)
			if err != nil {
				t.Fatal(err)
			}
			client.Domain = e.info.Endpoint
			// The killed agent's detach: slow enough that the restart
			// finds the ENI still detaching.
			e.emu.SetAsyncDelay(50*time.Millisecond, 2*time.Second, 20*time.Millisecond)
			detach := ecs.CreateDetachNetworkInterfaceRequest()
			detach.NetworkInterfaceId, detach.InstanceId = a.ENI, e.self.ID
			if _, err := client.DetachNetworkInterface(detach); err != nil {
				t.Fatal(err)
			}
			var holdings []eni.Holding
			if held {
				holdings = []eni.Holding{{Owner: "pod-0", IP: a.IP, ENI: a.ENI}}
			}
			r2 := start(t, cfg, holdings)
			if n, ok := e.emu.Dump().ENI(a.ENI); !ok || n.Status != "Detaching" {
				t.Fatalf("ENI %s at restart: %+v, want it detaching", a.ENI, n)
			}
			if err := r2.Maintain(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, exists := settled(t, e).ENI(a.ENI)
			problems := strings.Join(r2.Status().Problems, "\n")
			switch {
			case !held && exists:
				t.Fatalf("ENI %s, detaching at restart and holding nothing, still exists", a.ENI)
			case held && !exists:
				t.Fatalf("ENI %s, detaching at restart with a held IP, was deleted", a.ENI)
			case held && !strings.Contains(problems, a.ENI+": detaching"):
				t.Fatalf("problems: %q, want ENI %s reported as detaching with a held IP", problems, a.ENI)
			case !held && problems != "":
				t.Fatalf("problems: %q", problems)
			}
		})
	}
}
