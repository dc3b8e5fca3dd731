package kubetest

import (
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	nsh "github.com/vishvananda/netns"

	"github.com/terway-reconciler/terway/apply/netns"
)

// ExposeIn makes the API server reachable from inside the network
// namespace at nsPath, at the same address it has on the host
// (127.0.0.1:port): a component run there with `ip netns exec` (terwayd in
// a test's node namespace) uses the very same kubeconfig and certificate.
//
// The listening socket is made inside the namespace, but this process
// accepts on it and dials the API server from its own namespace: no link,
// route or address is added anywhere. Each connection is forwarded byte for
// byte (TLS stays end to end); when the API server is down, connections are
// accepted and closed at once, as a dead server behind a load balancer looks.
// It stops when the test ends.
func (c *ControlPlane) ExposeIn(t testing.TB, nsPath string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(c.apiPort)
	h, err := nsh.GetFromPath(nsPath)
	if err != nil {
		t.Fatalf("kubetest: expose API server in %s: open namespace: %v", nsPath, err)
	}
	var ln net.Listener
	err = netns.Do(int(h), func() error {
		var err error
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	h.Close()
	if err != nil {
		t.Fatalf("kubetest: expose API server in %s: listen on %s: %v", nsPath, addr, err)
	}
	f := &forwarder{ln: ln, target: addr, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.acceptLoop()
	t.Cleanup(f.close)
}

type forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (f *forwarder) acceptLoop() {
	defer f.wg.Done()
	for {
		down, err := f.ln.Accept()
		if err != nil {
			return
		}
		// Dialled from a goroutine not locked to any namespace switch: the
		// host's loopback, where the API server listens.
		up, err := net.Dial("tcp4", f.target)
		if err != nil {
			down.Close()
			continue
		}
		if !f.track(down, up) {
			return
		}
		f.wg.Add(2)
		go f.pipe(down, up)
		go f.pipe(up, down)
	}
}

// track records a connection pair so close can end it; false after close.
func (f *forwarder) track(conns ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		f.conns[c] = struct{}{}
	}
	return true
}

// pipe copies one direction; when either side ends, both are closed so the
// peer sees the end too.
func (f *forwarder) pipe(dst, src net.Conn) {
	defer f.wg.Done()
	// An error here is a reset when either side goes away: the normal end
	// of a forwarded connection, nothing to report.
	_, _ = io.Copy(dst, src)
	f.mu.Lock()
	delete(f.conns, dst)
	delete(f.conns, src)
	f.mu.Unlock()
	dst.Close()
	src.Close()
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
