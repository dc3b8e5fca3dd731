package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/terway-reconciler/terway/spec"
)

func podHash(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// groupChainName is the nft chain of a policy group for one direction ("in"
// or "eg"): the namespace (shortened) as the readable part, and 8 hex digits
// of the hash of the group key. '_' never occurs in Kubernetes names, so the
// parts stay unambiguous.
func groupChainName(direction, namespace, groupKey string) string {
	if len(namespace) > 40 {
		namespace = namespace[:40]
	}
	return direction + "_" + namespace + "_" + hex.EncodeToString(podHash(groupKey))[:8]
}

// ENILinkName is the host name of a shared ENI: eth<device index>, as ECS
// names secondary NICs.
func ENILinkName(deviceIndex int) string { return fmt.Sprintf("eth%d", deviceIndex) }

// ENITable is the route table of a shared ENI.
func ENITable(deviceIndex int) int { return spec.ENITableBase + deviceIndex }
