// Package emulator is a loopback Alibaba Cloud for tests: it speaks the ECS
// (2014-05-26) and VPC (2016-04-28) RPC protocol well enough that the
// unmodified alibaba-cloud-sdk-go works against it, checks signatures, keeps
// the state of a VPC with its vSwitches, instances, ENIs and IPs, moves ENIs
// through the cloud's asynchronous status machine, injects faults, and
// serves the instance metadata API of the instances.
//
// It binds to 127.0.0.1 only and never sends a packet anywhere else. A Hook
// lets a test plug an attached ENI into a simulated node as a real link
// (see package simlink).
package emulator

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Emulator is one emulated region. All methods are safe for concurrent use.
type Emulator struct {
	world *World
	log   *slog.Logger

	mu        sync.Mutex
	keys      map[string]string // AccessKeyId -> secret
	sts       map[string]*stsCredential
	nonces    map[string]time.Time
	vswitches map[string]*vswitchState
	vswOrder  []string
	types     map[string]InstanceType
	instances map[string]*instanceState
	instOrder []string
	enis      map[string]*eniState
	macs      map[string]string // MAC -> ENI id
	eniSeq    int
	// tokens remembers successful responses by action and ClientToken.
	tokens map[string]idempotent
	// imdsTokens are the IMDSv2 tokens handed out, with their expiry.
	imdsTokens map[string]time.Time
	calls      map[string]int
	injected   map[string]int
	faults     map[string]*faultState
	rng        *rand.Rand
	hook       Hook
	reqSeq     uint64

	noncesPruned                          time.Time
	attachDelay, detachDelay, deleteDelay time.Duration
	metadataLag                           time.Duration

	closed  bool
	done    chan struct{}
	wg      sync.WaitGroup
	servers []*http.Server
	apiAddr string
	metaURL string
}

// Default async transition times: long enough that a client must really
// wait for InUse / Available / gone, short enough for fast tests.
const (
	DefaultAttachDelay = 200 * time.Millisecond
	DefaultDetachDelay = 200 * time.Millisecond
	DefaultDeleteDelay = 100 * time.Millisecond
)

// New validates the world and builds the emulator's state from it: every
// instance gets its primary ENI (InUse, device index 0).
func New(w *World) (*Emulator, error) {
	if w == nil {
		return nil, errors.New("emulator: world is nil")
	}
	if err := w.Validate(); err != nil {
		return nil, err
	}
	w = w.clone() // the caller may go on changing its copy
	e := &Emulator{
		world: w, log: slog.Default(),
		keys: map[string]string{}, sts: map[string]*stsCredential{}, nonces: map[string]time.Time{},
		vswitches: map[string]*vswitchState{}, types: map[string]InstanceType{},
		instances: map[string]*instanceState{}, enis: map[string]*eniState{}, macs: map[string]string{},
		tokens: map[string]idempotent{}, imdsTokens: map[string]time.Time{},
		calls: map[string]int{}, injected: map[string]int{}, faults: map[string]*faultState{},
		rng:         rand.New(rand.NewPCG(1, 2)),
		attachDelay: DefaultAttachDelay, detachDelay: DefaultDetachDelay, deleteDelay: DefaultDeleteDelay,
		done: make(chan struct{}),
	}
	for _, k := range w.AccessKeys {
		e.keys[k.ID] = k.Secret
	}
	for _, s := range w.VSwitches {
		vs := &vswitchState{VSwitch: s, pool: newPool(netip.MustParsePrefix(s.CIDR))}
		e.vswitches[s.ID] = vs
		e.vswOrder = append(e.vswOrder, s.ID)
	}
	for _, t := range w.InstanceTypes {
		e.types[t.ID] = t
	}
	now := e.now()
	// Primary ENIs with fixed addresses first, so that an automatic one
	// cannot take an address another instance names.
	for pass := 0; pass < 2; pass++ {
		for _, in := range w.Instances {
			if (in.PrimaryIP != "") != (pass == 0) {
				continue
			}
			if in.Status == "" {
				in.Status = "Running"
			}
			is := &instanceState{Instance: in, typ: e.types[in.InstanceType], created: now}
			var primary netip.Addr
			if in.PrimaryIP != "" {
				primary = netip.MustParseAddr(in.PrimaryIP)
			}
			n, aerr := e.addENI(e.vswitches[in.VSwitchID], typePrimary, primary, nil, 0, now)
			if aerr != nil {
				return nil, fmt.Errorf("world: instances: primary ENI of %s: %s", in.ID, aerr.Message)
			}
			n.status, n.instanceID, n.deviceIndex, n.plugged, n.attachedAt = statusInUse, in.ID, 0, true, now
			is.PrimaryIP = n.primaryIP.String()
			e.instances[in.ID] = is
		}
	}
	for _, in := range w.Instances {
		e.instOrder = append(e.instOrder, in.ID)
	}
	// Caps apply after the primary ENIs took their addresses.
	for _, s := range w.VSwitches {
		if s.Available > 0 {
			e.vswitches[s.ID].pool.setAvailable(s.Available)
		}
	}
	return e, nil
}

