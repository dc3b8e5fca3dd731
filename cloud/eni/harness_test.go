package eni_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/cloud/metadata"
)

// env is an emulated cloud and what a node learns about itself from it.
type env struct {
	emu  *emulator.Emulator
	info emulator.Info
	md   *metadata.Client
	self metadata.Instance
}

// sameZoneVSwitch is a second vswitch in the instance's zone, added to the
// default world for fallback tests.
const sameZoneVSwitch = "vsw-emu00000000000000h2"

func startEmulator(t testing.TB, edit func(*emulator.World)) *env {
	t.Helper()
	w := emulator.DefaultWorld()
	w.VSwitches = append(w.VSwitches, emulator.VSwitch{ID: sameZoneVSwitch, ZoneID: "cn-hangzhou-h", CIDR: "198.18.96.0/20"})
	if edit != nil {
		edit(w)
	}
	e, err := emulator.New(w)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	e.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.SetAsyncDelay(50*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond)
	if err := e.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatalf("emulator start: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	info := e.Info()
	md := metadata.New(info.Metadata)
	self, err := md.Instance(context.Background())
	if err != nil {
		t.Fatalf("discover the instance: %v", err)
	}
	return &env{emu: e, info: info, md: md, self: self}
}

// testLogger discards unless TERWAY_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TERWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// config is what the agent would build from the metadata and its own
// configuration, with fast retries and polls for tests.
func (e *env) config(minIdle, maxIdle int) eni.Config {
	return eni.Config{
		RegionID: e.self.RegionID, ECSEndpoint: e.info.Endpoint, VPCEndpoint: e.info.Endpoint,
		Credentials: eni.Credentials{AccessKeyID: e.info.AccessKeyID, AccessKeySecret: eni.Secret(e.info.AccessKeySecret)},
		InstanceID:  e.self.ID, InstanceType: e.self.Type, ZoneID: e.self.ZoneID, PrimaryENIID: e.self.PrimaryENIID,
		VSwitchIDs: []string{e.self.VSwitchID}, SecurityGroupID: "sg-emu00000000000000001",
		MinIdle: minIdle, MaxIdle: maxIdle, Metadata: e.md,
		WaitLink:     func(context.Context, string) error { return nil },
		Logger:       testLogger(),
		CallTimeout:  3 * time.Second,
		Retry:        eni.Backoff{Initial: 10 * time.Millisecond, Max: 300 * time.Millisecond, Factor: 2, Jitter: 0.3, Attempts: 12},
		PollInterval: 50 * time.Millisecond, ResyncInterval: time.Hour,
		AttachTimeout: 30 * time.Second, DetachTimeout: 30 * time.Second,
	}
}

// start creates and starts a reconciler and runs its loop until the test ends.
func start(t testing.TB, cfg eni.Config, holdings []eni.Holding) *eni.Reconciler {
	t.Helper()
	r, _ := startStoppable(t, cfg, holdings)
	return r
}

// startStoppable is start that also returns a stop: its Run ends, and no
// pool pass of it is under way any more, when stop returns (an agent that
// exits before the next one starts).
func startStoppable(t testing.TB, cfg eni.Config, holdings []eni.Holding) (*eni.Reconciler, func()) {
	t.Helper()
	r, err := eni.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := r.Start(context.Background(), holdings); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	return r, stop
}

// allocate asks for n IPs for owners prefix-0.., concurrency at a time.
func allocate(t testing.TB, r *eni.Reconciler, prefix string, n, concurrency int) []eni.IPAllocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := make([]eni.IPAllocation, n)
	errs := make([]error, n)
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i], errs[i] = r.AllocateIP(ctx, fmt.Sprintf("%s-%d", prefix, i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("allocate %s-%d: %v", prefix, i, err)
		}
	}
	return out
}

// checkNoDuplicates fails on an IP handed out twice.
func checkNoDuplicates(t testing.TB, allocs []eni.IPAllocation) {
	t.Helper()
	seen := map[string]int{}
	for i, a := range allocs {
		if j, dup := seen[a.IP]; dup {
			t.Fatalf("IP %s handed to %d and %d", a.IP, j, i)
		}
		seen[a.IP] = i
	}
}

// ours returns the emulator's ENIs carrying our ownership tags.
func ours(d emulator.Dump) []emulator.DumpENI {
	var out []emulator.DumpENI
	for _, n := range d.ENIs {
		if n.Tags[eni.TagOwner] == eni.OwnerValue {
			out = append(out, n)
		}
	}
	return out
}

// checkNoLeaks fails unless every ENI of ours in the cloud is attached,
// InUse and known to the reconciler with the same IPs, and every IP of the
// vswitches is accounted for.
func checkNoLeaks(t testing.TB, e *env, r *eni.Reconciler) {
	t.Helper()
	d := settled(t, e)
	known := map[string][]string{}
	for _, x := range r.ENIs() {
		known[x.Metadata.Name] = append([]string{x.Spec.PrimaryIP}, x.Spec.SecondaryIPs...)
	}
	for _, n := range ours(d) {
		ips, ok := known[n.ID]
		if !ok {
			t.Fatalf("ENI %s (%s) is in the cloud but not known to the reconciler: leaked", n.ID, n.Status)
		}
		cloud := append([]string{n.PrimaryIP}, n.IPs...)
		slices.Sort(cloud)
		slices.Sort(ips)
		if n.Status != "InUse" || n.InstanceID != e.self.ID || !slices.Equal(cloud, ips) {
			t.Fatalf("ENI %s: cloud %s on %q with %v; reconciler %v", n.ID, n.Status, n.InstanceID, cloud, ips)
		}
		delete(known, n.ID)
	}
	if len(known) > 0 {
		t.Fatalf("the reconciler believes in ENIs the cloud does not have: %v", known)
	}
}

// writes counts the emulator's calls of actions that change something.
func writes(calls map[string]int) int {
	n := 0
	for action, c := range calls {
		if len(action) < 8 || action[:8] != "Describe" {
			n += c
		}
	}
	return n
}

func total(calls map[string]int) int {
	n := 0
	for _, c := range calls {
		n += c
	}
	return n
}

// settled waits (up to 10 s) until no ENI is between two states (a
// deletion finishing) and returns the dump.
func settled(t testing.TB, e *env) emulator.Dump {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := e.emu.Dump()
		busy := false
		for _, n := range d.ENIs {
			busy = busy || (n.Status != "InUse" && n.Status != "Available")
		}
		if !busy || time.Now().After(deadline) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
}
