package agent

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// cloudCollector exports the ENI reconciler's API calls and errors by
// action (and code) at scrape time: the figure a platform team watches
// against its account's API rate limits.
type cloudCollector struct {
	r             *eni.Reconciler
	calls, errors *prometheus.Desc
	ips           *prometheus.Desc
}

func newCloudCollector(r *eni.Reconciler) *cloudCollector {
	return &cloudCollector{
		r: r,
		calls: prometheus.NewDesc("terway_cloud_api_calls_total", "ECS/VPC API calls made, by action.",
			[]string{"action"}, nil),
		errors: prometheus.NewDesc("terway_cloud_api_errors_total", "ECS/VPC API calls that failed, by action and error code (NoAnswer: the answer was lost).",
			[]string{"action", "code"}, nil),
		ips: prometheus.NewDesc("terway_eni_ips", "ENI IPs of this node, by state (held by a pod, idle in the pool).",
			[]string{"state"}, nil),
	}
}

func (c *cloudCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.errors
	ch <- c.ips
}

func (c *cloudCollector) Collect(ch chan<- prometheus.Metric) {
	counters := c.r.Counters()
	for action, n := range counters.Calls {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(n), action)
	}
	for key, n := range counters.Errors {
		action, code, _ := strings.Cut(key, "/")
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(n), action, code)
	}
	st := c.r.Status()
	ch <- prometheus.MustNewConstMetric(c.ips, prometheus.GaugeValue, float64(st.HeldIPs), "held")
	ch <- prometheus.MustNewConstMetric(c.ips, prometheus.GaugeValue, float64(st.IdleIPs), "idle")
}
