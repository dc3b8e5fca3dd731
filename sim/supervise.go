package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// A DaemonSet's pod is restarted by the kubelet when its container dies,
// with a back-off that doubles up to a ceiling and resets once the
// container has run for a while. The sim plays that kubelet with a small
// supervisor process (`terwayctl sim supervise`) that `up` starts and that
// outlives `up`, like the agent it runs. It records the agent it runs now in
// Dir/agent.json, so that people and tests signal exactly that process.
// `down` ends the supervisor before anything else: a supervisor left alive
// would restart the agent `down` just stopped.

// Default restart back-off of the sim's supervisor.
const (
	// DefaultRestartBackoff is the first restart's delay (the kubelet
	// starts at 10s; a sim is for watching recovery, so it is quicker).
	DefaultRestartBackoff = 500 * time.Millisecond
	// DefaultRestartBackoffMax caps the doubling delay.
	DefaultRestartBackoffMax = 10 * time.Second
)

// AgentProcess is the agent the supervisor runs now.
type AgentProcess struct {
	PID int `json:"pid"`
	// Restarts counts the agent's restarts since `up` (0: the first run).
	Restarts int       `json:"restarts"`
	Started  time.Time `json:"started"`
}

func agentFile(dir string) string { return filepath.Join(dir, "agent.json") }

// Agent reads the agent process the supervisor runs now. It fails while
// the supervisor has not started one yet.
func (st *State) Agent() (AgentProcess, error) {
	var p AgentProcess
	data, err := os.ReadFile(agentFile(st.Dir))
	if err != nil {
		return p, fmt.Errorf("sim %s: no agent process recorded: %w", st.Name, err)
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return p, fmt.Errorf("sim %s: %s: %w", st.Name, agentFile(st.Dir), err)
	}
	return p, nil
}

// WaitAgentRestarted waits until the supervisor runs an agent newer than
// the one with PID old and that agent is ready.
func (st *State) WaitAgentRestarted(ctx context.Context, old int, timeout time.Duration) (AgentProcess, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := st.Agent()
		if err == nil && p.PID != old && alive(p.PID) {
			if err := st.waitReady(ctx, time.Until(deadline), false); err == nil {
				return p, nil
			} else if time.Now().After(deadline) {
				return p, err
			}
			continue // restarted again meanwhile
		}
		if time.Now().After(deadline) {
			return p, fmt.Errorf("sim %s: the agent (pid %d) was not restarted within %s: %s", st.Name, old, timeout, st.agentLog())
		}
		select {
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// SuperviseOptions are the supervisor's back-off bounds.
type SuperviseOptions struct {
	Backoff, BackoffMax time.Duration
	// Log receives one line per start and exit.
	Log io.Writer
}

// Supervise runs args (the agent) in dir's sim until ctx ends, restarting
// it whenever it exits, after a delay that doubles from Backoff to
// BackoffMax and resets once the agent ran BackoffMax without exiting.
// When ctx ends it stops the agent (SIGTERM, then SIGKILL) and returns.
func Supervise(ctx context.Context, dir string, args []string, o SuperviseOptions) error {
	if len(args) == 0 {
		return errors.New("supervise: no command to run")
	}
	if o.Backoff <= 0 {
		o.Backoff = DefaultRestartBackoff
	}
	if o.BackoffMax < o.Backoff {
		o.BackoffMax = max(DefaultRestartBackoffMax, o.Backoff)
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, time.Now().UTC().Format(time.RFC3339Nano)+" "+format+"\n", a...)
		}
	}
	delay := o.Backoff
	for restarts := 0; ; restarts++ {
		logFile, err := openLog(dir, "terwayd.log")
		if err != nil {
			return err
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		err = cmd.Start()
		logFile.Close()
		if err != nil {
			// Not a crash of the agent: nothing a restart would fix.
			return fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
		}
		started := time.Now()
		rec, _ := json.Marshal(AgentProcess{PID: cmd.Process.Pid, Restarts: restarts, Started: started.UTC()})
		if err := writeAtomic(agentFile(dir), rec); err != nil {
			logf("record agent pid %d: %v", cmd.Process.Pid, err)
		}
		logf("agent started: pid %d, restart %d", cmd.Process.Pid, restarts)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
			logf("agent pid %d stopped; supervisor exits", cmd.Process.Pid)
			return nil
		case err := <-exited:
			ran := time.Since(started)
			if ran >= o.BackoffMax {
				delay = o.Backoff // it ran long enough: a fresh crash, not a loop
			}
			logf("agent pid %d exited after %s (%v); restarting in %s", cmd.Process.Pid, ran.Round(time.Millisecond), err, delay)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, o.BackoffMax)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// isSupervisor reports whether pid is the supervisor of the sim in dir.
func isSupervisor(pid int, dir string) bool {
	if !ownedBy(pid, dir) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmdline), "\x00supervise\x00")
}

// supervisorsOf lists the running supervisors of the sim in dir (one, or
// more after a crashed `up`).
func supervisorsOf(dir string) []int {
	var out []int
	for _, pid := range processesOf(dir) {
		if isSupervisor(pid, dir) {
			out = append(out, pid)
		}
	}
	return out
}
