package routes_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/routes"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Route, spec.Route]{
	Observe: routes.Observe,
	Diff:    routes.Diff,
	Items:   func(s *spec.NodeState) []spec.Route { return s.Routes },
}

func podLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s route default via 169.254.1.1 dev eth0 onlink table main proto terway netns %s", sign, p.Netns)
}

func hostLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s route %s/32 dev %s scope link table main proto terway", sign, p.IP, p.HostVeth)
}

// ipRoutes reads our routes with ip(8), one line per route in a form
// independent of the code under test.
func ipRoutes(t *testing.T, netns string) []string {
	t.Helper()
	var out []string
	for _, r := range kindstest.JSON(t, netns, "ip", "-j", "-d", "route", "show", "table", "all", "proto", "250") {
		out = append(out, strings.Join([]string{
			kindstest.Str(r, "table"), kindstest.Str(r, "dst"), kindstest.Str(r, "gateway"), kindstest.Str(r, "dev"),
			kindstest.Str(r, "scope"), kindstest.Str(r, "flags"),
		}, " "))
	}
	slices.Sort(out)
	return out
}

// nlRoutes reads our routes with a netlink handle of the test's own.
func nlRoutes(t *testing.T, netns string) []string {
	t.Helper()
	h := kindstest.Handle(t, netns)
	rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: spec.RouteProtocol},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		dev := ""
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		out = append(out, fmt.Sprintf("%d %s %s %s %s onlink=%v", r.Table, r.Dst, r.Gw, dev, r.Scope, r.Flags&int(netlink.FLAG_ONLINK) != 0))
	}
	slices.Sort(out)
	return out
}

func want(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestRoutesLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 3)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	doc := kindstest.VPC(e.Pods)
	pods := make([]kindstest.Pod, len(e.Pods))
	for i, ns := range e.Pods {
		pods[i] = kindstest.PodFor(i, ns)
	}
	// An ENI-style table route, to see tables other than main.
	doc.Routes = append(doc.Routes, spec.Route{Table: 1005, Dst: "default", Gw: "198.18.0.1", Dev: pods[0].HostVeth, Onlink: true})
	doc.Canonicalize()
	kindstest.ApplyLinks(t, e, doc)

	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops,
		hostLine("+", pods[0]), hostLine("+", pods[1]), hostLine("+", pods[2]),
		"+ route default via 198.18.0.1 dev "+pods[0].HostVeth+" onlink table 1005 proto terway",
		podLine("+", pods[0]), podLine("+", pods[1]), podLine("+", pods[2]))
	if w := kindstest.Writes(ops); w != 7 {
		t.Errorf("writes = %d, want 7", w)
	}
	checkAll := func(skip ...kindstest.Pod) {
		t.Helper()
		var ipHost, nlHost []string
		for _, p := range pods {
			if slices.Contains(skip, p) {
				continue
			}
			want(t, "ip route in "+p.Netns, ipRoutes(t, p.Netns), `main default 169.254.1.1 eth0 global ["onlink"]`)
			want(t, "netlink routes in "+p.Netns, nlRoutes(t, p.Netns), "254 0.0.0.0/0 169.254.1.1 eth0 universe onlink=true")
			ipHost = append(ipHost, "main "+p.IP+"  "+p.HostVeth+" link []")
			nlHost = append(nlHost, "254 "+p.IP+"/32 <nil> "+p.HostVeth+" link onlink=false")
		}
		ipHost = append(ipHost, `1005 default 198.18.0.1 `+pods[0].HostVeth+` global ["onlink"]`)
		nlHost = append(nlHost, "1005 0.0.0.0/0 198.18.0.1 "+pods[0].HostVeth+" universe onlink=true")
		want(t, "ip route in node", ipRoutes(t, e.Node), ipHost...)
		want(t, "netlink routes in node", nlRoutes(t, e.Node), nlHost...)
	}
	checkAll()

	// Tamper: a route deleted, one moved to another dev, a stray one of ours.
	kindstest.Run(t, pods[0].Netns, "ip", "route", "del", "default")
	kindstest.Run(t, e.Node, "ip", "route", "replace", pods[1].IP+"/32", "dev", pods[2].HostVeth, "proto", "250", "scope", "link")
	kindstest.Run(t, e.Node, "ip", "route", "add", "198.18.9.0/24", "dev", pods[0].HostVeth, "proto", "250", "table", "1001")
	ops = kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops,
		"- route 198.18.9.0/24 dev "+pods[0].HostVeth+" scope link table 1001 proto terway",
		hostLine("~", pods[1])+": dev "+pods[2].HostVeth+" → "+pods[1].HostVeth,
		podLine("+", pods[0]))
	checkAll()

	// A route we want where someone else's is: never replaced, and the
	// error says whose it is.
	blocked := spec.Route{Dst: "198.18.201.0/24", Dev: kindstest.ForeignDummy}
	doc2 := *doc
	doc2.Routes = append(slices.Clone(doc.Routes), blocked)
	ops = kind.Plan(t, e, &doc2)
	kindstest.WantPlan(t, ops, "+ route 198.18.201.0/24 dev "+kindstest.ForeignDummy+" table main proto terway")
	if err := ops[0].Exec(context.Background(), e.Reg); err == nil || !strings.Contains(err.Error(), "protocol static") {
		t.Errorf("exec over a foreign route = %v, want an error naming protocol static", err)
	}

	// Removing a pod's routes removes only them.
	doc3 := *doc
	doc3.Routes = slices.DeleteFunc(slices.Clone(doc.Routes), func(r spec.Route) bool { return r.Pod == pods[1].Key })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc3), hostLine("-", pods[1]), podLine("-", pods[1]))
	checkAll(pods[1])
	want(t, "ip route in "+pods[1].Netns, ipRoutes(t, pods[1].Netns))

	kindstest.SameForeign(t, e, before)
}
