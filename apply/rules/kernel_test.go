package rules_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/kindstest"
	"github.com/terway-reconciler/terway/apply/rules"
	"github.com/terway-reconciler/terway/spec"
)

var kind = kindstest.Kind[spec.Rule, spec.Rule]{
	Observe: rules.Observe,
	Diff:    rules.Diff,
	Items:   func(s *spec.NodeState) []spec.Rule { return s.Rules },
}

// eniDoc is an ENI multi-IP style document: per pod, to podIP lookup main
// and from podIP lookup its ENI's table; plus one rule in a pod namespace.
func eniDoc(pods []kindstest.Pod) *spec.NodeState {
	s := &spec.NodeState{APIVersion: spec.APIVersion, Kind: spec.KindNodeState, Mode: spec.PodModeENIMultiIP}
	for i, p := range pods {
		s.Rules = append(s.Rules,
			spec.Rule{Priority: spec.RulePriorityToPod, To: p.IP + "/32", Table: spec.MainTable, Pod: p.Key},
			spec.Rule{Priority: spec.RulePriorityFromPod, From: p.IP + "/32", Table: 1001 + i, Pod: p.Key})
	}
	s.Rules = append(s.Rules, spec.Rule{Netns: pods[0].Netns, Priority: 1550, From: pods[0].IP + "/32", Table: 1003, Pod: pods[0].Key})
	s.Canonicalize()
	return s
}

func toLine(sign string, p kindstest.Pod) string {
	return fmt.Sprintf("%s rule priority 1510 from all to %s/32 lookup main", sign, p.IP)
}

func fromLine(sign string, p kindstest.Pod, table int) string {
	return fmt.Sprintf("%s rule priority 1520 from %s/32 lookup %d", sign, p.IP, table)
}

// ipRules reads every rule with ip(8): ours in the band and the rest
// separately, so that the rest can be compared byte for byte.
func ipRules(t *testing.T, netns string) (ours []string, rest string) {
	t.Helper()
	all := kindstest.JSON(t, netns, "ip", "-j", "rule", "show")
	var other []string
	for _, r := range all {
		line := strings.Join([]string{kindstest.Str(r, "priority"), kindstest.Str(r, "src"), kindstest.Str(r, "dst"), kindstest.Str(r, "table")}, " ")
		var prio int
		fmt.Sscan(kindstest.Str(r, "priority"), &prio)
		if prio >= spec.RulePriorityMin && prio <= spec.RulePriorityMax {
			ours = append(ours, line)
		} else {
			other = append(other, line)
		}
	}
	slices.Sort(ours)
	return ours, strings.Join(other, "\n")
}

func nlRules(t *testing.T, netns string) []string {
	t.Helper()
	rs, err := kindstest.Handle(t, netns).RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		if r.Priority >= spec.RulePriorityMin && r.Priority <= spec.RulePriorityMax {
			out = append(out, fmt.Sprintf("%d %v %v %d", r.Priority, r.Src, r.Dst, r.Table))
		}
	}
	slices.Sort(out)
	return out
}

func same(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestRulesLifecycle(t *testing.T) {
	e := kindstest.NewEnv(t, 2)
	kindstest.AddForeign(t, e)
	before := kindstest.Snapshot(t, e)
	_, restBefore := ipRules(t, e.Node)
	pods := []kindstest.Pod{kindstest.PodFor(0, e.Pods[0]), kindstest.PodFor(1, e.Pods[1])}
	doc := eniDoc(pods)
	podRule := fmt.Sprintf("+ rule priority 1550 from %s/32 lookup 1003 netns %s", pods[0].IP, pods[0].Netns)

	ops := kind.Converge(t, e, doc)
	kindstest.WantPlan(t, ops,
		toLine("+", pods[0]), toLine("+", pods[1]), fromLine("+", pods[0], 1001), fromLine("+", pods[1], 1002), podRule)
	if w := kindstest.Writes(ops); w != 5 {
		t.Errorf("writes = %d, want 5", w)
	}
	check := func(skip ...kindstest.Pod) {
		t.Helper()
		var ip, nl []string
		for i, p := range pods {
			if slices.Contains(skip, p) {
				continue
			}
			ip = append(ip, fmt.Sprintf("1510 all %s main", p.IP), fmt.Sprintf("1520 %s  %d", p.IP, 1001+i))
			nl = append(nl, fmt.Sprintf("1510 <nil> %s/32 254", p.IP), fmt.Sprintf("1520 %s/32 <nil> %d", p.IP, 1001+i))
		}
		ours, rest := ipRules(t, e.Node)
		same(t, "ip rule in node", ours, ip...)
		same(t, "netlink rules in node", nlRules(t, e.Node), nl...)
		if rest != restBefore {
			t.Fatalf("rules outside our band changed:\n%s\nwant:\n%s", rest, restBefore)
		}
		ours, _ = ipRules(t, pods[0].Netns)
		same(t, "ip rule in pod 0", ours, "1550 "+pods[0].IP+"  1003")
	}
	check()

	// Tamper: one deleted, one pointed at another table, a stray one.
	kindstest.Run(t, e.Node, "ip", "rule", "del", "priority", "1510", "to", pods[1].IP)
	kindstest.Run(t, e.Node, "ip", "rule", "del", "priority", "1520", "from", pods[0].IP)
	kindstest.Run(t, e.Node, "ip", "rule", "add", "priority", "1520", "from", pods[0].IP, "lookup", "1009")
	kindstest.Run(t, e.Node, "ip", "rule", "add", "priority", "1599", "to", "198.18.9.0/24", "lookup", "main")
	kindstest.WantPlan(t, kind.Converge(t, e, doc),
		fromLine("-", pods[0], 1009), "- rule priority 1599 from all to 198.18.9.0/24 lookup main",
		toLine("+", pods[1]), fromLine("+", pods[0], 1001))
	check()

	// Removing a pod's rules removes only them.
	doc2 := *doc
	doc2.Rules = slices.DeleteFunc(slices.Clone(doc.Rules), func(r spec.Rule) bool { return r.Pod == pods[1].Key })
	kindstest.WantPlan(t, kind.Converge(t, e, &doc2), toLine("-", pods[1]), fromLine("-", pods[1], 1002))
	check(pods[1])

	kindstest.SameForeign(t, e, before)
}
