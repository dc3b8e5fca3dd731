package spec

import (
	"fmt"
	"strconv"
	"strings"
)

// PrintNFT renders the table as `nft -f` input. The output is deterministic
// for a canonical document and is accepted by `nft -c -f`.
func PrintNFT(t *NFTable) string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table %s %s {\n", t.Family, t.Name)
	for _, s := range t.Sets {
		printSet(&b, s)
	}
	for i := range t.Chains {
		printChain(&b, &t.Chains[i])
	}
	b.WriteString("}\n")
	return b.String()
}

// PrintRuleset renders the node's table and then each pod's table, each
// pod's under a comment naming the pod and its namespace: what `nft -f`
// loads in each namespace, for golden files and `render -o nft`.
func PrintRuleset(s *NodeState) string {
	var b strings.Builder
	b.WriteString(PrintNFT(s.NFTables))
	for i := range s.PodNFTables {
		t := &s.PodNFTables[i]
		fmt.Fprintf(&b, "\n# pod %s, in its network namespace %s\n", t.Pod, t.Netns)
		b.WriteString(PrintNFT(&t.Table))
	}
	return b.String()
}

func printSet(b *strings.Builder, s *NFTSet) {
	word := "set"
	typ := strings.Join(s.Type, " . ")
	if s.Verdict {
		word = "map"
		typ += " : verdict"
	}
	fmt.Fprintf(b, "\t%s %s {\n\t\ttype %s\n", word, s.Name, typ)
	if s.Interval {
		b.WriteString("\t\tflags interval\n")
	}
	if s.Comment != "" {
		fmt.Fprintf(b, "\t\tcomment %s\n", quote(s.Comment))
	}
	if len(s.Elements) > 0 {
		b.WriteString("\t\telements = {")
		for i, e := range s.Elements {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n\t\t\t")
			b.WriteString(FormatElement(e))
		}
		b.WriteString("\n\t\t}\n")
	}
	b.WriteString("\t}\n")
}

// FormatElement prints one set or map element in nft syntax.
func FormatElement(e NFTElement) string {
	s := strings.Join(e.Key, " . ")
	if e.Verdict != nil {
		s += " : " + FormatVerdict(*e.Verdict)
	}
	return s
}

func printChain(b *strings.Builder, c *NFTChain) {
	fmt.Fprintf(b, "\tchain %s {\n", c.Name)
	if c.Hook != "" {
		policy := c.Policy
		if policy == "" {
			policy = VerdictAccept
		}
		fmt.Fprintf(b, "\t\ttype filter hook %s priority %s; policy %s;\n", c.Hook, formatPriority(c.Priority), policy)
	}
	if c.Comment != "" {
		fmt.Fprintf(b, "\t\tcomment %s\n", quote(c.Comment))
	}
	for _, r := range c.Rules {
		b.WriteString("\t\t")
		b.WriteString(FormatRule(r))
		b.WriteString("\n")
	}
	b.WriteString("\t}\n")
}

func formatPriority(p int) string {
	switch {
	case p == 0:
		return "filter"
	case p > 0:
		return "filter + " + strconv.Itoa(p)
	default:
		return "filter - " + strconv.Itoa(-p)
	}
}

// FormatRule prints a rule in nft syntax, as `nft list` would show it.
func FormatRule(r NFTRule) string {
	var parts []string
	for _, m := range r.Match {
		parts = append(parts, FormatMatch(m))
	}
	if r.Counter {
		parts = append(parts, "counter")
	}
	parts = append(parts, FormatVerdict(r.Verdict))
	if r.Comment != "" {
		parts = append(parts, "comment "+quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// FormatMatch prints one match.
func FormatMatch(m NFTMatch) string {
	sel := strings.Join(m.Selectors, " . ")
	op := ""
	if m.Negate {
		op = "!= "
	}
	switch {
	case m.Set != "":
		return sel + " " + op + "@" + m.Set
	case len(m.Selectors) == 1 && m.Selectors[0] == SelCtState:
		return sel + " " + op + strings.Join(m.Values, ",")
	case len(m.Values) == 1:
		return sel + " " + op + formatValue(m.Selectors, m.Values[0])
	default:
		vals := make([]string, len(m.Values))
		for i, v := range m.Values {
			vals[i] = formatValue(m.Selectors, v)
		}
		return sel + " " + op + "{ " + strings.Join(vals, ", ") + " }"
	}
}

// formatValue quotes interface names, which nft would otherwise parse as
// identifiers.
func formatValue(selectors []string, v string) string {
	if len(selectors) == 1 && SelectorType[selectors[0]] == TypeIfName {
		return quote(v)
	}
	return v
}

// FormatVerdict prints a verdict.
func FormatVerdict(v NFTVerdict) string {
	switch v.Kind {
	case VerdictJump, VerdictGoto:
		return v.Kind + " " + v.Chain
	case VerdictVmap:
		return strings.Join(v.Selectors, " . ") + " vmap @" + v.Map
	default:
		return v.Kind
	}
}

func quote(s string) string {
	return strconv.Quote(s)
}
