package forward_test

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestForwarderOwnMessages pins, to the byte, the errors the forwarder
// words itself (its formatting, its JSON escapes, its errno texts) and
// what it passes on from an answer: the program has no C library, and
// these are what its own formatter and system calls make.
func TestForwarderOwnMessages(t *testing.T) {
	conf := func(sock string) []byte {
		return fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q}`, sock)
	}
	answer := func(exit, length string, body string) []byte {
		return fmt.Appendf(nil, "HTTP/1.1 200 OK\r\nTerway-Exit: %s\r\nContent-Length: %s\r\n\r\n%s", exit, length, body)
	}
	check := func(t *testing.T, r runOut, code uint, msg string) {
		t.Helper()
		e := parseError(t, r)
		if e.Code != code || e.Msg != msg || e.CNIVersion != "1.1.0" {
			t.Errorf("got code %d, version %q, msg %q; want %d, 1.1.0, %q", e.Code, e.CNIVersion, e.Msg, code, msg)
		}
	}

	t.Run("unknown command", func(t *testing.T) {
		cmd := "B\x01\"D\\" + strings.Repeat("x", 100)
		check(t, run(t, []string{"CNI_COMMAND=" + cmd}, conf("/nowhere.sock")), 4,
			`terway: command (CNI_COMMAND) "`+cmd[:64]+`" is not one of [ADD DEL CHECK GC STATUS] or VERSION`)
	})
	t.Run("socket too long", func(t *testing.T) {
		sock := "/" + strings.Repeat("s", 150)
		check(t, run(t, addEnv("ADD"), conf(sock)), 7,
			`terway network config: field "socket" `+sock+` is longer than 107 bytes`)
	})
	t.Run("connection refused", func(t *testing.T) {
		sock := filepath.Join(tempDir(t), "closed.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		_ = l.Close()
		check(t, run(t, addEnv("DEL"), conf(sock)), 11,
			fmt.Sprintf("terway agent unreachable at %s (DEL): connect: %s", sock, syscall.ECONNREFUSED))
	})
	const notHTTP = "SSH-2.0-OpenSSH_9.2p1\r\nSSH-2.0-OpenSSH_9.2p1\r\n\r\n"
	for _, tc := range []struct {
		name, answer, want string
	}{
		{"exit status too large", string(answer("300", "2", "{}")), "exit status 300, length 2, body 2 bytes"},
		{"exit status negative", string(answer("-1", "2", "{}")), "exit status -1, length 2, body 2 bytes"},
		{"length disagrees", string(answer("0", "1", "{}")), "exit status 0, length 1, body 2 bytes"},
		{"not HTTP", notHTTP, "answer begins " + notHTTP[:40]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, _ := rawAgent(t, []byte(tc.answer))
			check(t, run(t, addEnv("ADD"), conf(sock)), 999,
				fmt.Sprintf("terway agent at %s: ADD: protocol error: %s", sock, tc.want))
		})
	}

	t.Run("a large answer and its exit status", func(t *testing.T) {
		body := bytes.Repeat([]byte("0123456789abcdef"), 8<<10)
		sock, headers := rawAgent(t, answer(" 3", fmt.Sprint(len(body)), string(body)))
		r := run(t, addEnv("CHECK"), conf(sock))
		if r.exit != 3 || r.stdout != string(body) {
			t.Errorf("exit %d, %d bytes on stdout; want 3 and the %d bytes of the answer", r.exit, len(r.stdout), len(body))
		}
		var st syscall.Stat_t
		if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
			t.Fatal(err)
		}
		h := <-headers
		if got, want := h.Get("Terway-Caller-Netns"), fmt.Sprintf("%d:%d", st.Dev, st.Ino); got != want {
			t.Errorf("Terway-Caller-Netns %q, want %q (this process's namespace, which the forwarder shares)", got, want)
		}
		if got := h.Get("Terway-Socket"); got != sock {
			t.Errorf("Terway-Socket %q, want %q", got, sock)
		}
	})
}

// BenchmarkExec measures the CPU an exec of the forwarder costs (its
// VERSION, which asks no agent), beside an exec of the machine's true(1)
// as the baseline: the process's own user and system time, per exec.
func BenchmarkExec(b *testing.B) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		b.Skip("no true(1) for the baseline")
	}
	for _, bin := range []struct{ name, path string }{
		{"forwarder", filepath.Join(binDir, "terway")},
		{"true", truePath},
	} {
		b.Run(bin.name, func(b *testing.B) {
			var cpu time.Duration
			for b.Loop() {
				c := exec.Command(bin.path)
				c.Env = []string{"CNI_COMMAND=VERSION"}
				if err := c.Run(); err != nil {
					b.Fatal(err)
				}
				cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/exec")
		})
	}
}
