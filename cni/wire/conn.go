package wire

import (
	"context"
	"os"
	"syscall"
)

// dialAgent connects to the agent's unix socket with plain system calls
// rather than package net. The plugin binary is started for every CNI
// call, and linking net costs each start its package initialisation and
// the poller: 0.6 to 0.7 ms of CPU per ADD on a paravirtual VM, where page
// faults and thread creation are dear (median CPU of 400 ADDs against a
// stub agent, run alternately with the version that used net).
//
// The connect does not wait: a unix connect completes at once or, when
// the agent's accept backlog is full, fails with EAGAIN, which is reported
// as unreachable as package net did. The socket is then made blocking, so
// that its reads and writes never involve the runtime's poller, and ctx's
// end shuts it down, which wakes a read or write blocked on it.
func dialAgent(ctx context.Context, path string) (*agentConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, &dialError{err: err}
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, &dialError{err: os.NewSyscallError("socket", err)}
	}
	if err := syscall.Connect(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		_ = syscall.Close(fd)
		return nil, &dialError{err: os.NewSyscallError("connect", err)}
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		_ = syscall.Close(fd)
		return nil, &dialError{err: os.NewSyscallError("fcntl", err)}
	}
	// The file owns fd from here on; os.NewFile leaves a blocking fd out
	// of the poller.
	c := &agentConn{File: os.NewFile(uintptr(fd), path)}
	raw, err := c.SyscallConn()
	if err != nil {
		_ = c.File.Close()
		return nil, &dialError{err: err}
	}
	// Through the file, so that a shutdown racing with Close never reaches
	// a descriptor number the process has since reused.
	c.stop = context.AfterFunc(ctx, func() {
		_ = raw.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	})
	return c, nil
}

// agentConn is a connected socket to the agent.
type agentConn struct {
	*os.File
	stop func() bool // unregisters the shutdown on ctx's end
}

// Close releases the socket.
func (c *agentConn) Close() error {
	c.stop()
	return c.File.Close()
}
