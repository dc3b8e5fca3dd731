// Package nstest makes throwaway network namespaces for root tests.
//
// Every namespace is named with a per-run unique prefix, has no link to the
// machine's own network, and is deleted by t.Cleanup, also when the test
// fails. Nothing here touches the namespace the test process runs in.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// RequireRoot skips the test unless it runs as root with ip(8) available.
// CI runs as root, so there these tests always run.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip(8) not found: install iproute2 (.ci/run does)")
	}
}

// RunID is unique per test process; namespace names start with it so that
// parallel runs never collide and leftovers are recognisable.
var RunID = func() string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}()

// runsDir holds one file per test process that made namespaces, named by
// its RunID and holding its PID. t.Cleanup does not run when a test binary
// is killed (a -timeout panic, SIGKILL): the next run deletes the
// namespaces of runs whose process is gone.
const runsDir = "/run/terway-nstest"

var sweepOnce sync.Once

// sweepDeadRuns records this run and deletes the namespaces of earlier runs
// whose process no longer exists. Only names "tt<run>-..." of a run with a
// record are touched; a run whose PID is alive (or reused) is left alone.
func sweepDeadRuns() {
	if err := os.MkdirAll(runsDir, 0o700); err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(runsDir, RunID), []byte(strconv.Itoa(os.Getpid())), 0o600)
	entries, err := os.ReadDir(runsDir)
	if err != nil {
		return
	}
	var dead []string
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(runsDir, e.Name()))
		pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
		if e.Name() == RunID || err != nil || perr != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			dead = append(dead, e.Name())
		}
	}
	if len(dead) == 0 {
		return
	}
	names, _ := os.ReadDir("/var/run/netns")
	for _, run := range dead {
		for _, n := range names {
			if strings.HasPrefix(n.Name(), "tt"+run+"-") {
				_ = exec.Command("ip", "netns", "del", n.Name()).Run()
			}
		}
		_ = os.Remove(filepath.Join(runsDir, run))
	}
}

// Netns creates a named namespace "tt<run>-<name>" with lo up and returns its
// path (/var/run/netns/NAME). It is deleted when the test ends, or by the
// next run if this one is killed first.
func Netns(t testing.TB, name string) string {
	t.Helper()
	RequireRoot(t)
	sweepOnce.Do(sweepDeadRuns)
	full := "tt" + RunID + "-" + name
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", full, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", full).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", full, err, out)
		}
	})
	Run(t, full, "ip", "link", "set", "lo", "up")
	return "/var/run/netns/" + full
}

// Name returns the bare namespace name of a path made by Netns.
func Name(path string) string { return strings.TrimPrefix(path, "/var/run/netns/") }

// Run runs a command inside the namespace (path or name) and returns its
// combined output, failing the test on error.
func Run(t testing.TB, ns string, args ...string) string {
	t.Helper()
	out, err := Exec(ns, args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", Name(ns), strings.Join(args, " "), err, out)
	}
	return out
}

// Exec runs a command inside the namespace and returns output and error.
func Exec(ns string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", Name(ns)}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%w", err)
	}
	return string(out), nil
}

// PodDump is what a pod sees of its network, as ip(8) prints it: IPv4
// addresses (the kernel changes an IPv6 link-local address's state by
// itself), neighbours, routes and links. Tests compare two dumps to show a
// namespace was left byte-identical.
func PodDump(t testing.TB, ns string) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{{"ip", "-d", "-4", "addr"}, {"ip", "neigh"}, {"ip", "route"}, {"ip", "-d", "link"}} {
		out := Run(t, ns, args...)
		// ip(8) says so on a peer whose namespace the kernel is still
		// tearing down (another test's pod): not this namespace's state.
		out = strings.ReplaceAll(out, "Error: Peer netns reference is invalid.\n", "")
		b.WriteString("$ " + strings.Join(args, " ") + "\n" + out)
	}
	return b.String()
}
