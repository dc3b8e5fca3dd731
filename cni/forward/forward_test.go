package forward_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
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
