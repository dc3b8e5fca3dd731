package wire

import (
	"fmt"
	"strings"
)

// The CNI_ARGS keys PodArgs names.
const (
	ArgPodNamespace        = "K8S_POD_NAMESPACE"
	ArgPodName             = "K8S_POD_NAME"
	ArgPodUID              = "K8S_POD_UID"
	ArgPodInfraContainerID = "K8S_POD_INFRA_CONTAINER_ID"
	argIgnoreUnknown       = "IgnoreUnknown"
)

// ParseCNIArgs parses CNI_ARGS ("K1=V1;K2=V2", as the CNI spec defines it)
// into PodArgs. Unknown keys land in Other rather than failing: runtimes add
// keys over time and the plugin must not break when they do. A pair without
// "=" or with an empty key is an error (code 4) naming the pair, because a
// mangled CNI_ARGS could silently drop the pod's name.
func ParseCNIArgs(s string) (PodArgs, *Error) {
	var a PodArgs
	if strings.TrimSpace(s) == "" {
		return a, nil
	}
	for i, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue // a trailing ";" is common and harmless
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return PodArgs{}, NewError(ErrInvalidEnvironmentVariables,
				fmt.Sprintf("terway: CNI_ARGS pair %d %q is not KEY=VALUE", i+1, pair), "CNI_ARGS="+s)
		}
		switch k {
		case ArgPodNamespace:
			a.Namespace = v
		case ArgPodName:
			a.Name = v
		case ArgPodUID:
			a.UID = v
		case ArgPodInfraContainerID:
			a.InfraContainerID = v
		case argIgnoreUnknown:
		default:
			if a.Other == nil {
				a.Other = map[string]string{}
			}
			a.Other[k] = v
		}
	}
	return a, nil
}
