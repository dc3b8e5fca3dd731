package render

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/terway-reconciler/terway/spec"
)

// Names are derived from the pod's namespace/name alone, so that CNI DEL
// can find everything of a pod without any saved state, and a re-render
// after a restart gives the same names.

func podHash(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// HostVethName is the host-side veth of a pod: "tw" and 11 hex digits of
// the hash of namespace/name (13 characters, under the kernel's 15).
func HostVethName(podKey string) string {
	return spec.HostVethPrefix + hex.EncodeToString(podHash(podKey))[:11]
}

// HostVethMAC and PodVethMAC are locally administered unicast MACs derived
// from the pod, so that the permanent neighbour entries on each side stay
// right when a veth is re-created.
func HostVethMAC(podKey string) string { return derivedMAC("host/" + podKey) }

// PodVethMAC is the MAC of the pod-side end of the pod's veth.
func PodVethMAC(podKey string) string { return derivedMAC("pod/" + podKey) }

func derivedMAC(seed string) string {
	h := podHash(seed)
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
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
