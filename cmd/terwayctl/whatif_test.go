package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestWhatIfCommand: on the demo, the flips come grouped under the policy
// that causes them, then the engine's plan of the change, which adds each
// policy's chain and sets and commits once; bad input exits 1.
func TestWhatIfCommand(t *testing.T) {
	var out, errb bytes.Buffer
	args := []string{"what-if", "-f", "../../examples/cluster", "-f", "../../examples/allocations.yaml", "--apply", "../../examples/policy.yaml"}
	if code := run(strings.NewReader(""), &out, &errb, args...); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	groups := map[string]int{}
	var group string
	planAt := strings.Index(text, "kernel plan (the engine's")
	if planAt < 0 {
		t.Fatalf("no kernel plan:\n%s", text)
	}
	for _, l := range strings.Split(text[:planAt], "\n") {
		switch {
		case strings.HasPrefix(l, "  "):
			groups[group]++
		case l != "":
			group = l
		}
	}
	want := map[string]int{
		"backend/api-from-web now selects backend/api for ingress:": 10,
		"data/db-from-backend now selects data/db for ingress:":     10,
	}
	if len(groups) != len(want) || groups["backend/api-from-web now selects backend/api for ingress:"] != 10 || groups["data/db-from-backend now selects data/db for ingress:"] != 10 {
		t.Errorf("groups %v, want %v:\n%s", groups, want, text)
	}
	plan := text[planAt:]
	for _, w := range []string{"+ nft chain in_data_", "+ nft chain in_backend_", "+ nft element ingress-pods { 198.18.0.30 : jump in_data_",
		"~ nft commit table inet terway: 10 changes in 1 transaction", "11 changes: nft 11"} {
		if !strings.Contains(plan, w) {
			t.Errorf("plan lacks %q:\n%s", w, plan)
		}
	}
	if code := run(strings.NewReader(""), &out, &errb, append(args, "-o", "yaml")...); code != 1 {
		t.Errorf("-o yaml: exit %d, want 1", code)
	}
}
