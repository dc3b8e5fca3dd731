package nft

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// Test documents shaped like render's NetworkPolicy output (DESIGN §6):
// base chains dispatch through verdict maps keyed by pod IP to per-pod
// chains whose peers and ports live in named sets.

type testPod struct {
	key  string // namespace/name
	ip   string
	hash string
}

func (p testPod) in() string  { return "in_x_a_" + p.hash }
func (p testPod) out() string { return "out_x_a_" + p.hash }

func pods(n int) []testPod {
	out := make([]testPod, n)
	for i := range out {
		key := fmt.Sprintf("ns%d/pod-%d", i%7, i)
		sum := sha256.Sum256([]byte(key))
		out[i] = testPod{key: key, ip: fmt.Sprintf("198.18.%d.%d", 100+i/250, 1+i%250), hash: hex.EncodeToString(sum[:3])}
	}
	return out
}

func baseChains() []spec.NFTChain {
	est := spec.NFTRule{
		Match:   []spec.NFTMatch{{Selectors: []string{spec.SelCtState}, Values: []string{"established", "related"}}},
		Verdict: spec.NFTVerdict{Kind: spec.VerdictAccept},
	}
	vmap := func(sel, m string) spec.NFTRule {
		return spec.NFTRule{Verdict: spec.NFTVerdict{Kind: spec.VerdictVmap, Map: m, Selectors: []string{sel}}}
	}
	return []spec.NFTChain{
		{Name: "forward", Hook: spec.HookForward, Policy: spec.VerdictAccept, Comment: "pod to pod: dispatch to per-pod chains",
			Rules: []spec.NFTRule{est, vmap(spec.SelIPSaddr, "egress-dispatch"), vmap(spec.SelIPDaddr, "ingress-dispatch")}},
		{Name: "input", Hook: spec.HookInput, Policy: spec.VerdictAccept, Comment: "pod to node",
			Rules: []spec.NFTRule{est, vmap(spec.SelIPSaddr, "egress-dispatch")}},
	}
}

// podObjects are one pod's chains and sets; variant changes its content
// (a different port and peer) to model a policy update.
func podObjects(p testPod, variant int) ([]spec.NFTChain, []*spec.NFTSet) {
	port := fmt.Sprint(80 + variant)
	comment := "allow-web"
	if variant > 0 {
		comment += fmt.Sprintf("-v%d", variant)
	}
	ports := &spec.NFTSet{Name: p.in() + "-ports", Type: []string{spec.TypeIPv4Addr, spec.TypeProto, spec.TypeService},
		Interval: true, Comment: "ingress ports of " + p.key, Pod: p.key,
		Elements: []spec.NFTElement{
			{Key: []string{"0.0.0.0/0", "udp", "53"}},
			{Key: []string{"198.18.0.0/24", "tcp", port}},
			{Key: []string{"198.18.4.0/22", "tcp", "1000-2000"}},
			{Key: []string{"198.18.9.7", "sctp", "0-65535"}},
		}}
	all := &spec.NFTSet{Name: p.in() + "-all", Type: []string{spec.TypeIPv4Addr}, Interval: true,
		Comment: "ingress peers of " + p.key + " on all ports", Pod: p.key,
		Elements: []spec.NFTElement{{Key: []string{"198.18.8.0/24"}}, {Key: []string{fmt.Sprintf("198.18.9.%d", 5+variant)}}}}
	outAll := &spec.NFTSet{Name: p.out() + "-all", Type: []string{spec.TypeIPv4Addr}, Interval: true, Pod: p.key,
		Comment:  "egress peers of " + p.key,
		Elements: []spec.NFTElement{{Key: []string{"0.0.0.0/0"}}}}
	in := spec.NFTChain{Name: p.in(), Comment: "ingress of " + p.key, Pod: p.key, Rules: []spec.NFTRule{
		{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr, spec.SelL4Proto, spec.SelTHDport}, Set: ports.Name}},
			Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}, Comment: comment},
		{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPSaddr}, Set: all.Name}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
		{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}},
	}}
	out := spec.NFTChain{Name: p.out(), Comment: "egress of " + p.key, Pod: p.key, Rules: []spec.NFTRule{
		{Match: []spec.NFTMatch{{Selectors: []string{spec.SelIPDaddr}, Set: outAll.Name}}, Verdict: spec.NFTVerdict{Kind: spec.VerdictReturn}},
		{Verdict: spec.NFTVerdict{Kind: spec.VerdictDrop}},
	}}
	return []spec.NFTChain{in, out}, []*spec.NFTSet{ports, all, outAll}
}

