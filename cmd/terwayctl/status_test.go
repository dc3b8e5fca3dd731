package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/agent"
)

// TestStatusCommand: terwayctl status prints what the agent's /status
// says, one failing item each with its error and attempts, and exits 3
// while the agent is not ready, 0 once it is.
func TestStatusCommand(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := agent.Status{Node: "node-1", Reasons: []string{"nft table inet terway: operation not permitted"}, Syncs: 7,
		Failing: []agent.ItemStatus{{Kind: "nft", Key: "table inet terway", Error: "operation not permitted", Attempts: 4, Since: since}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(st)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var out, errOut bytes.Buffer
	if code := run(strings.NewReader(""), &out, &errOut, "status", "--agent", addr); code != 3 {
		t.Fatalf("not ready: exit %d, want 3 (stderr %q)", code, errOut.String())
	}
	for _, want := range []string{"node node-1: NOT READY", "operation not permitted", "attempts=4", "table inet terway", "2026-01-02T03:04:05Z"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	st = agent.Status{Node: "node-1", Ready: true}
	out.Reset()
	if code := run(strings.NewReader(""), &out, &errOut, "status", "--agent", addr); code != 0 {
		t.Fatalf("ready: exit %d, want 0 (stderr %q)", code, errOut.String())
	}
	if !strings.Contains(out.String(), "node node-1: ready") || !strings.Contains(out.String(), "failing items: none") {
		t.Errorf("ready output:\n%s", out.String())
	}
	if code := run(strings.NewReader(""), &out, &errOut, "status", "--agent", "127.0.0.1:1"); code != 1 {
		t.Errorf("no agent: exit %d, want 1", code)
	}
}
