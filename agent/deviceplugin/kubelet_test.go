package deviceplugin_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
)

// wait bounds every wait for the plugin: generous, since the tests assert
// that something happens, not how fast.
const wait = 20 * time.Second

// kubelet plays the kubelet's device manager: it serves Registration on
// kubelet.sock in dir and, like the kubelet, dials each registered plugin
// back, asks its options and follows its ListAndWatch stream.
type kubelet struct {
	pluginapi.UnimplementedRegistrationServer
	t   *testing.T
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

func startKubelet(t *testing.T, dir string) *kubelet {
	t.Helper()
	k := &kubelet{t: t, dir: dir, regs: make(chan *pluginapi.RegisterRequest, 10), lists: make(chan []*pluginapi.Device, 100)}
	ln, err := net.Listen("unix", filepath.Join(dir, deviceplugin.KubeletSocketName))
	if err != nil {
		t.Fatal(err)
	}
	k.srv = grpc.NewServer()
	pluginapi.RegisterRegistrationServer(k.srv, k)
	go func() { _ = k.srv.Serve(ln) }()
	t.Cleanup(k.stop)
	return k
}

// stop is the kubelet going away: its server and its streams to plugins.
func (k *kubelet) stop() {
	k.srv.Stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		c.Close()
	}
	k.conns = nil
}

func (k *kubelet) Register(_ context.Context, req *pluginapi.RegisterRequest) (*pluginapi.Empty, error) {
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
		if _, err := c.GetDevicePluginOptions(ctx, &pluginapi.Empty{}); err != nil {
			k.t.Logf("fake kubelet: GetDevicePluginOptions: %v", err)
			return
		}
		stream, err := c.ListAndWatch(ctx, &pluginapi.Empty{})
		if err != nil {
			k.t.Logf("fake kubelet: ListAndWatch: %v", err)
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

func (k *kubelet) registration(t *testing.T) *pluginapi.RegisterRequest {
	t.Helper()
	select {
	case r := <-k.regs:
		return r
	case <-time.After(wait):
		t.Fatalf("the plugin did not register within %s", wait)
		return nil
	}
}

// listOf waits for a device list that satisfies ok and returns it.
func (k *kubelet) listOf(t *testing.T, what string, ok func([]*pluginapi.Device) bool) []*pluginapi.Device {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case l := <-k.lists:
			if ok(l) {
				return l
			}
		case <-deadline:
			t.Fatalf("no device list with %s within %s", what, wait)
		}
	}
}

func count(n int, health string) func([]*pluginapi.Device) bool {
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

func quiet() *slog.Logger {
	if os.Getenv("TERWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// shortDir is a temp folder with a path short enough for a unix socket
// (108 bytes); t.TempDir's can be longer.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// runPlugin runs a plugin in dir until the test ends.
func runPlugin(t *testing.T, dir string, n int) *deviceplugin.Plugin {
	t.Helper()
	p := deviceplugin.New(deviceplugin.Config{Dir: dir, Logger: quiet(), CheckInterval: 200 * time.Millisecond})
	p.Set(n, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}