func (e *Emulator) now() time.Time { return time.Now() }

// SetLogger sets where the emulator logs its decisions (default
// slog.Default()). Call it before Start.
func (e *Emulator) SetLogger(l *slog.Logger) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = l
}

// isLoopbackAddr accepts only 127.0.0.1:PORT: the emulator must never be
// reachable from, or confused with, a real network.
func isLoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("address %q: only 127.0.0.1 is allowed", addr)
	}
	return nil
}

// Start listens for API calls on apiAddr and metadata requests on
// metadataAddr (both 127.0.0.1:PORT, port 0 picks a free one; an empty
// metadataAddr runs no metadata service). The metadata service describes
// the world's first instance.
func (e *Emulator) Start(apiAddr, metadataAddr string) error {
	if err := isLoopbackAddr(apiAddr); err != nil {
		return fmt.Errorf("emulator: api listener: %w", err)
	}
	if metadataAddr != "" {
		if err := isLoopbackAddr(metadataAddr); err != nil {
			return fmt.Errorf("emulator: metadata listener: %w", err)
		}
	}
	e.mu.Lock()
	started := e.apiAddr != ""
	e.mu.Unlock()
	if started {
		return errors.New("emulator: already started")
	}
	api, err := e.serve(apiAddr, http.HandlerFunc(e.serveAPI))
	if err != nil {
		return fmt.Errorf("emulator: api listener: %w", err)
	}
	e.mu.Lock()
	e.apiAddr = api
	e.mu.Unlock()
	if metadataAddr != "" {
		meta, err := e.ServeMetadata(e.world.Instances[0].ID, metadataAddr)
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.metaURL = meta
		e.mu.Unlock()
	}
	return nil
}

// ServeMetadata starts one more metadata service, for the given instance,
// and returns its base URL (http://127.0.0.1:PORT). Tests with several
// nodes give each node its own.
func (e *Emulator) ServeMetadata(instanceID, addr string) (string, error) {
	if err := isLoopbackAddr(addr); err != nil {
		return "", fmt.Errorf("emulator: metadata listener for %s: %w", instanceID, err)
	}
	e.mu.Lock()
	_, ok := e.instances[instanceID]
	e.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("emulator: metadata listener: instance %q is not in the world", instanceID)
	}
	bound, err := e.serve(addr, &metadataServer{e: e, instanceID: instanceID})
	if err != nil {
		return "", fmt.Errorf("emulator: metadata listener for %s: %w", instanceID, err)
	}
	return "http://" + bound, nil
}

func (e *Emulator) serve(addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		ln.Close()
		return "", errors.New("emulator is closed")
	}
	e.servers = append(e.servers, srv)
	e.wg.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("emulator listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return ln.Addr().String(), nil
}

