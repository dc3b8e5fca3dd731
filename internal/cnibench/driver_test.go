package cnibench

import (
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// rusageThread is getrusage's RUSAGE_THREAD (Linux), which package
// syscall does not name.
const rusageThread = 1

// The CPU account charges a process's CPU to the part it names: here this
// test stands in for the agent (by PID) and is the driver itself, and a
// shell loop it waits for is a plugin.
func TestCPUAccountNamesItsParts(t *testing.T) {
	before, err := sampleCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until this thread has had 200 ms of CPU, however busy the
	// machine is.
	runtime.LockOSThread()
	threadCPU := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(rusageThread, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for start := threadCPU(); threadCPU()-start < 200*time.Millisecond; {
	}
	runtime.UnlockOSThread()
	child := exec.Command("sh", "-c", `i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done`)
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	after, err := sampleCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	c := after.since(before)
	t.Logf("account: %+v", c)
	// /proc counts in ticks of 10 ms.
	if c.Agent < 100*time.Millisecond || c.Driver < 100*time.Millisecond {
		t.Errorf("agent %v, driver %v: want each at least 100ms of this process's 200ms spin", c.Agent, c.Driver)
	}
	if c.Plugins <= 0 {
		t.Errorf("plugins %v: the waited-for shell loop's CPU is missing", c.Plugins)
	}
	if c.Busy < c.Driver {
		t.Errorf("machine-wide busy %v is less than this process's %v", c.Busy, c.Driver)
	}
	if _, err := sampleCPU(1 << 30); err == nil {
		t.Error("sampling a process that does not exist: no error")
	}
}
