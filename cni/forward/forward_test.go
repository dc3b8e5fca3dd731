package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cni/forward"
	"github.com/terway-reconciler/terway/cni/plugin"
	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
)

// TestVersionAsThePlugin: VERSION and the forwarder's constants are the
// Go side's, which the forwarder cannot import.
func TestVersionAsThePlugin(t *testing.T) {
	var want bytes.Buffer
	getenv := func(k string) string { return map[string]string{"CNI_COMMAND": "VERSION"}[k] }
	if code := plugin.Invoke(context.Background(), getenv, strings.NewReader(""), &want, &want, &plugin.Plugin{}); code != 0 {
		t.Fatalf("the plugin's VERSION exited %d", code)
	}
	got := run(t, []string{"CNI_COMMAND=VERSION"}, nil)
	if got.exit != 0 || got.stdout != want.String() {
		t.Errorf("VERSION: forwarder %q (exit %d), plugin %q", got.stdout, got.exit, want.String())
	}
	src := string(forward.Source)
	for _, c := range []struct{ pattern, want string }{
		{`#define DEFAULT_SOCKET "([^"]*)"`, wire.DefaultSocketPath},
		{`#define MAX_MESSAGE \((\d+ << \d+)\)`, "4 << 20"},
		{`Content-Type: ([^\\]*)\\r\\n`, forward.ContentType},
		{`"POST ([^ ]*) HTTP/1.1`, forward.Path},
		{`"(Terway-Caller-Netns): `, forward.CallerNetnsHeader},
		{`strncasecmp\(line, "(Terway-Exit):"`, forward.ExitHeader},
	} {
		m := regexp.MustCompile(c.pattern).FindStringSubmatch(src)
		if m == nil || m[1] != c.want {
			t.Errorf("terway.c: %s: found %q, want %q", c.pattern, m, c.want)
		}
	}
	if wire.MaxMessageBytes != 4<<20 {
		t.Errorf("wire.MaxMessageBytes is %d: change MAX_MESSAGE in terway.c and this test", wire.MaxMessageBytes)
	}
	if !strings.Contains(src, strings.Join(plugin.SupportedVersions, ", ")) {
		t.Errorf("terway.c's ABOUT does not list %v", plugin.SupportedVersions)
	}
}

// TestFirstOfARepeatedVariable: the agent reads a variable given twice as
// the forwarder's getenv does, the first.
func TestFirstOfARepeatedVariable(t *testing.T) {
	h := forward.NewHandler(server.NewHTTPHandler(&fakeAgent{}, nil))
	r := httptest.NewRequest(http.MethodPost, forward.Path, strings.NewReader("CNI_COMMAND=VERSION\x00CNI_COMMAND=ADD\x00\x00{}"))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Header().Get(forward.ExitHeader) != "0" || !strings.Contains(w.Body.String(), "supportedVersions") {
		t.Errorf("exit %q, output %q; want VERSION's", w.Header().Get(forward.ExitHeader), w.Body.String())
	}
}

// TestMalformedExecCall: a call that is not the forwarder's is answered
// with a CNI error and exit status 1, never a panic or a hang.
func TestMalformedExecCall(t *testing.T) {
	h := forward.NewHandler(server.NewHTTPHandler(&fakeAgent{}, nil))
	for _, tc := range []struct {
		name, method, netns string
		body                string
		want                string
	}{
		{"GET", http.MethodGet, "", "CNI_COMMAND=ADD\x00\x00{}", "method GET"},
		{"no end of the environment", http.MethodPost, "", "CNI_COMMAND=ADD\x00{}", "not ended"},
		{"empty", http.MethodPost, "", "", "not ended"},
		{"not CNI", http.MethodPost, "", "PATH=/bin\x00\x00{}", `"PATH=/bin" is not CNI_NAME=value`},
		{"no equals", http.MethodPost, "", "CNI_COMMAND\x00\x00{}", "is not CNI_NAME=value"},
		{"bad netns", http.MethodPost, "4:x", "CNI_COMMAND=ADD\x00\x00{}", "is not dev:ino"},
		{"environment too large", http.MethodPost, "", "CNI_ARGS=" + strings.Repeat("x", 70<<10) + "\x00\x00{}", "environment is larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, forward.Path, strings.NewReader(tc.body))
			if tc.netns != "" {
				r.Header.Set(forward.CallerNetnsHeader, tc.netns)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			var e wire.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
				t.Fatalf("answer %q: %v", w.Body.String(), err)
			}
			if w.Code != 200 || w.Header().Get(forward.ExitHeader) != "1" || e.Code != wire.ErrInternal || !strings.Contains(e.Details, tc.want) {
				t.Errorf("HTTP %d, exit %q, error %+v; want 200, 1 and %q", w.Code, w.Header().Get(forward.ExitHeader), e, tc.want)
			}
			if got := w.Header().Get("Content-Length"); got != fmt.Sprint(w.Body.Len()) {
				t.Errorf("Content-Length %q for %d bytes", got, w.Body.Len())
			}
		})
	}
}

