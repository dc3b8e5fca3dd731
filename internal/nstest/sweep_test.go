package nstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestSweepDeadRuns: the namespaces of a run whose process is gone (a test
// binary killed before its cleanups) are deleted by the next run; those of
// a live run are not.
func TestSweepDeadRuns(t *testing.T) {
	RequireRoot(t)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{"dead01": gone.Process.Pid, "live01": os.Getpid()}
	for run, pid := range runs {
		name := "tt" + run + "-sweep"
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		if err := os.MkdirAll(runsDir, 0o700); err != nil {
			t.Fatal(err)
		}
		record := filepath.Join(runsDir, run)
		if err := os.WriteFile(record, []byte(strconv.Itoa(pid)), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Remove(record) })
	}
	sweepDeadRuns()
	if _, err := os.Stat("/var/run/netns/ttdead01-sweep"); !os.IsNotExist(err) {
		t.Errorf("the dead run's namespace is still there (%v)", err)
	}
	if _, err := os.Stat("/var/run/netns/ttlive01-sweep"); err != nil {
		t.Errorf("the live run's namespace was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(runsDir, "dead01")); !os.IsNotExist(err) {
		t.Errorf("the dead run's record is still there (%v)", err)
	}
}
