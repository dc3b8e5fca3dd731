package chaos

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// The test runs itself as a child with the kill file set and reaches a
// point: armed for that point the child dies by SIGKILL and the file is
// gone; armed for another point, or unset, the child lives.
func TestPoint(t *testing.T) {
	if p := os.Getenv("CHAOS_TEST_REACH"); p != "" {
		Point(p)
		os.Exit(0)
	}
	file := filepath.Join(t.TempDir(), "kill")
	run := func(env ...string) error {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestPoint$")
		cmd.Env = append(os.Environ(), env...)
		return cmd.Run()
	}
	killed := func(err error) bool {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return false
		}
		ws, ok := ee.Sys().(syscall.WaitStatus)
		return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
	}
	arm := func(point string) {
		if err := os.WriteFile(file, []byte(point+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	arm(ENIAttach)
	if err := run("CHAOS_TEST_REACH="+AddAfterStore, EnvKillFile+"="+file); err != nil {
		t.Fatalf("armed for %s, reaching %s: %v, want a normal exit", ENIAttach, AddAfterStore, err)
	}
	if err := run("CHAOS_TEST_REACH="+ENIAttach, EnvKillFile+"="+file); !killed(err) {
		t.Fatalf("armed for %s, reaching it: %v, want SIGKILL", ENIAttach, err)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("the kill file is still there after its kill: %v", err)
	}
	// One shot: the next run (the restarted agent) passes the point.
	if err := run("CHAOS_TEST_REACH="+ENIAttach, EnvKillFile+"="+file); err != nil {
		t.Fatalf("after the kill, reaching %s again: %v", ENIAttach, err)
	}
	// Without the variable the hook is inert, whatever the file says.
	arm(ENIAttach)
	if err := run("CHAOS_TEST_REACH="+ENIAttach, EnvKillFile+"="); err != nil {
		t.Fatalf("unset %s: %v", EnvKillFile, err)
	}
}
