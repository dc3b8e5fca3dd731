// Package chaos lets a test kill terwayd with SIGKILL at a named point of
// its work, to prove that a crash anywhere is repaired by the next start.
// It is inert unless the environment variable TERWAY_CHAOS_KILL_FILE is set
// (never in production): then each point reads that file, and the point the
// file names kills the process once (the file is removed first, so the
// restarted agent is not killed again at the same point).
package chaos

import (
	"os"
	"strings"
	"syscall"
)

// EnvKillFile names the file that arms a kill point (test only).
const EnvKillFile = "TERWAY_CHAOS_KILL_FILE"

// The named points, where a crash leaves the most half-done work.
const (
	// AddAfterStore: an ADD's address is allocated (in VPC mode its store
	// commit may still be under way beside the set-up), nothing is set up
	// yet.
	AddAfterStore = "add-after-store"
	// ApplyMidway: half of a plan's kernel operations are executed.
	ApplyMidway = "apply-midway"
	// ENIAfterCreate: an ENI is created in the cloud, not yet attached.
	ENIAfterCreate = "eni-after-create"
	// ENIAttach: an ENI's attach is requested, it is not ready yet.
	ENIAttach = "eni-attach"
	// ENIAfterAssign: secondary IPs are assigned in the cloud, not yet in
	// the pool.
	ENIAfterAssign = "eni-after-assign"
	// DelAfterRelease: a DEL released the allocation in the store, the
	// pod's kernel objects are still there.
	DelAfterRelease = "del-after-release"
)

// Points lists every named point.
var Points = []string{AddAfterStore, ApplyMidway, ENIAfterCreate, ENIAttach, ENIAfterAssign, DelAfterRelease}

// killFile is read once: the hook costs a string comparison when unset.
var killFile = os.Getenv(EnvKillFile)

// Point kills the process with SIGKILL if the kill file names point;
// otherwise, and always when TERWAY_CHAOS_KILL_FILE is unset, it does
// nothing.
func Point(point string) {
	if killFile == "" {
		return
	}
	data, err := os.ReadFile(killFile)
	if err != nil || strings.TrimSpace(string(data)) != point {
		return
	}
	if os.Remove(killFile) != nil {
		return // another goroutine reached the point first and kills
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught: wait for it to land
}
