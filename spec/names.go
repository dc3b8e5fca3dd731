package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Names derive from the pod's namespace/name alone, so CNI DEL and a scoped
// plan find everything of a pod without saved state, and a re-render after a
// restart gives the same names. They are part of the ownership contract.

func podHash(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// HostVethName is the host-side veth of a pod: "tw" and 11 hex digits of
// the hash of namespace/name (13 characters, under the kernel's 15).
func HostVethName(podKey string) string {
	return HostVethPrefix + hex.EncodeToString(podHash(podKey))[:11]
}

// HostVethMAC is the MAC of a pod's host veth: locally administered unicast,
// derived from the pod, so that the pod's permanent neighbour entry for its
// gateway stays right when the veth is re-created.
func HostVethMAC(podKey string) string { return derivedMAC("host/" + podKey) }

// PodVethMAC is the MAC of the pod-side end of the pod's veth.
func PodVethMAC(podKey string) string { return derivedMAC("pod/" + podKey) }

func derivedMAC(seed string) string {
	h := podHash(seed)
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}
