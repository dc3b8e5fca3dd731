// Package devicemanager plays the kubelet's device manager for tests of a
// device plugin: the Registration service on kubelet.sock, and the calls
// the kubelet makes back to a plugin once it has registered, over real
// gRPC on unix sockets.
package devicemanager

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Wait bounds every wait for the plugin: generous, since tests assert that
// something happens, not how fast.
const Wait = 20 * time.Second

// Kubelet plays the kubelet's device manager: it serves Registration on
// kubelet.sock in dir and, like the kubelet, dials each registered plugin
// back, asks its options and follows its ListAndWatch stream.
type Kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	dir string
	srv *grpc.Server

	regs chan *pluginapi.RegisterRequest
	// lists receives every device list the plugin sends.
	lists chan []*pluginapi.Device
	mu    sync.Mutex
	conns []*grpc.ClientConn
	// client is the last connection to the plugin, for Allocate.
	client pluginapi.DevicePluginClient
}

// Start serves kubelet.sock in dir until Stop or the end of the test.
func Start(t *testing.T, dir string) *Kubelet {
	t.Helper()
	k := &Kubelet{dir: dir, regs: make(chan *pluginapi.RegisterRequest, 10), lists: make(chan []*pluginapi.Device, 100)}
	ln, err := net.Listen("unix", filepath.Join(dir, "kubelet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	k.srv = grpc.NewServer()
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(ln) }()
	t.Cleanup(k.Stop)
	return k
}

// Stop is the kubelet going away: its server (closing the listener removes
// kubelet.sock) and its streams to plugins.
func (k *Kubelet) Stop() {
	k.srv.Stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

// Register records the request and follows the plugin, as the kubelet does.
func (k *Kubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
	k.regs <- req
	conn, err := grpc.NewClient("unix://"+filepath.Join(k.dir, req.Endpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	c := pluginapi.NewDevicePluginClient(conn)
	k.mu.Lock()
	k.conns = append(k.conns, conn)
	k.client = c
	k.mu.Unlock()
	// As the kubelet does: answer the registration, then talk to the
	// plugin from another goroutine.
	go func() {
		ctx := context.Background()
		// Failures end the stream silently: they come after Stop (the
		// test may be over), and a test sees them as a missing list.
		if _, err := c.GetDevicePluginOptions(ctx, &pluginapi.Empty{}); err != nil {
			return
		}
		stream, err := c.ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			return
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}
			k.lists <- resp.Devices
		}
	}()
	return &pluginapi.Empty{}, nil
}

// Registration waits for the next Register call.
func (k *Kubelet) Registration(t *testing.T) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.regs:
		return r
	case <-time.After(Wait):
		t.Fatalf("the plugin did not register within %s", Wait)
		return nil
	}
}

// ListOf waits for a device list that satisfies ok and returns it.
func (k *Kubelet) ListOf(t *testing.T, what string, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	t.Helper()
	deadline := time.After(Wait)
	for {
		select {
		case l := <-k.lists:
			if ok(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no device list with %s within %s", what, Wait)
		}
	}
}

// Count matches a list of n devices, all with the given health.
func Count(n int, health string) func([]*pluginapi.Device) bool {
	return func(l []*pluginapi.Device) bool {
		if len(l) != n {
			return false
		}
		for _, d := range l {
			if d.Health != health {
				return false
			}
		}
		return true
	}
}

// Client is the connection to the last registered plugin.
func (k *Kubelet) Client() pluginapi.DevicePluginClient {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.client
}

// ShortDir is a temp folder with a path short enough for a unix socket
// (108 bytes); t.TempDir's can be longer.
func ShortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
