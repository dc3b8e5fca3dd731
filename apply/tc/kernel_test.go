package tc_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/tc"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Qdisc, spec.Qdisc]{
	Observe: tc.Observe,
	Diff:    tc.Diff,
	Items:   func(s *spec.NodeState) []spec.Qdisc { return s.TC },
}

func line(sign string, q spec.Qdisc) string {
	s := fmt.Sprintf("%s qdisc tbf 1: dev %s root rate %dbit burst %db limit %db", sign, q.Dev, q.RateBitsPerSecond, q.BurstBytes, q.LimitBytes)
	if q.Netns != "" {
		s += " netns " + q.Netns
	}
	return s
}

// wantTBF reads the link's root qdisc with tc(8) (-raw prints the limit)
// and with netlink and compares it with q, bursts within the tolerance.
func wantTBF(t *testing.T, e *kindstest.Env, q spec.Qdisc) {
	t.Helper()
	ns := e.In(q.Netns)
	tol := int64(tc.BurstTolerance(q.RateBitsPerSecond))
	near := func(got int64) bool { return got <= int64(q.BurstBytes) && int64(q.BurstBytes)-got <= tol }
	var roots []map[string]any
	for _, m := range kindstest.JSON(t, ns, "tc", "-j", "-raw", "qdisc", "show", "dev", q.Dev) {
		if m["root"] == true {
			roots = append(roots, m)
		}
	}
	if len(roots) != 1 {
		t.Fatalf("tc qdisc show dev %s: %v, want one root", q.Dev, roots)
	}
	opts, _ := roots[0]["options"].(map[string]any)
	burst, _ := strconv.ParseInt(kindstest.Str(opts, "burst"), 10, 64)
	if kindstest.Str(roots[0], "kind") != "tbf" || kindstest.Str(roots[0], "handle") != "1:" ||
		kindstest.Str(opts, "rate") != strconv.FormatUint(q.RateBitsPerSecond/8, 10) ||
		kindstest.Str(opts, "limit") != strconv.FormatUint(uint64(q.LimitBytes), 10) || !near(burst) {
		t.Fatalf("tc says %v, want tbf 1: rate %d B/s burst %d limit %d", roots[0], q.RateBitsPerSecond/8, q.BurstBytes, q.LimitBytes)
	}
	h := kindstest.Handle(t, ns)
	l, err := h.LinkByName(q.Dev)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range qs {
		if k.Attrs().Parent != netlink.HANDLE_ROOT {
			continue
		}
		tbf, ok := k.(*netlink.Tbf)
		if !ok || k.Attrs().Handle != netlink.MakeHandle(1, 0) || tbf.Rate != q.RateBitsPerSecond/8 || tbf.Limit != q.LimitBytes ||
			!near(int64(netlink.Xmitsize(tbf.Rate, tbf.Buffer))) {
			t.Fatalf("netlink says %+v, want tbf 1: %+v", k, q)
		}
		return
	}
	t.Fatalf("netlink: no root qdisc on %s", q.Dev)
}

func wantNoTBF(t *testing.T, netns, dev string) {
	t.Helper()
	for _, m := range kindstest.JSON(t, netns, "tc", "-j", "qdisc", "show", "dev", dev) {
		if m["root"] == true && kindstest.Str(m, "kind") == "tbf" {
			t.Fatalf("%s in %s still has %v", dev, netns, m)
		}
	}
}

func TestTBFLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 2)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	doc := kindstest.VPC(e.Pods)
	pods := []kindstest.Pod{kindstest.PodFor(0, e.Pods[0]), kindstest.PodFor(1, e.Pods[1])}
	// Pod-side egress limits: 1 Gbit/s, and 40 Gbit/s (beyond 32 bits of
	// bytes per second, so the kernel takes it as a 64-bit rate).
	doc.TC = append(doc.TC,
		spec.Qdisc{Netns: pods[1].Netns, Dev: "eth0", Kind: spec.QdiscTBF, RateBitsPerSecond: 1_000_000_000,
			BurstBytes: 256 * 1024, LimitBytes: 1 << 20, Direction: "egress", Pod: pods[1].Key},
		spec.Qdisc{Netns: pods[0].Netns, Dev: "eth0", Kind: spec.QdiscTBF, RateBitsPerSecond: 40_000_000_000,
			BurstBytes: 1 << 20, LimitBytes: 4 << 20, Direction: "egress", Pod: pods[0].Key})
	doc.Canonicalize()
	kindstest.ApplyLinks(t, e, doc)
	host := doc.TC[0] // the host sorts first
	if host.Netns != "" || host.Dev != pods[kindstest.ShapedIndex].HostVeth {
		t.Fatalf("unexpected document: %+v", doc.TC)
	}

	ops := kind.Converge(t, e, doc)
	var want []string
	for _, q := range doc.TC {
		want = append(want, line("+", q))
	}
	kindstest.WantPlan(t, ops, want...)
	if w := kindstest.Writes(ops); w != 3 {
		t.Errorf("writes = %d, want 3", w)
	}
	for _, q := range doc.TC {
		wantTBF(t, e, q)
	}

	// Tamper: one deleted, one with another rate, a stray TBF on our veth,
	// and a qdisc of another kind on our veth (not ours to judge).
	kindstest.Run(t, e.Node, "tc", "qdisc", "del", "dev", host.Dev, "root")
	kindstest.Run(t, pods[1].Netns, "tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "tbf", "rate", "5mbit", "burst", "256kb", "limit", "1mb")
	kindstest.Run(t, e.Node, "tc", "qdisc", "add", "dev", pods[1].HostVeth, "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "32kb", "limit", "64kb")
	ops = kind.Plan(t, e, doc)
	if len(ops) != 3 || ops[0].Action != "-" || !strings.HasPrefix(ops[0].Text, "qdisc tbf 1: dev "+pods[1].HostVeth+" root rate 1000000bit burst ") ||
		ops[1].String() != line("+", host) ||
		!strings.HasPrefix(ops[2].String(), line("~", doc.TC[2])+" (was rate 5000000bit burst 2621") {
		t.Fatalf("plan after tamper:\n%s", strings.Join(kindstest.Lines(ops), "\n"))
	}
	kindstest.Exec(t, e, ops)
	kindstest.WantPlan(t, kind.Plan(t, e, doc))
	for _, q := range doc.TC {
		wantTBF(t, e, q)
	}
	wantNoTBF(t, e.Node, pods[1].HostVeth)
	kindstest.Run(t, e.Node, "tc", "qdisc", "add", "dev", pods[1].HostVeth, "root", "handle", "2:", "pfifo")
	kindstest.WantPlan(t, kind.Plan(t, e, doc))

	// Removing one limit removes only it.
	doc2 := *doc
	doc2.TC = slices.DeleteFunc(slices.Clone(doc.TC), func(q spec.Qdisc) bool { return q.Netns == "" })
	// A deletion prints what the kernel has: the burst as read back.
	ops = kind.Converge(t, e, &doc2)
	if len(ops) != 1 || !strings.HasPrefix(ops[0].String(), "- qdisc tbf 1: dev "+host.Dev+" root rate 10000000bit burst 327") {
		t.Fatalf("plan after removal:\n%s", strings.Join(kindstest.Lines(ops), "\n"))
	}
	wantNoTBF(t, e.Node, host.Dev)
	for _, q := range doc2.TC {
		wantTBF(t, e, q)
	}
	if out := kindstest.Run(t, e.Node, "tc", "qdisc", "show", "dev", pods[1].HostVeth); !strings.Contains(out, "pfifo 2:") {
		t.Errorf("the pfifo on %s is gone: %s", pods[1].HostVeth, out)
	}

	kindstest.SameForeign(t, e, before)
}
