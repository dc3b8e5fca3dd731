package forward_test

// Runs the binary directly, as a runtime would but with inputs no libcni
// would produce: junk on stdin, broken environments, signals. The checks
// are the agent's (package plugin, run in-process by NewHandler): these
// show they reach the runtime as the Go plugin gave them.

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cni/wire"
)

type runOut struct {
	stdout, stderr string
	exit           int
}

// cniError is the error JSON the plugin prints.
type cniError struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details"`
}

// command builds the plugin process with exactly env (no inherited
// variables, so nothing from the test's environment leaks in).
func command(env []string, stdin []byte) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	c := exec.Command(filepath.Join(binDir, "terway"))
	c.Env = env
	c.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	return c, &out, &errb
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("running terway: %v", err)
	}
	return 0
}

func run(t *testing.T, env []string, stdin []byte) runOut {
	t.Helper()
	c, out, errb := command(env, stdin)
	err := c.Run()
	return runOut{out.String(), errb.String(), exitCode(t, err)}
}

// addEnv is a complete ADD environment.
func addEnv(cmd string) []string {
	return []string{
		"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=c1", "CNI_NETNS=/var/run/netns/cni-test-c1",
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir, "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
	}
}

func parseError(t *testing.T, r runOut) cniError {
	t.Helper()
	if r.exit != 1 {
		t.Fatalf("exit %d, want 1; stdout %q stderr %q", r.exit, r.stdout, r.stderr)
	}
	var e cniError
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil {
		t.Fatalf("stdout is not a CNI error: %v: %q", err, r.stdout)
	}
	return e
}

