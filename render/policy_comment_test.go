package render

import (
	"fmt"
	"strings"
	"testing"
)

func TestPoliciesCommentFitsNft(t *testing.T) {
	const prefix = "ingress of pods isolated by NetworkPolicy "
	many := func(n int) []string {
		var names []string
		for i := range n {
			names = append(names, fmt.Sprintf("bench/p-%05d", i))
		}
		return names
	}
	for _, c := range []struct {
		names []string
		want  string
	}{
		{[]string{"a/x", "b/y"}, prefix + "a/x, b/y"},
		{many(1000), prefix + "bench/p-00000, bench/p-00001, bench/p-00002, bench/p-00003, bench/p-00004 and 995 more"},
		{[]string{"ns/" + strings.Repeat("n", 200)}, prefix + "(1 policy, its name too long to show)"},
	} {
		got := policiesComment(prefix, c.names)
		if got != c.want || len(got) > nftCommentMax {
			t.Errorf("%d names: %q (%d bytes), want %q", len(c.names), got, len(got), c.want)
		}
	}
	// Every count fits, whatever the names.
	for n := 1; n < 60; n++ {
		if got := policiesComment(prefix, many(n)); len(got) > nftCommentMax {
			t.Errorf("%d names: %d bytes", n, len(got))
		}
	}
}