// TestSocketAsGoReadsIt: the forwarder reads the "socket" key as Go's
// JSON decoding does (any case, the last one, null as absent); a config
// whose socket it read otherwise (a key with escapes) is refused by the
// agent it reached, which is not the one meant.
func TestSocketAsGoReadsIt(t *testing.T) {
	agentA, agentB := &fakeAgent{}, &fakeAgent{}
	sockA, sockB := startAgent(t, agentA), startAgent(t, agentB)
	base := `"cniVersion":"1.1.0","name":"n","type":"terway"`
	r := run(t, []string{"CNI_COMMAND=STATUS", "CNI_PATH=/x"}, fmt.Appendf(nil, `{%s,"socket":%q,"SOCKET":%q}`, base, sockA, sockB))
	if r.exit != 0 || len(agentB.Calls()) != 1 || len(agentA.Calls()) != 0 {
		t.Errorf("the last key of any case: exit %d %q; agent A %d calls, B %d; want B's", r.exit, r.stdout, len(agentA.Calls()), len(agentB.Calls()))
	}
	e := parseError(t, run(t, []string{"CNI_COMMAND=STATUS", "CNI_PATH=/x"}, fmt.Appendf(nil, `{%s,"socket":%q,"sock\u0065t":%q}`, base, sockA, sockB)))
	if e.Code != 7 || !strings.Contains(e.Msg, sockB) || !strings.Contains(e.Msg, sockA) {
		t.Errorf("an escaped key the forwarder does not read: %+v, want code 7 naming both sockets", e)
	}
	if n := len(agentA.Calls()); n != 0 {
		t.Errorf("agent A served %d calls meant for B", n)
	}
	if _, err := os.Stat(wire.DefaultSocketPath); err != nil {
		e = parseError(t, run(t, []string{"CNI_COMMAND=ADD", "CNI_PATH=/x"}, []byte(`{`+base+`,"socket":null}`)))
		if e.Code != 11 || !strings.Contains(e.Msg, wire.DefaultSocketPath) {
			t.Errorf(`"socket": null: %+v, want the default socket, unreachable`, e)
		}
	}
}

// TestHungAgentTimesOut: an agent whose handler does not return (stuck
// behind its lock, deaf to the context) still answers the forwarder at
// the config's timeout, code 11, as the Go plugin's own deadline did.
func TestHungAgentTimesOut(t *testing.T) {
	agent := &fakeAgent{hang: make(chan struct{})}
	defer close(agent.hang)
	sock := startAgent(t, agent)
	e := parseError(t, run(t, addEnv("ADD"), fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q,"timeout":"300ms"}`, sock)))
	if e.Code != 11 || !strings.Contains(e.Msg, "did not answer ADD within 300ms") {
		t.Errorf("got %+v, want code 11, timed out", e)
	}
}

// TestTruncatedAnswer: an agent that goes away in the middle of its answer
// is a broken connection (code 11, retry), not a protocol error.
func TestTruncatedAnswer(t *testing.T) {
	sock, _ := rawAgent(t, []byte("HTTP/1.1 200 OK\r\nTerway-Exit: 0\r\nContent-Length: 100\r\n\r\n{\"cniVersion\""))
	e := parseError(t, run(t, addEnv("ADD"), fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"n","type":"terway","socket":%q}`, sock)))
	if e.Code != 11 || !strings.Contains(e.Msg, "connection broken") {
		t.Errorf("got %+v, want code 11, connection broken", e)
	}
}
