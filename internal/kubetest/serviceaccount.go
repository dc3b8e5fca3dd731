package kubetest

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServiceAccountKubeconfig asks the TokenRequest API for a token of the
// ServiceAccount namespace/name and writes a kubeconfig for it into the
// test's folder. A component run with it has exactly the permissions RBAC
// grants that account, as a DaemonSet pod would: a missing rule in the
// manifests fails the test instead of hiding behind the admin.
//
// The token lives for an hour, longer than any test; it stays valid across
// API server restarts (the signing key is kept).
func (c *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	expiry := int64(time.Hour / time.Second)
	tr, err := c.Admin.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("kubetest: ServiceAccount %s/%s: token request: %w", namespace, name, err)
	}
	if tr.Status.Token == "" {
		return "", fmt.Errorf("kubetest: ServiceAccount %s/%s: token request: status.token is empty", namespace, name)
	}
	path := filepath.Join(c.dir, fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	user := "system:serviceaccount:" + namespace + ":" + name
	if err := c.writeKubeconfig(path, user, &clientcmdapi.AuthInfo{Token: tr.Status.Token}); err != nil {
		return "", err
	}
	return path, nil
}
