// Package twonode runs pods on two real Kubernetes nodes in one cluster
// (internal/realnode, Nodes: 2): the first node runs the control plane and
// a kubelet, the second (<name>-2) its own containerd, kubelet and
// kube-proxy in network and mount namespaces of its own, joined to the
// first's API server. A vpc namespace routes each node's podCIDR to that
// node, as the VPC route table does. The agent is the DaemonSet of
// manifests/terway.yml (VPC mode), Ready on both nodes.
//
// Needs root; see internal/realnode/rntest for the environment variables
// (TERWAY_REALNODE_NAME names a cluster `make node-up NODES=2` started).
package twonode

import (
	"os"
	"testing"

	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

func TestMain(m *testing.M) {
	os.Exit(rntest.Main(m, rntest.Options{Prefix: "rn2n", Manifest: "manifests/terway.yml", Nodes: 2}))
}
