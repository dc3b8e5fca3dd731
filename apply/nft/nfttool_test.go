package nft

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

// Read-back through the independent nft(8) tool: `nft -j list table` for
// structure and counts, `nft list table` text against spec.PrintNFT.

type toolChain struct {
	hook, policy string
	prio, rules  int
}

type toolTable struct {
	chains map[string]*toolChain
	sets   map[string][]string // element texts, sorted
}

// toolTable lists the table with nft -j. nft reads a set with the dump
// readElems uses, and a listing that spans the kernel's resize of a hash
// set lists some elements twice and others not at all
// (TestResizingHashSetReadsWhole): one that lists an element twice is
// read again, as readElems does.
func (e *env) toolTable() toolTable {
	e.t.Helper()
	var out toolTable
	for try := 0; try < 20; try++ {
		if try > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		out = e.toolTableOnce()
		if !out.listsTwice() {
			break
		}
	}
	return out
}

// listsTwice says a set's listing holds an element twice.
func (t toolTable) listsTwice() bool {
	for _, elems := range t.sets {
		if len(slices.Compact(slices.Clone(elems))) != len(elems) {
			return true
		}
	}
	return false
}

func (e *env) toolTableOnce() toolTable {
	e.t.Helper()
	raw := e.nft("-j", "list", "table", "inet", "terway")
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		e.t.Fatalf("parse nft -j output: %v", err)
	}
	out := toolTable{chains: map[string]*toolChain{}, sets: map[string][]string{}}
	for _, o := range doc.Nftables {
		for kind, body := range o {
			switch kind {
			case "chain":
				var c struct {
					Name, Hook, Policy string
					Prio               int
				}
				mustJSON(e.t, body, &c)
				out.chains[c.Name] = &toolChain{hook: c.Hook, policy: c.Policy, prio: c.Prio}
			case "rule":
				var r struct{ Chain string }
				mustJSON(e.t, body, &r)
				out.chains[r.Chain].rules++
			case "set", "map":
				var s struct {
					Name string
					Elem []any
				}
				mustJSON(e.t, body, &s)
				elems := []string{}
				for _, el := range s.Elem {
					elems = append(elems, jsonElem(el))
				}
				slices.Sort(elems)
				out.sets[s.Name] = elems
			}
		}
	}
	return out
}

func mustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("parse nft -j object %s: %v", b, err)
	}
}

// jsonElem prints an nft JSON element the way spec.FormatElement does.
func jsonElem(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return fmt.Sprint(int64(x))
	case []any: // map element: [key, verdict]
		if len(x) == 2 {
			return jsonElem(x[0]) + " : " + jsonVerdict(x[1])
		}
	case map[string]any:
		if p, ok := x["prefix"].(map[string]any); ok {
			return fmt.Sprintf("%v/%v", p["addr"], jsonElem(p["len"]))
		}
		if r, ok := x["range"].([]any); ok && len(r) == 2 {
			return jsonElem(r[0]) + "-" + jsonElem(r[1])
		}
		if c, ok := x["concat"].([]any); ok {
			parts := make([]string, len(c))
			for i, p := range c {
				parts[i] = jsonElem(p)
			}
			return strings.Join(parts, " . ")
		}
		if el, ok := x["elem"].(map[string]any); ok {
			return jsonElem(el["val"])
		}
	}
	return fmt.Sprintf("<%v>", v)
}

func jsonVerdict(v any) string {
	m, _ := v.(map[string]any)
	for k, body := range m {
		if t, ok := body.(map[string]any); ok {
			return fmt.Sprintf("%s %v", k, t["target"])
		}
		return k
	}
	return fmt.Sprintf("<%v>", v)
}

