package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/load"
)

// TestInputsFromAgent: explain, matrix and what-if --agent read the
// objects an agent serves on /inputs and answer exactly as -f does on the
// same objects; giving both is bad input.
func TestInputsFromAgent(t *testing.T) {
	const dir = "../../examples/access-nginx"
	objs, err := load.Paths(dir)
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := objs.Encode(&stream); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != load.AgentInputsPath || r.Method != http.MethodGet {
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		_, _ = w.Write(stream.Bytes())
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	del := filepath.Join(t.TempDir(), "del.yaml")
	if err := os.WriteFile(del, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: default, name: access-nginx}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{
		{"explain", "--from", "default/busybox", "--to", "default/nginx", "--port", "80"},
		{"explain", "--from", "default/access-busybox", "--to", "default/nginx", "--port", "80", "-o", "json"},
		{"matrix"},
		{"what-if", "--delete", del},
	} {
		var fOut, aOut, errb bytes.Buffer
		if code := run(strings.NewReader(""), &fOut, &errb, append(args, "-f", dir)...); code != 0 {
			t.Fatalf("%v -f: exit %d: %s", args, code, errb.String())
		}
		if code := run(strings.NewReader(""), &aOut, &errb, append(args, "--agent", addr)...); code != 0 {
			t.Fatalf("%v --agent: exit %d: %s", args, code, errb.String())
		}
		if aOut.String() != fOut.String() {
			t.Errorf("%v: --agent says\n%s\n-f says\n%s", args, aOut.String(), fOut.String())
		}
		if fOut.Len() == 0 {
			t.Errorf("%v: no output", args)
		}
	}
	var out, errb bytes.Buffer
	if code := run(strings.NewReader(""), &out, &errb, "explain", "-f", dir, "--agent", addr, "--from", "default/busybox", "--to", "default/nginx", "--port", "80"); code != 1 || !strings.Contains(errb.String(), "not both") {
		t.Errorf("-f and --agent: exit %d, stderr %q; want 1 and a reason", code, errb.String())
	}
	errb.Reset()
	if code := run(strings.NewReader(""), &out, &errb, "matrix", "--agent", "127.0.0.1:1"); code != 1 || !strings.Contains(errb.String(), "agent at 127.0.0.1:1") {
		t.Errorf("no agent: exit %d, stderr %q; want 1 naming the agent", code, errb.String())
	}
}
