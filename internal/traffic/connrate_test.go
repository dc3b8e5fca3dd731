package traffic

import (
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
)

// ConnRate counts whole connections and fails on the first that does not
// complete, so that a policy figure never counts blocked attempts.
func TestConnRateBetweenNamespaces(t *testing.T) {
	a, b := nstest.Netns(t, "cra"), nstest.Netns(t, "crb")
	nstest.Run(t, a, "ip", "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", nstest.Name(b))
	nstest.Run(t, a, "ip", "addr", "add", "198.18.251.1/30", "dev", "va")
	nstest.Run(t, b, "ip", "addr", "add", "198.18.251.2/30", "dev", "vb")
	nstest.Run(t, a, "ip", "link", "set", "va", "up")
	nstest.Run(t, b, "ip", "link", "set", "vb", "up")
	srv, err := Serve(b, "198.18.251.2:8080", "tcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)

	rate, err := ConnRate(a, "198.18.251.2:8080", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if rate < 10 {
		t.Errorf("%.0f connections/s over a veth", rate)
	}
	if _, err := ConnRate(a, "198.18.251.2:9999", 300*time.Millisecond); err == nil {
		t.Error("connections to a port nothing listens on were counted")
	}
}