// checkTool asserts that nft(8) sees exactly the document's chains (hook,
// priority, policy, rule count) and sets (every element).
func (e *env) checkTool(doc *spec.NFTable) {
	e.t.Helper()
	got := e.toolTable()
	if len(got.chains) != len(doc.Chains) {
		e.t.Errorf("nft -j lists %d chains, the document has %d", len(got.chains), len(doc.Chains))
	}
	for _, c := range doc.Chains {
		g := got.chains[c.Name]
		if g == nil {
			e.t.Errorf("nft -j: chain %s missing", c.Name)
			continue
		}
		if g.rules != len(c.Rules) {
			e.t.Errorf("nft -j: chain %s has %d rules, want %d", c.Name, g.rules, len(c.Rules))
		}
		if c.Hook != "" && (g.hook != c.Hook || g.prio != c.Priority || g.policy != c.Policy) {
			e.t.Errorf("nft -j: chain %s is hook %s prio %d policy %s, want %s %d %s", c.Name, g.hook, g.prio, g.policy, c.Hook, c.Priority, c.Policy)
		}
	}
	if len(got.sets) != len(doc.Sets) {
		e.t.Errorf("nft -j lists %d sets and maps, the document has %d", len(got.sets), len(doc.Sets))
	}
	for _, s := range doc.Sets {
		want := []string{}
		for _, el := range s.Elements {
			want = append(want, spec.FormatElement(el))
		}
		slices.Sort(want)
		if g, ok := got.sets[s.Name]; !ok {
			e.t.Errorf("nft -j: set %s missing", s.Name)
		} else if !slices.Equal(g, want) {
			e.t.Errorf("nft -j: set %s has %d elements, want %d; first difference: %s", s.Name, len(g), len(want), firstDiff(g, want))
		}
	}
}

func firstDiff(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("got %q, want %q", g, w)
		}
	}
	return "none"
}

// textBlocks splits `nft list table` (or PrintNFT) text into its set, map
// and chain blocks, normalised where nft's printing legitimately differs
// from spec.PrintNFT: layout and blank lines, element order and line
// wrapping, a chain's comment printed before its hook line, `meta iifname`
// shortened to `iifname`, `meta l4proto tcp th dport` folded into
// `tcp dport`, interface names in elements quoted, and the table's own
// comment.
func textBlocks(text string) map[string]string {
	var ls []string
	for _, l := range strings.Split(text, "\n") {
		l = strings.Join(strings.Fields(l), " ")
		if l == "" {
			continue
		}
		if n := len(ls); n > 0 && strings.HasPrefix(ls[n-1], "elements = {") && !strings.HasSuffix(ls[n-1], "}") {
			ls[n-1] += " " + l
			continue
		}
		ls = append(ls, l)
	}
	out := map[string]string{}
	var key string
	var body []string
	for _, l := range ls {
		switch {
		case key == "" && (strings.HasPrefix(l, "set ") || strings.HasPrefix(l, "map ") || strings.HasPrefix(l, "chain ")):
			key, body = strings.TrimSuffix(l, " {"), nil
		case key != "" && l == "}":
			out[key] = strings.Join(body, "\n")
			key = ""
		case key != "":
			l = strings.ReplaceAll(l, "meta iifname ", "iifname ")
			l = strings.ReplaceAll(l, "meta oifname ", "oifname ")
			for _, proto := range []string{"tcp", "udp", "sctp"} {
				l = strings.ReplaceAll(l, "meta l4proto "+proto+" th dport ", proto+" dport ")
			}
			if strings.HasPrefix(l, "elements = { ") {
				l = strings.ReplaceAll(l, `"`, "") // nft quotes interface names, PrintNFT need not
				items := strings.Split(strings.TrimSuffix(strings.TrimPrefix(l, "elements = { "), " }"), ", ")
				slices.Sort(items)
				l = "elements = { " + strings.Join(items, ", ") + " }"
			}
			if strings.HasPrefix(key, "chain ") && strings.HasPrefix(l, "comment ") {
				body = append([]string{l}, body...)
				continue
			}
			body = append(body, l)
		}
	}
	return out
}

var counterValues = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// checkText compares `nft list table inet terway` with spec.PrintNFT.
func (e *env) checkText(doc *spec.NFTable) {
	e.t.Helper()
	// A counter's values are the kernel's; PrintNFT prints the statement.
	got := textBlocks(counterValues.ReplaceAllString(e.nft("list", "table", "inet", "terway"), "counter"))
	want := textBlocks(spec.PrintNFT(doc))
	if len(want) == 0 {
		e.t.Fatalf("no blocks in PrintNFT output")
	}
	for k, w := range want {
		if g, ok := got[k]; !ok {
			e.t.Errorf("nft list: %s missing", k)
		} else if g != w {
			e.t.Errorf("nft list: %s differs:\n--- nft list\n%s\n--- spec.PrintNFT\n%s", k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			e.t.Errorf("nft list: unexpected %s", k)
		}
	}
}
