package kubetest

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane: objects survive an API server restart (etcd is kept),
// and a ServiceAccount's kubeconfig carries only that account's rights.
func TestControlPlane(t *testing.T) {
	c := Start(t)
	ctx := context.Background()
	_, err := c.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Admin.CoreV1().ServiceAccounts("kept").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "nobody"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path, err := c.ServiceAccountKubeconfig(ctx, "kept", "nobody")
	if err != nil {
		t.Fatal(err)
	}

	// An open watch, as every informer holds: stopping must not wait for
	// it to end.
	w, err := c.Admin.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	start := time.Now()
	c.StopAPIServer()
	stopped := time.Since(start)
	if stopped > 8*time.Second {
		t.Errorf("stopping the API server with a watch open took %s; it must not wait for watches to end", stopped)
	}
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server stopped in %s, started again in %s", stopped.Round(time.Millisecond), (time.Since(start) - stopped).Round(time.Millisecond))
	if _, err := c.Admin.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("namespace kept after the restart: %v", err)
	}

	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sa.CoreV1().Pods("kept").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("ServiceAccount kept/nobody listing pods: %v; want forbidden (it has no role)", err)
	}
	if out, err := c.Kubectl(ctx, "get", "namespace", "kept", "-o", "name"); err != nil || out != "namespace/kept\n" {
		t.Errorf("kubectl get namespace kept: %q, %v", out, err)
	}
}
