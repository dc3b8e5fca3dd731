// Package eni runs Terway's ENI multi-IP walkthrough on a real Kubernetes
// node (internal/realnode) with a cloud: the project's ECS/VPC emulator
// runs inside the node's network namespace, the agent comes up as the
// DaemonSet of manifests/terway-multiip.yml (image, endpoints, vSwitch and
// security group set by the harness; the test's pool and ENI split below),
// and every ENI the emulator attaches appears in the node as a link with
// its MAC. The kubelet, containerd and runc create the pods; the kubelet's
// device plugin manager admits the pods that request aliyun/eni.
//
// Needs root; see internal/realnode/rntest for the environment variables.
package eni

import (
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/terway-reconciler/terway/internal/realnode/rntest"
)

// The test's configuration, beside the manifest's: one secondary ENI kept
// for multi-IP pods, so that the others are advertised as aliyun/eni; a
// pool of at most one idle IP, so that the IPs of deleted pods go back to
// the vSwitch, where the emulator's dump shows them.
const (
	reservedENIs = 1
	minPool      = 0
	maxPool      = 1
)

var configEdits = []struct{ re, repl string }{
	{`(?m)^(\s+)# reservedENIsForMultiIP: 1$`, fmt.Sprintf("${1}reservedENIsForMultiIP: %d", reservedENIs)},
	{`(?m)^(\s+)minPoolSize: \d+$`, fmt.Sprintf("${1}minPoolSize: %d", minPool)},
	{`(?m)^(\s+)maxPoolSize: \d+$`, fmt.Sprintf("${1}maxPoolSize: %d", maxPool)},
}

func editConfig(m string) (string, error) {
	for _, e := range configEdits {
		re := regexp.MustCompile(e.re)
		if n := len(re.FindAllString(m, -1)); n != 1 {
			return "", fmt.Errorf("manifests/terway-multiip.yml: %d lines match %s, want 1", n, e.re)
		}
		m = re.ReplaceAllString(m, e.repl)
	}
	return m, nil
}

func TestMain(m *testing.M) {
	os.Exit(rntest.Main(m, rntest.Options{Prefix: "rne", Manifest: "manifests/terway-multiip.yml", Cloud: true, Edit: editConfig}))
}
