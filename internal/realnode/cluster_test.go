package realnode

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateCluster(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string // "" when valid
	}{
		{Config{Name: "x", Nodes: 2}, ""},
		{Config{Name: "x", Nodes: maxNodes}, ""},
		{Config{Name: "x", Nodes: maxNodes + 1}, "nodes 9"},
		{Config{Name: "x", Nodes: -1}, "nodes -1"},
		{Config{Name: "x", Nodes: 2, Emulator: "/bin/terwayctl"}, "emulator"},
		{Config{Name: "abcdefghij-abcdefghi", Nodes: 2}, "worker name"},
		{Config{Name: "abcdefghij-abcdefghi"}, ""},
		{Config{Name: "x", Nodes: 3, NodeIP: mustAddr("198.18.0.252")}, "below .254"},
	} {
		tc.c.Defaults()
		err := tc.c.Validate()
		if tc.want == "" && err != nil {
			t.Errorf("%+v: %v, want valid", tc.c, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want an error saying %q", tc.c, err, tc.want)
		}
	}
}

// The workers follow the first node: the next addresses of its subnet, its
// ranges, and clients of its API server, each kubelet with an identity of
// its own in the API server's token file.
func TestWorkersJoinTheFirstNode(t *testing.T) {
	a := &Config{Name: "x", Nodes: 3, StateDir: t.TempDir(), Images: []string{"i.tar"}}
	a.Defaults()
	ws := a.Workers()
	if len(ws) != 2 {
		t.Fatalf("%d workers, want 2", len(ws))
	}
	if err := a.writeFiles(); err != nil {
		t.Fatal(err)
	}
	tokens, err := os.ReadFile(filepath.Join(a.Dir(), "pki", "tokens.csv"))
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if want := fmt.Sprintf("x-%d", i+2); w.Name != want || w.Validate() != nil {
			t.Errorf("worker %d: name %q, want %q", i, w.Name, want)
		}
		if want := fmt.Sprintf("198.18.0.%d", i+2); w.NodeIP.String() != want {
			t.Errorf("worker %s: IP %s, want %s", w.Name, w.NodeIP, want)
		}
		if w.PodCIDR != a.PodCIDR || w.ServiceCIDR != a.ServiceCIDR || len(w.Images) != 1 || w.Workers() != nil {
			t.Errorf("worker %s: %+v", w.Name, w)
		}
		if w.gateway() != mustAddr("198.18.0.254") || w.ClusterNetns() != "rc-x" {
			t.Errorf("worker %s: gateway %s, vpc %s", w.Name, w.gateway(), w.ClusterNetns())
		}
		if err := w.writeFiles(); err != nil {
			t.Fatal(err)
		}
		kc, err := os.ReadFile(filepath.Join(w.Dir(), "kubelet.kubeconfig"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(kc), "https://198.18.0.1:6443") || !strings.Contains(string(kc), w.nodeToken()) {
			t.Errorf("worker %s's kubelet kubeconfig:\n%s", w.Name, kc)
		}
		line := fmt.Sprintf("%s,system:node:%s,node-%s,system:nodes\n", w.nodeToken(), w.Name, w.Name)
		if !strings.Contains(string(tokens), line) {
			t.Errorf("tokens.csv lacks %q:\n%s", line, tokens)
		}
		// A worker trusts the first node's CA and has no key of its own.
		ca, _ := os.ReadFile(filepath.Join(a.Dir(), "pki", "ca.crt"))
		wca, _ := os.ReadFile(filepath.Join(w.Dir(), "pki", "ca.crt"))
		if len(ca) == 0 || string(ca) != string(wca) {
			t.Errorf("worker %s: CA differs from the first node's", w.Name)
		}
		if _, err := os.Stat(filepath.Join(w.Dir(), "pki", "ca.key")); err == nil {
			t.Errorf("worker %s has a CA key", w.Name)
		}
	}
	if strings.Count(string(tokens), "system:nodes") != 3 {
		t.Errorf("tokens.csv has %d node identities, want 3:\n%s", strings.Count(string(tokens), "system:nodes"), tokens)
	}
}

// Down of the first node removes what a crashed two-node run left, the
// worker's namespace and the vpc namespace included, also when it is told
// of one node only (the count is not recorded anywhere).
func TestDownRemovesAClusterLeftBehind(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	c := &Config{Name: fmt.Sprintf("dn%d", os.Getpid()%100000), StateDir: t.TempDir()}
	c.Defaults()
	w := c.worker(2)
	left := []string{c.Netns(), w.Netns(), c.ClusterNetns()}
	t.Cleanup(func() {
		for _, ns := range left {
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	})
	for _, ns := range left {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
	}
	if err := os.MkdirAll(filepath.Join(w.Dir(), "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Down(c); err != nil {
		t.Fatal(err)
	}
	for _, ns := range left {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			t.Errorf("netns %s survives Down", ns)
		}
	}
	if _, err := os.Stat(w.Dir()); err == nil {
		t.Errorf("the worker's folder %s survives Down", w.Dir())
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
