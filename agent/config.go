// Package agent is terwayd, the node agent: it allocates pod addresses
// (persisted before any answer), renders the node's document from its inputs
// and converges the kernel to it, serves the CNI plugin over a unix socket,
// and repairs drift with a periodic full resync.
package agent

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/render"
)

// Config configures an Agent. Each default is in WithDefaults, with its reason.
type Config struct {
	// NodeName is this node (the DaemonSet sets NODE_NAME).
	NodeName string
	// StateDir holds the allocation store.
	StateDir string
	// Socket is where the CNI plugin finds the agent.
	Socket string
	// Render is the rendering configuration (mode, MTU, service CIDR...).
	Render render.Config
	// ResyncInterval is the period of the full resync that repairs drift.
	ResyncInterval time.Duration
	// SyncTimeout bounds how long a CNI ADD waits for the inputs' first
	// complete listing before answering "try again later".
	SyncTimeout time.Duration
	// PodTimeout bounds how long ADD waits for the Pod object to reach the
	// cache (the kubelet can be faster than the watch).
	PodTimeout time.Duration
	// MinSyncInterval is the least time between the end of one sync and
	// the start of the next: changes that arrive meanwhile are coalesced.
	MinSyncInterval time.Duration
	// PeerAdmissionDelay bounds how long a pod set up waits, while ADDs
	// keep arriving, to be admitted as a policy peer of the node's other
	// pods (admission.go); an agent that has had no ADD for 100 ms
	// (admitQuiet) admits it then.
	PeerAdmissionDelay time.Duration
	// AdmitBeforeAnswer makes an ADD admit its pods as policy peers before
	// it answers: a pod's first connections to policy-protected local peers
	// never wait for the admission, and its ADD costs in proportion to the
	// policies that admit it.
	AdmitBeforeAnswer bool
	// HealthAddr serves /healthz, /readyz, /status, /metrics, /plan and
	// /applied; empty disables.
	HealthAddr string
	// EnablePprof also serves /debug/pprof on HealthAddr. Off by default:
	// profiles show memory contents and cost CPU, and the address is open
	// to every local user and hostNetwork pod.
	EnablePprof bool
	Logger      *slog.Logger
	// Events, when set, receives Kubernetes Events about pods whose network
	// is not what they asked for (events.go); nil, in standalone mode,
	// logs them only.
	Events typedcorev1.EventsGetter
	// ENI hands out cloud addresses: in eni-multi-ip mode every pod's (a
	// secondary IP, or a whole ENI for a pod requesting aliyun/eni); in
	// VPC mode, when cloud configuration is given, only the whole ENIs of
	// pods requesting aliyun/eni. Nil in VPC mode without cloud access:
	// every address comes from the node's podCIDR. Its ReservedShared is
	// the reservedENIsForMultiIP the device plugin's count honours.
	ENI *eni.Reconciler
	// DevicePluginDir is the kubelet's device-plugins folder, where the
	// agent serves the aliyun/eni device plugin (device_plugin.go); empty:
	// no device plugin (standalone runs and tests without a kubelet).
	DevicePluginDir string
}

// Defaults.
const (
	DefaultStateDir = "/var/lib/terway"
	DefaultSocket   = "/var/run/terway/terway.sock"
	// A resync every 30 s bounds how long drift (someone deleting a route)
	// lasts, at a cost of one observation of the node.
	DefaultResyncInterval = 30 * time.Second
	// The kubelet gives a CNI ADD minutes; 30 s of waiting for the first
	// listing covers an API server that is slow at agent start.
	DefaultSyncTimeout = 30 * time.Second
	// Watches deliver a bound pod within a second or two on a healthy
	// cluster; beyond 10 s the pod starts without its object (no policy
	// yet) rather than failing.
	DefaultPodTimeout = 10 * time.Second
	// A pod is admitted by its local peers at most about 1 s after its ADD
	// while ADDs keep coming (100 ms after the last ADD otherwise; a pod
	// of another node has such a delay too: its address reaches this
	// node's watch only after its kubelet has posted the pod's status),
	// long enough that a burst of ADDs runs before its admission rather
	// than beside it. At 200 ms, steps ran inside every burst of 50 ADDs
	// at 1,000 policies and the ADD p50 was 1.61 to 1.86 times the 10-pod
	// one, against 1.34 to 1.47 at 1 s (BENCHMARKS.md, "Stop 37").
	DefaultPeerAdmissionDelay = time.Second
	// Loopback only: health and metrics are for the kubelet's probes and a
	// local scraper, not for the world.
	DefaultHealthAddr = "127.0.0.1:9482"
)

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.ResyncInterval == 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.MinSyncInterval == 0 {
		c.MinSyncInterval = DefaultMinSyncInterval
	}
	if c.PeerAdmissionDelay == 0 {
		c.PeerAdmissionDelay = DefaultPeerAdmissionDelay
	}
	if c.SyncTimeout == 0 {
		c.SyncTimeout = DefaultSyncTimeout
	}
	if c.PodTimeout == 0 {
		c.PodTimeout = DefaultPodTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Render = c.Render.WithDefaults()
	return c
}

// Validate reports a configuration the agent cannot run with.
func (c Config) Validate() error {
	switch {
	case c.NodeName == "":
		return fmt.Errorf("agent config: nodeName: empty (set --node-name or NODE_NAME)")
	case !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("agent config: stateDir: %q is not an absolute path", c.StateDir)
	case !filepath.IsAbs(c.Socket):
		return fmt.Errorf("agent config: socket: %q is not an absolute path", c.Socket)
	case c.ResyncInterval < time.Second:
		return fmt.Errorf("agent config: resyncInterval: %s is below 1s", c.ResyncInterval)
	case c.DevicePluginDir != "" && !filepath.IsAbs(c.DevicePluginDir):
		return fmt.Errorf("agent config: devicePluginDir: %q is not an absolute path", c.DevicePluginDir)
	case c.PeerAdmissionDelay < 0 || c.PeerAdmissionDelay > c.ResyncInterval:
		return fmt.Errorf("agent config: peerAdmissionDelay: %s is not between 0 and resyncInterval (%s)", c.PeerAdmissionDelay, c.ResyncInterval)
	case c.MinSyncInterval < 0 || c.MinSyncInterval > c.ResyncInterval:
		return fmt.Errorf("agent config: minSyncInterval: %s is not between 0 and resyncInterval (%s)", c.MinSyncInterval, c.ResyncInterval)
	}
	return c.Render.Validate()
}

// StorePath is the allocation store's file.
func (c Config) StorePath() string { return filepath.Join(c.StateDir, "allocations.db") }