// testDoc builds the table for n pods; variants maps a pod index to its
// content variant (default 0).
func testDoc(ps []testPod, variants map[int]int) *spec.NFTable {
	t := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Chains: baseChains()}
	egress := &spec.NFTSet{Name: "egress-dispatch", Type: []string{spec.TypeIPv4Addr}, Verdict: true, Comment: "pod IP to its egress chain"}
	ingress := &spec.NFTSet{Name: "ingress-dispatch", Type: []string{spec.TypeIPv4Addr}, Verdict: true, Comment: "pod IP to its ingress chain"}
	for i, p := range ps {
		chains, sets := podObjects(p, variants[i])
		t.Chains = append(t.Chains, chains...)
		t.Sets = append(t.Sets, sets...)
		egress.Elements = append(egress.Elements, spec.NFTElement{Key: []string{p.ip}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: p.out()}})
		ingress.Elements = append(ingress.Elements, spec.NFTElement{Key: []string{p.ip}, Verdict: &spec.NFTVerdict{Kind: spec.VerdictJump, Chain: p.in()}})
	}
	t.Sets = append(t.Sets, egress, ingress)
	t.Canonicalize()
	return t
}

// env is one test namespace with a registry and a reconciler.
type env struct {
	t   testing.TB
	ns  string
	reg *netns.Registry
	r   *Reconciler
}

func newEnv(t testing.TB, name string) *env {
	t.Helper()
	ns := nstest.Netns(t, name)
	reg := netns.NewRegistry("")
	t.Cleanup(reg.Close)
	return &env{t: t, ns: ns, reg: reg, r: New(Options{})}
}

// run executes every op of a plan, as the engine will.
func (e *env) run(ops []op.Op) {
	e.t.Helper()
	for _, o := range ops {
		if err := o.Exec(context.Background(), e.reg); err != nil {
			e.t.Fatalf("exec %s: %v", o, err)
		}
	}
}

func (e *env) plan(doc *spec.NFTable, full bool) []op.Op {
	e.t.Helper()
	var ops []op.Op
	var err error
	if full {
		ops, err = e.r.PlanFull(e.reg, e.ns, doc)
	} else {
		ops, err = e.r.Plan(e.reg, e.ns, doc)
	}
	if err != nil {
		e.t.Fatalf("plan: %v", err)
	}
	return ops
}

func (e *env) apply(doc *spec.NFTable) []op.Op {
	e.t.Helper()
	ops := e.plan(doc, false)
	e.run(ops)
	return ops
}

func (e *env) nft(args ...string) string {
	e.t.Helper()
	return nstest.Run(e.t, e.ns, append([]string{"nft"}, args...)...)
}

// lines prints a plan without its commit op, one op per line.
func lines(ops []op.Op) []string {
	var out []string
	for _, o := range ops {
		if o.Key != CommitKey {
			out = append(out, o.String())
		}
	}
	return out
}

func planText(ops []op.Op) string { return strings.Join(lines(ops), "\n") }

// writeNFT loads nft(8) input into the test namespace.
func writeNFT(t testing.TB, e *env, text string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", nstest.Name(e.ns), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
}

func execNFT(e *env, args ...string) (string, error) {
	return nstest.Exec(e.ns, append([]string{"nft"}, args...)...)
}
