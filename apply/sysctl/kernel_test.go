package sysctl_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/sysctl"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Sysctl, spec.Sysctl]{
	Observe: sysctl.Observe,
	Diff:    sysctl.Diff,
	Items:   func(s *spec.NodeState) []spec.Sysctl { return s.Sysctls },
}

// value reads a key with sysctl(8) and with cat, which must agree.
func value(t *testing.T, netns, path string) string {
	t.Helper()
	tool := strings.TrimSpace(kindstest.Run(t, netns, "sysctl", "-n", strings.ReplaceAll(path, "/", ".")))
	raw := strings.TrimSpace(kindstest.Run(t, netns, "cat", "/proc/sys/"+path))
	if sysctl.Normal(tool) != sysctl.Normal(raw) {
		t.Fatalf("%s in %s: sysctl(8) says %q, /proc says %q", path, netns, tool, raw)
	}
	return sysctl.Normal(raw)
}

func TestSysctlLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 2)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	// New links start with rp_filter 1 here, so that 0 is a change.
	kindstest.Run(t, e.Node, "sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=1")
	kindstest.Run(t, e.Node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	doc := kindstest.VPC(e.Pods)
	pods := []kindstest.Pod{kindstest.PodFor(0, e.Pods[0]), kindstest.PodFor(1, e.Pods[1])}
	const ports = "net/ipv4/ip_local_port_range"
	doc.Sysctls = append(doc.Sysctls, spec.Sysctl{Netns: pods[1].Netns, Path: ports, Value: "20000   30000", Pod: pods[1].Key})
	doc.Canonicalize()
	rp := func(p kindstest.Pod) string { return "net/ipv4/conf/" + p.HostVeth + "/rp_filter" }
	first, second := pods[0], pods[1]
	if first.HostVeth > second.HostVeth {
		first, second = second, first
	}

	orig := value(t, pods[1].Netns, ports)

	// Before the links exist their keys observe as absent: creates.
	// (Keys sort as text: conf/… before ip_forward.)
	kindstest.WantPlan(t, kind.Plan(t, e, doc),
		"+ sysctl "+rp(first)+" = 0",
		"+ sysctl "+rp(second)+" = 0",
		"~ sysctl net/ipv4/ip_forward = 1 (was 0)",
		"~ sysctl "+ports+" = 20000 30000 netns "+pods[1].Netns+" (was "+orig+")")

	kindstest.ApplyLinks(t, e, doc)
	if value(t, e.Node, rp(pods[0])) != "1" {
		t.Fatalf("new link's rp_filter is not 1; the test's premise is wrong")
	}
	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops,
		"~ sysctl "+rp(first)+" = 0 (was 1)",
		"~ sysctl "+rp(second)+" = 0 (was 1)",
		"~ sysctl net/ipv4/ip_forward = 1 (was 0)",
		"~ sysctl "+ports+" = 20000 30000 netns "+pods[1].Netns+" (was "+orig+")")
	if w := kindstest.Writes(ops); w != 4 {
		t.Errorf("writes = %d, want 4", w)
	}
	check := func() {
		t.Helper()
		for path, want := range map[string]string{"net/ipv4/ip_forward": "1", rp(pods[0]): "0", rp(pods[1]): "0"} {
			if got := value(t, e.Node, path); got != want {
				t.Errorf("%s = %q, want %q", path, got, want)
			}
		}
		if got := value(t, pods[1].Netns, ports); got != "20000 30000" {
			t.Errorf("%s in pod 1 = %q", ports, got)
		}
		if got := value(t, pods[0].Netns, ports); got == "20000 30000" {
			t.Errorf("%s in pod 0 changed too", ports)
		}
	}
	check()

	// Tamper.
	kindstest.Run(t, e.Node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	kindstest.Run(t, pods[1].Netns, "sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000")
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		"~ sysctl net/ipv4/ip_forward = 1 (was 0)",
		"~ sysctl "+ports+" = 20000 30000 netns "+pods[1].Netns+" (was 1024 65000)")
	check()

	// Removing a key from the document leaves it as it is.
	doc2 := *doc
	doc2.Sysctls = slices.DeleteFunc(slices.Clone(doc.Sysctls), func(c spec.Sysctl) bool { return c.Path == "net/ipv4/ip_forward" })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc2))
	if got := value(t, e.Node, "net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %q after removal, want it left at 1", got)
	}

	// A path outside net/ is never read, and its write is refused.
	doc3 := *doc
	doc3.Sysctls = []spec.Sysctl{{Path: "kernel/hostname", Value: "x"}, {Path: "net/../kernel/hostname", Value: "x"}}
	ops = kind.Plan(t, e, &doc3)
	if len(ops) != 2 {
		t.Fatalf("plan = %v", kindstest.Lines(ops))
	}
	for _, o := range ops {
		if err := o.Exec(t.Context(), e.Reg); err == nil || !strings.Contains(err.Error(), "not a key under net/") {
			t.Errorf("%s: exec = %v, want a refusal", o, err)
		}
	}

	kindstest.Run(t, e.Node, "sysctl", "-q", "-w", "net.ipv4.conf.default.rp_filter=0")
	kindstest.SameForeign(t, e, before)
}
