package traffic

import (
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
)

func TestProbeAndThroughputBetweenNamespaces(t *testing.T) {
	a, b := nstest.Netns(t, "tra"), nstest.Netns(t, "trb")
	nstest.Run(t, a, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nstest.Name(b))
	nstest.Run(t, a, "ip", "addr", "add", "198.18.250.1/30", "dev", "va")
	nstest.Run(t, b, "ip", "addr", "add", "198.18.250.2/30", "dev", "vb")
	nstest.Run(t, a, "ip", "link", "set", "va", "up")
	nstest.Run(t, b, "ip", "link", "set", "vb", "up")

	srv, err := Serve(b, "198.18.250.2:8080", "tcp", "udp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	for _, proto := range []string{"tcp", "udp"} {
		if !Probe(a, proto, "198.18.250.2:8080", 2*time.Second) {
			t.Errorf("%s probe a -> b:8080 failed", proto)
		}
		if Probe(a, proto, "198.18.250.2:9999", 500*time.Millisecond) {
			t.Errorf("%s probe a -> b:9999 (nothing listens) succeeded", proto)
		}
	}
	// A 1 MiB/s TBF on b's side of the link shapes the echo back to a.
	nstest.Run(t, b, "tc", "qdisc", "add", "dev", "vb", "root", "tbf", "rate", "8mbit", "burst", "32kb", "limit", "128kb")
	rate, err := Throughput(a, "198.18.250.2:8080", 500*time.Millisecond, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// This checks the tool, not the shaper: under CPU contention TCP through
	// a small TBF queue runs below the rate, so the band is wide.
	if ratio := rate / (1 << 20); ratio < 0.5 || ratio > 1.2 {
		t.Errorf("throughput through an 8 mbit/s TBF = %.0f B/s (%.2f of 1 MiB/s)", rate, ratio)
	}
}
