// Package realnode runs the Terway walkthrough on a real Kubernetes node
// (internal/realnode): the kubelet, containerd and runc create the pods,
// kube-proxy serves the Services, the scheduler places the pods, and the
// only parts of ours in the path are the agent and its CNI plugin, brought
// up by `kubectl apply -f manifests/terway.yml`. One node serves the whole
// package; it is removed when the tests end, also when they fail.
//
// Needs root. The node's binaries come from hack/node-assets.sh's cache;
// when they are missing the tests build them (about 25 minutes cold),
// unless TERWAY_REALNODE_BUILD=0, which makes them skip saying so.
// TERWAY_REALNODE_IMAGE and TERWAY_REALNODE_IMAGE_ARCHIVE name an agent
// image `make image` built; without them the tests build one.
// TERWAY_REALNODE_NAME runs the tests on a node `make node-up` started
// (NODE=name) instead, and leaves it up. internal/realnode/rntest runs the
// node and has the helpers.
package realnode

import (
	"os"
	"testing"

	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

func TestMain(m *testing.M) {
	os.Exit(rntest.Main(m, rntest.Options{Prefix: "rnt", Manifest: "manifests/terway.yml"}))
}