// TestGarbageStdin: every check of the config is the agent's, reached at
// the config's socket, and gives the precise error.
func TestGarbageStdin(t *testing.T) {
	agent := &fakeAgent{}
	sock := startAgent(t, agent)
	socket := fmt.Sprintf(`"socket":%q,`, sock)
	huge := append([]byte(`{`+socket+`"cniVersion":"1.1.0","name":"n","type":"terway","pad":"`), bytes.Repeat([]byte("x"), 5<<20)...)
	for _, tc := range []struct {
		name  string
		cmd   string
		stdin []byte
		code  uint
		want  string
	}{
		{"no cniVersion", "ADD", []byte(`{` + socket + `"name":"n","type":"terway"}`), 7, `"cniVersion" is missing`},
		{"no name", "ADD", []byte(`{` + socket + `"cniVersion":"1.1.0","type":"terway"}`), 7, `"name" is missing`},
		{"no type", "ADD", []byte(`{` + socket + `"cniVersion":"1.1.0","name":"n"}`), 7, `"type" is missing`},
		{"too large", "ADD", huge, 7, "larger than"},
		{"truncated", "STATUS", []byte(`{` + socket + `"cniVersion":"1.1.0","name":`), 6, "not a JSON object"},
		{"check without prevResult", "CHECK", []byte(`{` + socket + `"cniVersion":"1.1.0","name":"n","type":"terway"}`), 7, `"prevResult" is missing`},
		{"socket not a string", "DEL", []byte(`{"socket":1,"cniVersion":"1.1.0","name":"n","type":"terway"}`), 6, `field "socket"`},
		{"socket relative", "DEL", []byte(`{"socket":"x.sock","cniVersion":"1.1.0","name":"n","type":"terway"}`), 7, `field "socket" "x.sock" is not an absolute path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := parseError(t, run(t, addEnv(tc.cmd), tc.stdin))
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
				t.Errorf("got %d %q (%s), want %d with %q", e.Code, e.Msg, e.Details, tc.code, tc.want)
			}
		})
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("the agent's handler saw %d calls for bad configs", n)
	}
}

// TestGarbageStdinAgentDown: a config the forwarder cannot read as an
// object has no socket to ask; with no agent at the default socket either,
// the forwarder says what it sees, naming stdin and the unreachable agent.
func TestGarbageStdinAgentDown(t *testing.T) {
	if _, err := os.Stat(wire.DefaultSocketPath); err == nil {
		t.Skipf("an agent's socket is at %s", wire.DefaultSocketPath)
	}
	for _, tc := range []struct {
		name  string
		stdin []byte
		want  string
	}{
		{"binary junk", []byte{0x00, 0xff, 0x13, 'G', 'I', 'F'}, "not a JSON object"},
		{"text junk", []byte("hello world\n"), "not a JSON object"},
		{"empty", nil, "no network config"},
		{"json array", []byte(`["cniVersion"]`), "not a JSON object"},
		{"two objects", []byte(`{"cniVersion":"1.1.0"}{}`), "not a JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := parseError(t, run(t, addEnv("ADD"), tc.stdin))
			if e.Code != 6 || !strings.Contains(e.Msg, tc.want) || !strings.Contains(e.Details, "unreachable at "+wire.DefaultSocketPath) {
				t.Errorf("got %d %q (%s), want 6 with %q, the agent unreachable", e.Code, e.Msg, e.Details, tc.want)
			}
		})
	}
}

func TestBrokenEnvironment(t *testing.T) {
	agent := &fakeAgent{}
	sock := startAgent(t, agent)
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q}`, sock)

	// An unknown command is the forwarder's to refuse: it never reaches
	// an agent, here not even an existing one.
	e := parseError(t, run(t, []string{"CNI_COMMAND=FROB", "CNI_PATH=/x"}, []byte(`{"cniVersion":"1.1.0","name":"n","type":"terway","socket":"/nonexistent/t.sock"}`)))
	if e.Code != 4 || !strings.Contains(e.Msg, "FROB") || e.CNIVersion != "1.1.0" {
		t.Errorf("unknown command: %+v", e)
	}
	e = parseError(t, run(t, []string{"CNI_COMMAND=ADD", "CNI_IFNAME=eth0", "CNI_NETNS=/n", "CNI_PATH=/x"}, conf))
	if e.Code != 4 || !strings.Contains(e.Msg, "CNI_CONTAINERID") {
		t.Errorf("missing CNI_CONTAINERID: %+v", e)
	}
	env := append(addEnv("ADD"), "CNI_ARGS=K8S_POD_NAMESPACE=default;garbage")
	e = parseError(t, run(t, env, conf))
	if e.Code != 4 || !strings.Contains(e.Msg, `"garbage"`) {
		t.Errorf("mangled CNI_ARGS: %+v", e)
	}
	if e.CNIVersion != "1.1.0" {
		t.Errorf("error lacks the config's cniVersion: %+v", e)
	}
	if n := len(agent.Calls()); n != 0 {
		t.Errorf("the agent's handler saw %d calls for broken environments", n)
	}

	// No command: the binary says what it is and exits 0, as skel plugins do.
	r := run(t, nil, nil)
	if r.exit != 0 || r.stdout != "" || !strings.Contains(r.stderr, "CNI plugin terway") || !strings.Contains(r.stderr, "0.4.0, 1.0.0, 1.1.0") {
		t.Errorf("no command: %+v", r)
	}
}

func TestStatusPrintsNothingOnSuccess(t *testing.T) {
	agent := &fakeAgent{}
	sock := startAgent(t, agent)
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q}`, sock)
	r := run(t, []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir}, conf)
	if r.exit != 0 || r.stdout != "" {
		t.Errorf("STATUS: %+v", r)
	}
	// GC and STATUS need 1.1.0: an older config is refused by version.
	old := fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"n","type":"terway","socket":%q}`, sock)
	if e := parseError(t, run(t, []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir}, old)); e.Code != 1 {
		t.Errorf("STATUS on 1.0.0: %+v", e)
	}
	if n := len(agent.Calls()); n != 1 {
		t.Errorf("agent saw %d calls, want 1", n)
	}
}

// TestSIGTERMEndsAWaitingCall: a plugin stopped by a signal while the agent
// works ends at once, and the agent learns the caller is gone. It prints
// nothing: like the CNI project's own plugins it leaves SIGTERM to Go's
// default (the runtimes stop a plugin with SIGKILL anyway).
func TestSIGTERMEndsAWaitingCall(t *testing.T) {
	agent := &fakeAgent{block: true}
	sock := startAgent(t, agent)
	conf := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q}`, sock)
	c, out, _ := command(addEnv("ADD"), conf)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; len(agent.Calls()) == 0; i++ {
		if i == 3000 {
			_ = c.Process.Kill()
			t.Fatal("the plugin never reached the agent")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("after SIGTERM the plugin ended with %v, want an exit by the signal", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("after SIGTERM the plugin ended with %v, want killed by SIGTERM", err)
	}
	if out.Len() != 0 {
		t.Errorf("the plugin printed %q after SIGTERM, want nothing", out.String())
	}
	waitCancelled(t, agent)
}

// TestForwarderIsStatic: the runtime starts this binary for every pod's
// ADD and DEL; a dynamic one would map the loader and libc each time.
func TestForwarderIsStatic(t *testing.T) {
	f, err := elf.Open(filepath.Join(binDir, "terway"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the terway binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the terway binary needs shared libraries %v", libs)
	}
}
