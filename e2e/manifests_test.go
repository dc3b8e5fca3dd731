package e2e

import (
	"context"
	"os"
	"strings"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/internal/kubetest"
)

// TestManifests applies each manifest to a real API server, first with
// --dry-run=server (admission and validation without writing), then for
// real, then again (no change), and checks the agent's ServiceAccount has
// exactly the rights the agent uses: read Node, Pods, Namespaces and
// NetworkPolicies, write Events — and nothing more.
func TestManifests(t *testing.T) {
	cp := kubetest.Start(t)
	ctx := context.Background()
	for _, m := range []string{"manifests/terway.yml", "manifests/terway-multiip.yml"} {
		path := kubetest.RepoFile(t, m)
		t.Run(m, func(t *testing.T) {
			if _, err := os.Stat(path); os.IsNotExist(err) {
				t.Skipf("%s does not exist (yet)", m)
			}
			kubectl := func(args ...string) string {
				t.Helper()
				out, err := cp.Kubectl(ctx, args...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			out := kubectl("apply", "--dry-run=server", "-f", path)
			t.Logf("kubectl apply --dry-run=server -f %s:\n%s", m, out)
			kubectl("apply", "-f", path)
			// Each manifest is created from scratch: the next one's dry run
			// must validate a creation, not an update of this one's objects.
			defer kubectl("delete", "-f", path, "--wait=false")
			for _, line := range strings.Split(strings.TrimSpace(kubectl("apply", "-f", path)), "\n") {
				if !strings.HasSuffix(line, " configured") {
					continue
				}
				t.Errorf("second apply of %s changed an object (the manifest does not round-trip): %s", m, line)
			}
			ds, err := cp.Admin.AppsV1().DaemonSets("kube-system").Get(ctx, "terway", metav1.GetOptions{})
			if err != nil {
				t.Fatalf("DaemonSet kube-system/terway after apply: %v", err)
			}
			if sa := ds.Spec.Template.Spec.ServiceAccountName; sa != "terway" {
				t.Errorf("DaemonSet kube-system/terway: spec.template.spec.serviceAccountName %q, want terway", sa)
			}

			// What `kubectl auth can-i --as` asks, as one SubjectAccessReview
			// per rule instead of one kubectl process each; with the groups
			// a ServiceAccount token carries.
			sa := "system:serviceaccount:kube-system:terway"
			for _, c := range []struct {
				verb, group, resource string
				want                  bool
			}{
				{"get", "", "nodes", true}, {"list", "", "nodes", true}, {"watch", "", "nodes", true},
				{"list", "", "pods", true}, {"watch", "", "pods", true},
				{"list", "", "namespaces", true}, {"watch", "", "namespaces", true},
				{"list", "networking.k8s.io", "networkpolicies", true}, {"watch", "networking.k8s.io", "networkpolicies", true},
				{"create", "", "events", true}, {"patch", "", "events", true},
				{"create", "events.k8s.io", "events", true}, {"patch", "events.k8s.io", "events", true},
				// Least privilege: the agent writes nothing else.
				{"update", "", "pods", false}, {"delete", "", "pods", false}, {"update", "", "nodes", false},
				{"list", "", "secrets", false}, {"create", "networking.k8s.io", "networkpolicies", false},
			} {
				r, err := cp.Admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
					Spec: authorizationv1.SubjectAccessReviewSpec{
						User:   sa,
						Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
						ResourceAttributes: &authorizationv1.ResourceAttributes{
							Verb: c.verb, Group: c.group, Resource: c.resource,
						},
					},
				}, metav1.CreateOptions{})
				if err != nil {
					t.Fatalf("SubjectAccessReview %s %s.%s: %v", c.verb, c.resource, c.group, err)
				}
				if r.Status.Allowed != c.want {
					t.Errorf("%s may %s %s (group %q) in every namespace: %v, want %v (%s)", sa, c.verb, c.resource, c.group,
						r.Status.Allowed, c.want, r.Status.Reason)
				}
			}
		})
	}
}
