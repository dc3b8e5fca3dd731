package simlink

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/internal/nstest"
)

// A kernel test, as root, in two namespaces it makes: attaching an ENI
// through the emulator plugs a link with the ENI's MAC into the node
// namespace, wired to a bridge holding the vSwitch gateway in the vpc
// namespace; real traffic reaches the gateway; detaching removes the link.
func TestLinkerThroughEmulator(t *testing.T) {
	node := nstest.Netns(t, "snode")
	vpc := nstest.Netns(t, "svpc")

	l := New(node, vpc)
	// Registered after the namespaces' cleanups, so it runs before them.
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Linker.Close: %v", err)
		}
	})
	e, err := emulator.New(emulator.DefaultWorld())
	if err != nil {
		t.Fatal(err)
	}
	e.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.SetAsyncDelay(50*time.Millisecond, 50*time.Millisecond, 20*time.Millisecond)
	e.SetHook(l)
	if err := e.Start("127.0.0.1:0", ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	info := e.Info()
	c, err := ecs.NewClientWithAccessKey(info.RegionID, info.AccessKeyID, info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = info.Endpoint
	c.SetNoProxy("127.0.0.1")

	w := emulator.DefaultWorld()
	cr := ecs.CreateCreateNetworkInterfaceRequest()
	cr.VSwitchId, cr.SecurityGroupId = w.VSwitches[0].ID, w.SecurityGroupID
	created, err := c.CreateNetworkInterface(cr)
	if err != nil {
		t.Fatal(err)
	}
	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = created.NetworkInterfaceId, info.InstanceID
	if _, err := c.AttachNetworkInterface(att); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, created.NetworkInterfaceId, "InUse")

	// The node end: the ENI's MAC, down, named ens-…
	name := NodeLinkName(created.MacAddress)
	out := nstest.Run(t, node, "ip", "-o", "link", "show", "dev", name)
	if !strings.Contains(out, "link/ether "+created.MacAddress) || strings.Contains(out, ",UP") {
		t.Errorf("node link %s: want MAC %s and down, got %s", name, created.MacAddress, out)
	}
	// The vpc end: a bridge with the gateway's address, the veth enslaved.
	br := BridgeName(w.VSwitches[0].ID)
	if out := nstest.Run(t, vpc, "ip", "-o", "addr", "show", "dev", br); !strings.Contains(out, "198.18.64.1/20") {
		t.Errorf("bridge %s: want 198.18.64.1/20, got %s", br, out)
	}
	if out := nstest.Run(t, vpc, "ip", "-o", "link", "show", "master", br); !strings.Contains(out, VPCLinkName(created.MacAddress)) {
		t.Errorf("bridge %s ports: %s", br, out)
	}

	// Configure the ENI as the agent would and reach the gateway.
	nstest.Run(t, node, "ip", "link", "set", name, "up")
	nstest.Run(t, node, "ip", "addr", "add", created.PrivateIpAddress+"/20", "dev", name)
	// No ping on every machine: a TCP connect to a closed port of the
	// gateway is refused only if the SYN crossed the pair and the bridge
	// and the RST came back.
	out, err = nstest.Exec(node, "timeout", "5", "bash", "-c", "echo > /dev/tcp/198.18.64.1/9")
	if err == nil || !strings.Contains(out, "Connection refused") {
		t.Errorf("TCP to the gateway 198.18.64.1:9: want connection refused, got %v: %s", err, out)
	}

	det := ecs.CreateDetachNetworkInterfaceRequest()
	det.NetworkInterfaceId, det.InstanceId = created.NetworkInterfaceId, info.InstanceID
	if _, err := c.DetachNetworkInterface(det); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, created.NetworkInterfaceId, "Available")
	if out, err := nstest.Exec(node, "ip", "link", "show", "dev", name); err == nil {
		t.Errorf("node link %s still there after detach: %s", name, out)
	}

	// Attach again (the pair is made anew), then Close removes everything.
	if _, err := c.AttachNetworkInterface(att); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, created.NetworkInterfaceId, "InUse")
	nstest.Run(t, node, "ip", "link", "show", "dev", name)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := nstest.Exec(vpc, "ip", "link", "show", "dev", br); err == nil {
		t.Errorf("bridge %s still there after Close: %s", br, out)
	}
	if out, err := nstest.Exec(node, "ip", "link", "show", "dev", name); err == nil {
		t.Errorf("node link %s still there after Close: %s", name, out)
	}
}

func TestNames(t *testing.T) {
	if got := NodeLinkName("00:16:3E:AA:BB:CC"); got != "ens-aabbcc" {
		t.Errorf("NodeLinkName: %s", got)
	}
	if got := BridgeName("vsw-emu000000000000000h"); len(got) > 15 || !strings.HasPrefix(got, "br-") {
		t.Errorf("BridgeName: %s", got)
	}
}

func waitStatus(t *testing.T, e *emulator.Emulator, id, status string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if n, ok := e.Dump().ENI(id); ok && n.Status == status {
			return
		}
		if time.Now().After(deadline) {
			n, _ := e.Dump().ENI(id)
			t.Fatalf("ENI %s: want %s, got %s", id, status, n.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
