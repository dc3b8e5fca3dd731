package realnode

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// closeInheritedOnExec marks every file descriptor above stderr close-on-
// exec. Go opens its own files that way, but descriptors this process
// inherited are not, and the node's daemons would inherit them in turn and
// keep them for the node's lifetime: a `flock LOCK make node-up` would
// leave the lock held by the kubelet until `node-down`.
func closeInheritedOnExec() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("realnode: list open files: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		// The directory's own descriptor is gone by now: EBADF is fine.
		if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, syscall.FD_CLOEXEC); errno != 0 && errno != syscall.EBADF {
			return fmt.Errorf("realnode: close-on-exec for fd %d: %w", fd, errno)
		}
	}
	return nil
}
