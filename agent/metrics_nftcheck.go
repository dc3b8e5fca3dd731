package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/terway-reconciler/terway/apply/engine"
)

// nftCheckCollector exports how the full syncs' checks of the host's
// nftables table ahead of the lock concluded: by reading the table, or by
// the ruleset generation alone, when nothing but the agent's own commits
// moved it since the last read (nft.Reconciler.CheckAhead). An operator
// whose node reads every time has another program committing to the
// host's nftables between resyncs.
type nftCheckCollector struct {
	eng    *engine.Engine
	checks *prometheus.Desc
}

func newNFTCheckCollector(eng *engine.Engine) *nftCheckCollector {
	return &nftCheckCollector{eng: eng, checks: prometheus.NewDesc("terway_nft_full_checks_total",
		"Checks of the host's nftables table before a full sync, by how they concluded: read (the table read and compared) or generation (nothing but the agent's commits since the last read).",
		[]string{"how"}, nil)}
}

func (c *nftCheckCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.checks }

func (c *nftCheckCollector) Collect(ch chan<- prometheus.Metric) {
	read, byGen := c.eng.NFTCheckCounts()
	ch <- prometheus.MustNewConstMetric(c.checks, prometheus.CounterValue, float64(read), "read")
	ch <- prometheus.MustNewConstMetric(c.checks, prometheus.CounterValue, float64(byGen), "generation")
}
