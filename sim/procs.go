package sim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The sim's processes outlive the `up` command that starts them, so each
// runs in its own session with its output in Dir/logs. Each carries the
// sim's folder on its command line: `down` ends exactly the processes whose
// command line names that folder, also when a crashed `up` never recorded
// their PIDs, and never a process it did not start.

// startDaemon starts args in the background with output to logName in the
// sim's log folder and returns its PID.
func startDaemon(dir, logName string, args []string, env []string) (int, error) {
	logFile, err := openLog(dir, logName)
	if err != nil {
		return 0, err
	}
	defer logFile.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	pid := cmd.Process.Pid
	// Reap it in the background while this process lives, so a child that
	// exits early does not linger as a zombie that looks alive.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// openLog opens (appending) a log file in the sim's log folder.
func openLog(dir, logName string) (*os.File, error) {
	logs := filepath.Join(dir, "logs")
	if err := os.MkdirAll(logs, 0o700); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(logs, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
}

// startReady starts args like startDaemon but waits until the process
// prints "ready" on its first stdout line (the pod servers do once they
// listen), or fails with the process's log.
func startReady(dir, logName string, args []string, timeout time.Duration) (int, error) {
	pid, _, err := startFirstLine(dir, logName, args, timeout, func(l string) bool { return l == "ready" })
	return pid, err
}

// startFirstLine starts args like startDaemon and waits for its first
// stdout line, which accept must like (the emulator prints its endpoint and
// credentials there).
func startFirstLine(dir, logName string, args []string, timeout time.Duration, accept func(string) bool) (int, string, error) {
	logFile, err := openLog(dir, logName)
	if err != nil {
		return 0, "", err
	}
	logPath := logFile.Name()
	defer logFile.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return 0, "", err
	}
	defer r.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = w, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, "", fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	go func() { _ = cmd.Wait() }()
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if accept(l) {
			return cmd.Process.Pid, l, nil
		}
	case <-time.After(timeout):
	}
	_ = cmd.Process.Kill()
	out, _ := os.ReadFile(logPath)
	return 0, "", fmt.Errorf("%s did not become ready: %s", strings.Join(args, " "), lastLines(string(out), 5))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ownedBy reports whether pid runs a command line naming the folder.
func ownedBy(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if a := string(arg); a == dir || strings.HasPrefix(a, dir+"/") || strings.HasSuffix(a, "="+dir) || strings.Contains(a, "="+dir+"/") {
			return true
		}
	}
	return false
}

// processesOf lists every running process whose command line names dir.
func processesOf(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if ownedBy(pid, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive reports whether pid runs. A zombie is gone for our purposes (its
// parent reaps it). Unlike ownedBy it does not read the command line,
// which is briefly empty while `ip netns exec` becomes the program it runs.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return false
	}
	return true
}

// stop ends the processes (SIGTERM, then SIGKILL after grace) and waits
// until they are gone.
func stop(pids []int, dir string, grace time.Duration) {
	for _, pid := range pids {
		if ownedBy(pid, dir) {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(grace)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if alive(pid) && ownedBy(pid, dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			for i := 0; i < 100 && alive(pid); i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}
