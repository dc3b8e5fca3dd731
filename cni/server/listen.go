package server

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/terway-reconciler/terway/cni/wire"
)

// Listen opens the agent's unix socket at path for the plugin to dial.
//
// The socket's directory is created if needed and set to wire.SocketDirMode: a
// wider mode would let any local user send ADD. An existing wider directory
// (a hostPath mount creates 0755) is tightened only if it holds nothing but
// the socket, so a socket configured straight into /run or /tmp fails
// instead of locking everyone else out of a shared directory. A socket file left by a crashed agent is removed; one that still
// answers means another agent is running, and Listen fails rather than
// stealing its address. A path that exists and is not a socket is never
// removed. The socket itself is mode 0600.
func Listen(path string) (net.Listener, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("agent socket %q: not an absolute path", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, wire.SocketDirMode); err != nil {
		return nil, fmt.Errorf("agent socket directory %s: %w", dir, err)
	}
	if err := tightenDir(dir, filepath.Base(path)); err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("agent socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("agent socket %s: setting mode 600: %w", path, err)
	}
	return l, nil
}

// removeStale deletes a socket file nobody listens on any more.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("agent socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("agent socket %s: path exists and is not a socket (mode %s); refusing to remove it", path, fi.Mode())
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return fmt.Errorf("agent socket %s: another process is listening on it (is a second agent running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agent socket %s: removing the stale socket: %w", path, err)
	}
	return nil
}

// tightenDir sets dir to wire.SocketDirMode unless it already is, refusing to
// change a directory that holds anything but the socket named sock.
func tightenDir(dir, sock string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("agent socket directory %s: %w", dir, err)
	}
	if fi.Mode().Perm() == wire.SocketDirMode {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("agent socket directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.Name() != sock {
			return fmt.Errorf("agent socket directory %s: mode is %o, not %o, and it is shared (it holds %q); "+
				"give the socket a directory of its own", dir, fi.Mode().Perm(), wire.SocketDirMode, e.Name())
		}
	}
	if err := os.Chmod(dir, wire.SocketDirMode); err != nil {
		return fmt.Errorf("agent socket directory %s: setting mode %o: %w", dir, wire.SocketDirMode, err)
	}
	return nil
}
