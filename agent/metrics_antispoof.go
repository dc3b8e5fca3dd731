package agent

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// antispoofCollector exports the drops of source validation (render's
// antispoof chain) at scrape time, read from the kernel's rule counters:
// the kernel counts every packet, the agent keeps no copy that could drift.
// A rule rewritten by an apply restarts at zero, which Prometheus reads as
// a counter reset.
type antispoofCollector struct {
	ns              op.Namespaces
	log             *slog.Logger
	spoofed, nonIP4 *prometheus.Desc
}

func newAntispoofCollector(ns op.Namespaces, log *slog.Logger) *antispoofCollector {
	return &antispoofCollector{
		ns: ns, log: log,
		spoofed: prometheus.NewDesc("terway_pod_spoofed_packets_total",
			"IPv4 packets from a pod's host veth whose source is not that pod's address, dropped before conntrack and policy.", nil, nil),
		nonIP4: prometheus.NewDesc("terway_pod_non_ipv4_packets_total",
			"Non-IPv4 packets (IPv6, link-local included) from a pod's host veth, dropped: pods are IPv4-only.", nil, nil),
	}
}

func (c *antispoofCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.spoofed
	ch <- c.nonIP4
}

// Collect reports nothing when the kernel cannot be read: a scrape must not
// fail because of one series, and a missing series is visible.
func (c *antispoofCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := nft.ReadCounters(c.ns, spec.HostNetns, render.ChainAntispoof)
	if err != nil {
		if c.log != nil {
			c.log.Warn("read source validation counters", "err", err)
		}
		return
	}
	var spoofed, nonIP4 uint64
	for _, ctr := range counters {
		switch ctr.Comment {
		case render.CommentSpoofed:
			spoofed += ctr.Packets
		case render.CommentNotIPv4:
			nonIP4 += ctr.Packets
		}
	}
	ch <- prometheus.MustNewConstMetric(c.spoofed, prometheus.CounterValue, float64(spoofed))
	ch <- prometheus.MustNewConstMetric(c.nonIP4, prometheus.CounterValue, float64(nonIP4))
}
