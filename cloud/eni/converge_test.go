package eni_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

// The link wait runs after the ENI is InUse and before any of its IPs is
// handed out.
func TestLinkWaitedBeforeServing(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	var mu sync.Mutex
	linked := map[string]bool{}
	cfg.WaitLink = func(ctx context.Context, mac string) error {
		for _, n := range e.emu.Dump().ENIs {
			if strings.EqualFold(n.MAC, mac) && n.Status != "InUse" {
				return fmt.Errorf("link wait for %s while the ENI is %s", mac, n.Status)
			}
		}
		time.Sleep(100 * time.Millisecond) // the kernel is slow today
		mu.Lock()
		linked[strings.ToLower(mac)] = true
		mu.Unlock()
		return nil
	}
	r := start(t, cfg, nil)
	for _, a := range allocate(t, r, "pod", 12, 3) {
		mu.Lock()
		ok := linked[strings.ToLower(a.MAC)]
		mu.Unlock()
		if !ok {
			t.Fatalf("IP %s handed out before the link of %s was seen", a.IP, a.MAC)
		}
	}
}

// Converge reads the document's section declaratively: the same needs
// twice make one ENI, not two.
func TestConvergeIsIdempotent(t *testing.T) {
	e := startEmulator(t, nil)
	r := start(t, e.config(0, 10), nil)
	needs := &spec.ENINeeds{MaxENIs: 4, IPsPerENI: 10, MaxIdle: 10, ENIs: []spec.ENIWant{{Name: "new-1", Add: 4}}}
	for range 2 {
		if err := r.Converge(context.Background(), needs); err != nil {
			t.Fatal(err)
		}
	}
	mine := ours(e.emu.Dump())
	if len(mine) != 1 || 1+len(mine[0].IPs) != 4 {
		t.Fatalf("after the same needs twice: %+v", mine)
	}
	// Now the document lists the ENI: grow it to 7, twice.
	id := mine[0].ID
	needs = &spec.ENINeeds{ENIs: []spec.ENIWant{{ID: id, Name: id, Keep: []string{"a", "b", "c", "d"}, Add: 3}}}
	for range 2 {
		if err := r.Converge(context.Background(), needs); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := e.emu.Dump().ENI(id); 1+len(n.IPs) != 7 {
		t.Fatalf("ENI %s has %d IPs, want 7", id, 1+len(n.IPs))
	}
	checkNoLeaks(t, e, r)
}
