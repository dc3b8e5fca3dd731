package deviceplugin_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
	"github.com/terway-reconciler/terway/internal/devicemanager"
)

func TestRegistration(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	runPlugin(t, dir, 3)

	req := k.Registration(t)
	if req.Version != "v1beta1" || req.Endpoint != deviceplugin.DefaultSocketName || req.ResourceName != "aliyun/eni" {
		t.Errorf("register request: version %q endpoint %q resource %q; want v1beta1, %s, aliyun/eni", req.Version, req.Endpoint, req.ResourceName, deviceplugin.DefaultSocketName)
	}
	if req.Options == nil || req.Options.PreStartRequired || req.Options.GetPreferredAllocationAvailable {
		t.Errorf("register options: %v; want present, no pre-start, no preferred allocation", req.Options)
	}
	l := k.ListOf(t, "3 healthy devices", devicemanager.Count(3, pluginapi.Healthy))
	seen := map[string]bool{}
	for _, d := range l {
		if seen[d.ID] || d.ID == "" {
			t.Errorf("device id %q empty or repeated in %v", d.ID, l)
		}
		seen[d.ID] = true
	}
}

// The plugin starts before the kubelet (a node boot): it keeps trying and
// registers once kubelet.sock appears.
func TestRegistersWhenKubeletComesLater(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	p := runPlugin(t, dir, 1)
	time.Sleep(500 * time.Millisecond) // a few failed checks
	if p.Registrations() != 0 {
		t.Fatalf("registered %d times with no kubelet", p.Registrations())
	}
	k := devicemanager.Start(t, dir)
	k.Registration(t)
	k.ListOf(t, "1 device", devicemanager.Count(1, pluginapi.Healthy))
}

func TestListAndWatchFollowsChanges(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	p := runPlugin(t, dir, 2)
	k.Registration(t)
	k.ListOf(t, "2 devices", devicemanager.Count(2, pluginapi.Healthy))

	p.Set(5, true)
	k.ListOf(t, "5 devices", devicemanager.Count(5, pluginapi.Healthy))
	p.Set(5, false)
	k.ListOf(t, "5 unhealthy devices", devicemanager.Count(5, pluginapi.Unhealthy))
	p.Set(0, true)
	k.ListOf(t, "no device", devicemanager.Count(0, pluginapi.Healthy))
}

func TestAllocate(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	runPlugin(t, dir, 4)
	k.Registration(t)
	k.ListOf(t, "4 devices", devicemanager.Count(4, pluginapi.Healthy))

	c := k.Client()
	ctx, cancel := context.WithTimeout(context.Background(), devicemanager.Wait)
	defer cancel()
	resp, err := c.Allocate(ctx, &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{
		{DevicesIds: []string{"eni-1"}},
		{DevicesIds: []string{"eni-0", "eni-3"}},
	}})
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("Allocate: %d container responses, want one per request (2)", len(resp.ContainerResponses))
	}
	for i, want := range []string{"eni-1", "eni-0,eni-3"} {
		r := resp.ContainerResponses[i]
		if got := r.Envs[deviceplugin.SlotEnv]; got != want {
			t.Errorf("container %d: %s=%q, want %q", i, deviceplugin.SlotEnv, got, want)
		}
		if len(r.Mounts) != 0 || len(r.Devices) != 0 || len(r.CdiDevices) != 0 {
			t.Errorf("container %d: mounts/devices in %v; an ENI slot needs none", i, r)
		}
	}
	pref, err := c.GetPreferredAllocation(ctx, &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
		{AvailableDeviceIDs: []string{"eni-0", "eni-2", "eni-3"}, MustIncludeDeviceIDs: []string{"eni-2"}, AllocationSize: 2},
	}})
	if err != nil || len(pref.ContainerResponses) != 1 {
		t.Fatalf("GetPreferredAllocation: %v, %v", pref, err)
	}
	if got := pref.ContainerResponses[0].DeviceIDs; len(got) != 2 || got[0] != "eni-2" || got[1] != "eni-0" {
		t.Errorf("preferred allocation %v, want [eni-2 eni-0]", got)
	}
}

// A kubelet restart removes every socket in the folder (ours too) and
// re-creates kubelet.sock: the plugin serves again and registers again.
func TestKubeletRestart(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	p := runPlugin(t, dir, 2)
	k.Registration(t)
	k.ListOf(t, "2 devices", devicemanager.Count(2, pluginapi.Healthy))
	registrations(t, p, 1)

	for round := range 2 {
		k.Stop()
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
		k = devicemanager.Start(t, dir)
		req := k.Registration(t)
		if req.ResourceName != "aliyun/eni" || req.Endpoint != deviceplugin.DefaultSocketName {
			t.Errorf("round %d: re-registration %v", round, req)
		}
		// The kubelet dialled our endpoint again: the socket was re-served.
		k.ListOf(t, "2 devices after the restart", devicemanager.Count(2, pluginapi.Healthy))
		registrations(t, p, round+2)
	}
}

// registrations waits until the plugin counts n registrations, and fails if
// it counts more: one kubelet start is one registration.
func registrations(t *testing.T, p *deviceplugin.Plugin, n int) {
	t.Helper()
	deadline := time.Now().Add(devicemanager.Wait)
	for p.Registrations() < n && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a few more checks: no extra registration
	if got := p.Registrations(); got != n {
		t.Fatalf("%d registrations, want %d", got, n)
	}
}

// On exit the plugin removes its socket and leaves the kubelet's alone.
func TestRunRemovesItsSocket(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	devicemanager.Start(t, dir)
	p := deviceplugin.New(deviceplugin.Config{Dir: dir, Logger: quiet()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	registrations(t, p, 1)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("socket %s still there after Run: %v", p.SocketPath(), err)
	}
	if _, err := os.Stat(p.KubeletSocket()); err != nil {
		t.Errorf("kubelet socket: %v", err)
	}
}

func TestExclusiveSlots(t *testing.T) {
	for _, c := range []struct{ max, foreign, reserved, want int }{
		{4, 0, 0, 3}, {4, 0, 1, 2}, {8, 0, 2, 5}, {8, 1, 2, 4}, {2, 0, 1, 0}, {2, 0, 5, 0}, {3, 4, 0, 0}, {1, 0, 0, 0},
	} {
		got, err := deviceplugin.ExclusiveSlots(c.max, c.foreign, c.reserved)
		if err != nil || got != c.want {
			t.Errorf("ExclusiveSlots(%d, %d, %d) = %d, %v; want %d", c.max, c.foreign, c.reserved, got, err, c.want)
		}
	}
	for _, bad := range [][3]int{{0, 0, 0}, {4, -1, 0}, {4, 0, -1}} {
		if _, err := deviceplugin.ExclusiveSlots(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("ExclusiveSlots%v: no error", bad)
		}
	}
}
