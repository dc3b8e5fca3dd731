// Package e2e runs the agent against a real Kubernetes API server: the
// manifests are applied to it, terwayd runs in a node network namespace as
// the terway ServiceAccount, a kubelet stand-in sets pods up through the
// real CNI plugin, and every write goes through the API server. As root,
// inside network namespaces the tests create; addresses from 198.18.0.0/15.
//
// The control plane is built once by hack/k8s-assets.sh (cached outside the
// repository); see internal/kubetest.
package e2e

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/testbin"
)

// binaries builds terwayd and the terway CNI plugin (the C forwarder) once
// per test process.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "terway-k8s-e2e-bin-")
		if buildErr != nil {
			return
		}
		buildErr = testbin.Build(context.Background(), binDir, "terwayd")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// eventually polls cond every 20 ms until it holds or bound passes, and
// returns how long it took.
func eventually(t testing.TB, bound time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > bound {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
