package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
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
	for _, w := range []string{"+ nft chain in_data_", "+ nft chain in_backend_", "+ nft element ingress-pods { " + spec.HostVethName("data/db") + " : jump in_data_",
		"~ nft commit table inet terway: 10 changes in 1 transaction", "11 changes: nft 11"} {
		if !strings.Contains(plan, w) {
			t.Errorf("plan lacks %q:\n%s", w, plan)
		}
	}
	if code := run(strings.NewReader(""), &out, &errb, append(args, "-o", "yaml")...); code != 1 {
		t.Errorf("-o yaml: exit %d, want 1", code)
	}
}

// TestWhatIfWithoutAllocations: the command on the demo's cluster
// folder alone, which holds no allocations: the node's pods are placed as
// the CNI would set them up (and a note says so), and the flips are those
// of the same command with the demo's allocations.
func TestWhatIfWithoutAllocations(t *testing.T) {
	flips := func(args ...string) (string, string) {
		var out, errb bytes.Buffer
		if code := run(strings.NewReader(""), &out, &errb, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		text := out.String()
		return text[:strings.Index(text, "kernel plan")], errb.String()
	}
	placed, note := flips("what-if", "-f", "../../examples/cluster", "--apply", "../../examples/policy.yaml")
	recorded, _ := flips("what-if", "-f", "../../examples/cluster", "-f", "../../examples/allocations.yaml", "--apply", "../../examples/policy.yaml")
	if placed != recorded {
		t.Errorf("flips with pods placed:\n%s\nwith the demo's allocations:\n%s", placed, recorded)
	}
	if n := strings.Count(placed, "\n  "); n != 20 {
		t.Errorf("%d flips, want the demo's 20:\n%s", n, placed)
	}
	if !strings.Contains(note, "5 pods of node demo-node placed") {
		t.Errorf("no note on placed pods: %q", note)
	}
}
