package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestExplainCommand checks the contract: first line the verdict, exit 0
// for either verdict, 1 on bad input, -o json a structure.
func TestExplainCommand(t *testing.T) {
	f := "../../examples/access-nginx"
	for _, c := range []struct {
		args  []string
		code  int
		first string
	}{
		{[]string{"--from", "default/busybox", "--to", "default/nginx", "--port", "80"}, 0, "denied"},
		{[]string{"--from", "default/access-busybox", "--to", "default/nginx", "--port", "80"}, 0, "allowed"},
		{[]string{"--from", "default/nobody", "--to", "default/nginx", "--port", "80"}, 1, ""},
		{[]string{"--from", "default/busybox", "--to", "default/nginx", "--port", "0"}, 1, ""},
		{[]string{"--from", "default/busybox", "--to", "default/nginx", "--port", "80", "--protocol", "icmp"}, 1, ""},
	} {
		var out, errb bytes.Buffer
		code := run(strings.NewReader(""), &out, &errb, append([]string{"explain", "-f", f}, c.args...)...)
		if code != c.code {
			t.Errorf("%v: exit %d, want %d (stderr %s)", c.args, code, c.code, errb.String())
		}
		if first, _, _ := strings.Cut(out.String(), "\n"); first != c.first {
			t.Errorf("%v: first line %q, want %q", c.args, first, c.first)
		}
	}
	var out, errb bytes.Buffer
	if code := run(strings.NewReader(""), &out, &errb, "explain", "-f", f, "--from", "default/busybox", "--to", "default/nginx", "--port", "80", "-o", "json"); code != 0 {
		t.Fatalf("-o json: exit %d: %s", code, errb.String())
	}
	var rep struct {
		Verdict string
		Ingress struct {
			Policies []string
			Refused  []string
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out.String())
	}
	if rep.Verdict != "denied" || len(rep.Ingress.Policies) != 1 || rep.Ingress.Policies[0] != "default/access-nginx" || len(rep.Ingress.Refused) == 0 {
		t.Errorf("-o json: %+v", rep)
	}
}
