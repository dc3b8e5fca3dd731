package realnode

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// upstreamSample is five of Kubernetes' own NetworkPolicy e2e specs, run by
// every `make test` (the whole suite is `make e2e-upstream`): deny by
// default for ingress and for all, a pod selector, a label change of a
// selected pod, and a named egress port.
var upstreamSample = []string{
	"should support a 'default-deny-ingress' policy",
	"should support a 'default-deny-all' policy",
	"should enforce policy to allow traffic from pods within server namespace based on PodSelector",
	"should deny ingress access to updated pod",
	"should allow egress access on one named port",
}

// TestUpstreamNetpolSample runs upstreamSample with e2e.test against the
// real node: each spec probes real traffic between agnhost pods and must
// pass.
func TestUpstreamNetpolSample(t *testing.T) {
	c := rntest.Need(t)
	var alt []string
	for _, s := range upstreamSample {
		alt = append(alt, regexpQuote(s))
	}
	focus := `\[sig-network\] Netpol NetworkPolicy between server and client (` + strings.Join(alt, "|") + `)`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	res, err := realnode.RunE2E(ctx, c, realnode.E2EOptions{Focus: focus, Skip: `\[Feature:SCTPConnectivity\]`,
		ReportDir: t.TempDir(), Timeout: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("upstream Netpol sample: %s", res.Summary())
	if len(res.Failed) > 0 || len(res.Passed) < len(upstreamSample) {
		t.Fatalf("upstream Netpol sample: %s (want all %d of the sample passed); log %s", res, len(upstreamSample), res.Log)
	}
	// The run's usage report: the agent was sampled in its pod, and the
	// kubelet counted the sample's pods (each spec starts at least one).
	u := res.Usage
	t.Logf("usage:\n%s", u)
	if u == nil || u.Agent == nil || u.Agent.RSSMaxBytes <= 0 || u.Agent.CPUSeconds <= 0 || len(u.Problems) > 0 {
		t.Errorf("agent usage not measured: %+v", u)
	}
	if u != nil && (u.PodStart == nil || u.PodStart.Count < float64(len(upstreamSample)) || u.PodStart.P50 <= 0) {
		t.Errorf("pod start SLI not measured: %+v", u.PodStart)
	}
}

// regexpQuote escapes what a ginkgo focus regexp would read as syntax.
func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteRune('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