// Close stops the listeners and the pending asynchronous transitions (an
// ENI caught Attaching stays so). It is safe to call twice.
func (e *Emulator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	servers := e.servers
	e.mu.Unlock()
	var errs []error
	for _, s := range servers {
		// Close, not Shutdown: a handler may be sleeping for an injected
		// latency, and tests want Close to be prompt.
		if err := s.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	close(e.done)
	e.wg.Wait()
	return errors.Join(errs...)
}

// Info is what a client needs to talk to the emulator.
type Info struct {
	Endpoint        string `json:"endpoint"`
	RegionID        string `json:"regionId"`
	AccessKeyID     string `json:"accessKeyId"`
	AccessKeySecret string `json:"accessKeySecret"`
	InstanceID      string `json:"instanceId"`
	Metadata        string `json:"metadata"`
}

// Info returns the endpoint (host:port, for the SDK client's Domain), the
// first access key, the first instance and the metadata base URL.
func (e *Emulator) Info() Info {
	e.mu.Lock()
	defer e.mu.Unlock()
	info := Info{
		Endpoint:        e.apiAddr,
		RegionID:        e.world.RegionID,
		AccessKeyID:     e.world.AccessKeys[0].ID,
		AccessKeySecret: e.world.AccessKeys[0].Secret,
		InstanceID:      e.world.Instances[0].ID,
	}
	info.Metadata = e.metaURL
	return info
}

// SetAsyncDelay sets how long Attaching, Detaching and Deleting last.
// Transitions already started keep their old delay.
func (e *Emulator) SetAsyncDelay(attach, detach, delete time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attachDelay, e.detachDelay, e.deleteDelay = attach, detach, delete
}

// SetMetadataLag makes newly assigned secondary IPs appear in the metadata
// service's private-ipv4s only after d, as the cloud's metadata trails its API.
func (e *Emulator) SetMetadataLag(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.metadataLag = d
}

// SetVSwitchAvailable makes exactly n more IPs allocatable in the vSwitch,
// as if other tenants held the rest (n is clamped to the free addresses of
// its CIDR). With 0, creating an ENI or assigning IPs there fails with
// InvalidVSwitchId.IpNotEnough; releasing an IP frees one again.
func (e *Emulator) SetVSwitchAvailable(vswitchID string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	vs, ok := e.vswitches[vswitchID]
	if !ok {
		e.log.Warn("SetVSwitchAvailable: no such vSwitch", "vswitch", vswitchID)
		return
	}
	vs.pool.setAvailable(n)
}

// SetInstanceStatus changes an instance's status (e.g. Stopping, to see an
// attach refused).
func (e *Emulator) SetInstanceStatus(instanceID, status string) error {
	if !instanceStatuses[status] {
		return fmt.Errorf("emulator: instance %s: status %q is not one of Running, Stopped, Pending, Starting, Stopping", instanceID, status)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.instances[instanceID]
	if !ok {
		return fmt.Errorf("emulator: instance %q is not in the world", instanceID)
	}
	in.Status = status
	return nil
}

// ENIInfo describes an ENI to a Hook: what a NIC plugged into the node
// needs (MAC) and what a simulated VPC needs (vSwitch CIDR and gateway).
type ENIInfo struct {
	ID           string
	MAC          string
	PrimaryIP    string
	VSwitchID    string
	VSwitchCIDR  string
	GatewayIP    string
	DeviceIndex  int
	SecondaryIPs []string
}

// Hook is told when an attach completes (before the ENI becomes InUse; an
// error fails the attach) and when a detach completes. It runs without the
// emulator's lock held and may take its time (netlink work).
type Hook interface {
	ENIAttached(instanceID string, eni ENIInfo) error
	ENIDetached(instanceID string, eni ENIInfo) error
}

// IPHook is an optional part of a Hook: told when the IPs of a plugged ENI
// change (assign, unassign), as the VPC learns which ENI holds which
// address. A simulated vswitch needs it to deliver to a secondary IP.
type IPHook interface {
	ENIIPsChanged(instanceID string, eni ENIInfo) error
}

// notifyIPs tells an IPHook about the ENI's addresses after the call (with
// the lock released); a failure is logged, the change stands, as in the
// cloud.
func (e *Emulator) notifyIPs(c *call, n *eniState) {
	h, ok := e.hook.(IPHook)
	if !ok || !n.plugged {
		return
	}
	info, inst := e.eniInfo(n), n.instanceID
	c.after = append(c.after, func() {
		if err := h.ENIIPsChanged(inst, info); err != nil {
			e.log.Warn("IP hook failed", "eni", info.ID, "instance", inst, "err", err)
		}
	})
}

// SetHook sets the hook (nil for none).
func (e *Emulator) SetHook(h Hook) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hook = h
}

func (e *Emulator) eniInfo(n *eniState) ENIInfo {
	info := ENIInfo{
		ID: n.id, MAC: n.mac, PrimaryIP: n.primaryIP.String(), VSwitchID: n.vsw.ID,
		VSwitchCIDR: n.vsw.CIDR, GatewayIP: n.vsw.pool.gateway.String(), DeviceIndex: n.deviceIndex,
	}
	for _, a := range n.secondary {
		info.SecondaryIPs = append(info.SecondaryIPs, a.String())
	}
	return info
}

// Calls returns how many requests reached each action (including refused
// and faulted ones).
func (e *Emulator) Calls() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.calls))
	for k, v := range e.calls {
		out[k] = v
	}
	return out
}
