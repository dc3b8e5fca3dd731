package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Exclusive waits until no other holder runs a node from stateDir's
// machine (default /var/tmp/terway-realnode), then holds the lock until
// release. Test packages that each bring up a node take it for the
// node's lifetime: `go test -p 2 ./...` would otherwise run two kubelets,
// two control planes and two image imports at once on a small machine. The
// lock is a flock: it goes with the process, also when it is killed.
func Exclusive(stateDir string) (release func(), err error) {
	if stateDir == "" {
		var c Config
		c.Defaults()
		stateDir = c.StateDir
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(stateDir, ".node.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("realnode: lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
