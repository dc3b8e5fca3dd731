// Package traffic sends real TCP and UDP traffic between network
// namespaces: echo servers, reachability probes and throughput
// measurements. A socket belongs to the namespace it was created in, so each
// socket is opened on a thread switched into the namespace and then used from
// ordinary goroutines.
package traffic

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/apply/netns"
	nsh "github.com/vishvananda/netns"
)

// inNetns runs fn inside the namespace at path ("" = the current one).
func inNetns(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	h, err := nsh.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", path, err)
	}
	defer h.Close()
	return netns.Do(int(h), fn)
}

// Server is an echo server for TCP and UDP on one address in a namespace.
type Server struct {
	tcp  net.Listener
	udp  net.PacketConn
	wg   sync.WaitGroup
	once sync.Once
}

// Serve starts echo servers on addr ("198.18.0.10:80") for the protocols
// named ("tcp", "udp") inside the namespace.
func Serve(nsPath, addr string, protocols ...string) (*Server, error) {
	s := &Server{}
	err := inNetns(nsPath, func() error {
		for _, p := range protocols {
			switch p {
			case "tcp":
				l, err := net.Listen("tcp4", addr)
				if err != nil {
					return err
				}
				s.tcp = l
			case "udp":
				c, err := net.ListenPacket("udp4", addr)
				if err != nil {
					return err
				}
				s.udp = c
			default:
				return fmt.Errorf("protocol %q: want tcp or udp", p)
			}
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("serve %s in %s: %w", addr, nsPath, err)
	}
	if s.tcp != nil {
		s.wg.Add(1)
		go s.acceptLoop()
	}
	if s.udp != nil {
		s.wg.Add(1)
		go s.udpLoop()
	}
	return s, nil
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func (s *Server) udpLoop() {
	defer s.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = s.udp.WriteTo(buf[:n], from)
	}
}

// Close stops the server and waits for its goroutines.
func (s *Server) Close() {
	s.once.Do(func() {
		if s.tcp != nil {
			s.tcp.Close()
		}
		if s.udp != nil {
			s.udp.Close()
		}
	})
	s.wg.Wait()
}

// Dial opens a connection from inside a namespace.
func Dial(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(nsPath, func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Probe reports whether an echo round trip to addr succeeds from the
// namespace within timeout. For UDP, a lost datagram or an ICMP error both
// mean unreachable; one retry covers a lost first packet.
func Probe(nsPath, protocol, addr string, timeout time.Duration) bool {
	attempts := 1
	if protocol == "udp" {
		attempts = 2
	}
	for i := 0; i < attempts; i++ {
		if probeOnce(nsPath, protocol, addr, timeout/time.Duration(attempts)) == nil {
			return true
		}
	}
	return false
}

func probeOnce(nsPath, protocol, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := Dial(ctx, nsPath, protocol+"4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("terway-probe")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != string(msg) {
		return errors.New("echo mismatch")
	}
	return nil
}

// Throughput sends data over TCP from the namespace to addr (an echo server)
// for the duration and returns the rate the receiver's echo came back at,
// in bytes per second, measured after a warm-up that drains the TBF bucket.
// The echo doubles the traffic on the return path, so the slower of the two
// directions limits the result: shape only one of them.
func Throughput(nsPath, addr string, warmup, duration time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), warmup+duration+10*time.Second)
	defer cancel()
	c, err := Dial(ctx, nsPath, "tcp4", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		buf := make([]byte, 32*1024)
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	defer close(done)
	buf := make([]byte, 64*1024)
	readFor := func(d time.Duration) (int64, time.Duration, error) {
		var n int64
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(d))
		for time.Since(start) < d {
			m, err := c.Read(buf)
			n += int64(m)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return n, time.Since(start), err
			}
		}
		return n, time.Since(start), nil
	}
	if _, _, err := readFor(warmup); err != nil {
		return 0, err
	}
	n, elapsed, err := readFor(duration)
	if err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}
