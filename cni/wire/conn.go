package wire

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
)

// dialAgent connects to the agent's unix socket with plain blocking system
// calls rather than package net. The plugin binary is started for every
// CNI call, and linking net costs each start its package initialisation
// and the poller: 0.6 to 0.7 ms of CPU per ADD on a paravirtual VM, where
// page faults and thread creation are dear (median CPU of 400 ADDs against
// a stub agent, run alternately with the version that used net).
//
// The connection is closed when ctx ends: its deadline or cancellation
// shuts the socket down, which wakes a read or write blocked on it.
// Connecting itself is bounded by the deadline through SO_SNDTIMEO, since
// a unix connect blocks only while the agent's accept backlog is full.
func dialAgent(ctx context.Context, path string) (*agentConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &dialError{err: err}
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &dialError{err: os.NewSyscallError("socket", err)}
	}
	// The file owns fd from here on, and a blocking fd never reaches the
	// runtime's poller.
	c := &agentConn{file: os.NewFile(uintptr(fd), path)}
	if deadline, ok := ctx.Deadline(); ok {
		left := time.Until(deadline)
		if left <= 0 {
			_ = c.file.Close()
			return nil, &dialError{err: os.ErrDeadlineExceeded}
		}
		// A zero timeval would mean no timeout at all.
		tv := syscall.NsecToTimeval(max(left.Nanoseconds(), int64(time.Microsecond)))
		if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
			_ = c.file.Close()
			return nil, &dialError{err: os.NewSyscallError("setsockopt SO_SNDTIMEO", err)}
		}
	}
	if err := connectUnix(fd, path); err != nil {
		_ = c.file.Close()
		return nil, &dialError{err: err}
	}
	raw, err := c.file.SyscallConn()
	if err != nil {
		_ = c.file.Close()
		return nil, &dialError{err: err}
	}
	// Through the file, so that a shutdown racing with Close never reaches
	// a descriptor number the process has since reused.
	c.stop = context.AfterFunc(ctx, func() {
		_ = raw.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	})
	return c, nil
}

// connectUnix connects fd to path, retrying a connect a signal
// interrupted (with a send timeout set, the kernel does not restart it).
func connectUnix(fd int, path string) error {
	addr := &syscall.SockaddrUnix{Name: path}
	for {
		err := syscall.Connect(fd, addr)
		switch {
		case err == nil, errors.Is(err, syscall.EISCONN):
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			// SO_SNDTIMEO expired waiting for room in the backlog.
			return os.ErrDeadlineExceeded
		}
		return os.NewSyscallError("connect", err)
	}
}

// agentConn is a connected socket to the agent.
type agentConn struct {
	file *os.File
	stop func() bool // unregisters the shutdown on ctx's end
}

func (c *agentConn) Read(b []byte) (int, error)  { return c.file.Read(b) }
func (c *agentConn) Write(b []byte) (int, error) { return c.file.Write(b) }

// Close releases the socket.
func (c *agentConn) Close() error {
	c.stop()
	return c.file.Close()
}
