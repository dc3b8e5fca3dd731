package traffic

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// ConnRate opens TCP connections from the namespace to addr (an echo
// server) one after another for the duration, each a connect, one byte
// there and back, and a close, and returns connections per second. It is
// the cost of a new flow through the node's datapath and policy, which is
// what a policy count changes; a bulk transfer would hide it.
//
// The whole loop runs on one thread switched into the namespace, so that
// entering the namespace is paid once rather than per connection. Each
// connection is closed with a reset (linger 0): a FIN would leave tens of
// thousands of sockets in TIME_WAIT and exhaust the ephemeral ports of a
// few runs.
func ConnRate(nsPath, addr string, duration time.Duration) (float64, error) {
	var n int
	var elapsed time.Duration
	err := inNetns(nsPath, func() error {
		var d net.Dialer
		buf := []byte{'x'}
		start := time.Now()
		for time.Since(start) < duration {
			if err := connectOnce(&d, addr, buf); err != nil {
				return fmt.Errorf("connection %d to %s: %w", n+1, addr, err)
			}
			n++
		}
		elapsed = time.Since(start)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

func connectOnce(d *net.Dialer, addr string, buf []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return err
	}
	tc := c.(*net.TCPConn)
	defer tc.Close()
	_ = tc.SetLinger(0)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := tc.Write(buf); err != nil {
		return err
	}
	_, err = io.ReadFull(tc, buf)
	return err
}
