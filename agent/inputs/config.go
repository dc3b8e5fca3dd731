package inputs

import (
	"errors"
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// BuildConfig returns the API server connection for the agent: from the
// kubeconfig file when a path is given, else from the in-cluster service
// account (as a DaemonSet pod has). Without either it says what to give
// instead, since a node agent that silently runs without its cluster would
// render an empty node.
func BuildConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("no Kubernetes API server: no kubeconfig was given and this is not a pod "+
			"(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset); give a kubeconfig, "+
			"or read objects from files with --kube-inputs DIR: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster Kubernetes config: %w", err)
	}
	return cfg, nil
}
