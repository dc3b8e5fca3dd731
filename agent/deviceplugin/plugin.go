// Package deviceplugin advertises the aliyun/eni resource to the kubelet
// through the device plugin API v1beta1, so that the scheduler places a pod
// that requests a whole ENI only on a node that has one to give.
//
// The devices are counted slots, not hardware: the kubelet needs a list of
// device ids to count and to hand out, and the ENI itself is chosen by the
// agent's exclusive-ENI path when the CNI ADD comes. The plugin serves the
// DevicePlugin service on a unix socket in the kubelet's device-plugins
// folder, registers it with the kubelet, and registers again whenever the
// kubelet restarts (it removes every socket there and re-creates its own).
package deviceplugin

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// ResourceName is the extended resource a pod requests for an exclusive ENI
// (the name Terway uses, so existing pod specs keep working).
const ResourceName = "aliyun/eni"

// Defaults.
const (
	// DefaultDir is the kubelet's device-plugins folder.
	DefaultDir = "/var/lib/kubelet/device-plugins"
	// DefaultSocketName is our socket in that folder; the kubelet removes
	// it on restart, which is one of the signs we watch for.
	DefaultSocketName = "terway-eni.sock"
	// KubeletSocketName is the kubelet's Registration service.
	KubeletSocketName = "kubelet.sock"
	// A check a second re-registers within a few seconds of a kubelet
	// restart even if no file event arrives (a watched folder that was
	// removed and re-created loses its watch), at the cost of two stats.
	DefaultCheckInterval = time.Second
	// SlotEnv names the slot(s) a container was given, for debugging; the
	// ENI itself is found by the agent, not by the container.
	SlotEnv = "TERWAY_ENI_SLOTS"
)

// Config configures a Plugin. Unset fields get the defaults above.
type Config struct {
	// Dir is the kubelet's device-plugins folder (tests use a temp dir).
	Dir string
	// SocketName is our socket's file name in Dir.
	SocketName string
	// ResourceName is the resource advertised (default aliyun/eni).
	ResourceName  string
	CheckInterval time.Duration
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	if c.SocketName == "" {
		c.SocketName = DefaultSocketName
	}
	if c.ResourceName == "" {
		c.ResourceName = ResourceName
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Plugin is the aliyun/eni device plugin: the DevicePlugin gRPC service and
// the loop that keeps it registered (register.go).
type Plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	cfg Config
	log *slog.Logger

	mu      sync.Mutex // guards the fields below
	count   int
	healthy bool
	// changed is closed (and replaced) when count or health changes, to
	// wake every ListAndWatch stream.
	changed chan struct{}
	// registrations counts successful Register calls, for Status.
	registrations int
}

// New prepares a plugin advertising no device until Set is called.
func New(cfg Config) *Plugin {
	cfg = cfg.withDefaults()
	return &Plugin{cfg: cfg, log: cfg.Logger, healthy: true, changed: make(chan struct{})}
}

// SocketPath is where the plugin serves.
func (p *Plugin) SocketPath() string { return filepath.Join(p.cfg.Dir, p.cfg.SocketName) }

// KubeletSocket is where the kubelet's Registration service is.
func (p *Plugin) KubeletSocket() string { return filepath.Join(p.cfg.Dir, KubeletSocketName) }

// Set makes the advertised list n devices, all healthy or all unhealthy
// (an unhealthy device is counted in capacity but not allocatable, so new
// pods wait instead of failing while the agent cannot serve them). Streams
// get a new list only when something changed.
func (p *Plugin) Set(n int, healthy bool) {
	n = max(n, 0)
	p.mu.Lock()
	defer p.mu.Unlock()
	if n == p.count && healthy == p.healthy {
		return
	}
	p.log.Info("device plugin: devices changed", "resource", p.cfg.ResourceName, "count", n, "healthy", healthy, "was", p.count, "wasHealthy", p.healthy)
	p.count, p.healthy = n, healthy
	close(p.changed)
	p.changed = make(chan struct{})
}

// Count is the number of devices advertised.
func (p *Plugin) Count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Registrations counts successful registrations with the kubelet.
func (p *Plugin) Registrations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.registrations
}

// devices is the current list and the channel closed at its next change.
func (p *Plugin) devices() ([]*pluginapi.Device, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	health := pluginapi.Healthy
	if !p.healthy {
		health = pluginapi.Unhealthy
	}
	out := make([]*pluginapi.Device, p.count)
	for i := range out {
		out[i] = &pluginapi.Device{ID: slotID(i), Health: health}
	}
	return out, p.changed
}

// slotID names slot i; stable ids keep the kubelet's checkpoint of which
// pod holds which slot valid across our restarts.
func slotID(i int) string { return fmt.Sprintf("eni-%d", i) }

func (p *Plugin) options() *pluginapi.DevicePluginOptions {
	// No PreStartContainer (nothing to prepare per container) and no
	// preferred allocation (slots are interchangeable).
	return &pluginapi.DevicePluginOptions{}
}

// GetDevicePluginOptions is the kubelet's first call after registration.
func (p *Plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return p.options(), nil
}

// ListAndWatch sends the device list now and again at every change, until
// the kubelet hangs up or the server stops.
func (p *Plugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	for {
		list, changed := p.devices()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: list}); err != nil {
			return fmt.Errorf("device plugin: send the device list: %w", err)
		}
		select {
		case <-stream.Context().Done():
			return nil
		case <-changed:
		}
	}
}

// Allocate answers every container request: the slots need nothing in the
// container (the agent moves the ENI into the pod at CNI ADD), so each
// answer only names the slots in an environment variable.
func (p *Plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.GetContainerRequests() {
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{SlotEnv: strings.Join(c.GetDevicesIds(), ",")},
		})
	}
	p.log.Debug("device plugin: allocate", "containers", len(req.GetContainerRequests()))
	return resp, nil
}

// GetPreferredAllocation is not advertised (options); it answers anyway,
// with the devices that must be included and then the first available.
func (p *Plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, c := range req.GetContainerRequests() {
		ids := append([]string(nil), c.GetMustIncludeDeviceIDs()...)
		for _, id := range c.GetAvailableDeviceIDs() {
			if len(ids) >= int(c.GetAllocationSize()) {
				break
			}
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// PreStartContainer is not required (options); it has nothing to do.
func (p *Plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}
