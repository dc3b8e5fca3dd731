package inputs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

func testPod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, UID: types.UID("uid-" + name), Labels: labels,
			Annotations: map[string]string{
				"k8s.aliyun.com/ingress-bandwidth": "1m",
				corev1.LastAppliedConfigAnnotation: `{"a": "big copy of the pod"}`,
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
			Finalizers:    []string{"example.com/keep"},
		},
		Spec: corev1.PodSpec{
			NodeName:       node,
			Volumes:        []corev1.Volume{{Name: "data"}},
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers: []corev1.Container{{
				Name: "app", Image: "nginx", Command: []string{"nginx"},
				Env:   []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{"aliyun/eni": resource.MustParse("1")},
				},
			}},
		},
		Status: corev1.PodStatus{
			Phase:             corev1.PodRunning,
			PodIP:             "198.18.0.10",
			PodIPs:            []corev1.PodIP{{IP: "198.18.0.10"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true}},
		},
	}
}

func TestKubernetesSource(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.0.0/24"},
			Status: corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"nginx"}}}}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Spec: corev1.NodeSpec{PodCIDR: "198.18.1.0/24"}},
		testPod("prod", "web", "node-a", map[string]string{"app": "web"}),
		testPod("prod", "db", "node-b", map[string]string{"app": "db"}),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"team": "a"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all"}},
	)
	k, err := NewKubernetes(client, "node-a", KubernetesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if k.Synced() {
		t.Fatal("Synced before Start")
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, k, "sync", func(Snapshot) bool { return k.Synced() })

	if len(s.Errors) != 0 {
		t.Errorf("errors: %v", s.Errors)
	}
	if s.Node == nil || s.Node.Name != "node-a" || s.Node.Spec.PodCIDR != "198.18.0.0/24" {
		t.Fatalf("node: got %s, want node-a", describe(s))
	}
	if s.Node.Status.Images != nil || s.Node.ManagedFields != nil {
		t.Errorf("node not slimmed: images %v, managedFields %v", s.Node.Status.Images, s.Node.ManagedFields)
	}
	if got, want := podKeys(s), []string{"prod/db", "prod/web"}; !slices.Equal(got, want) {
		t.Errorf("pods: got %v, want %v (other nodes' pods too)", got, want)
	}
	if got := nsNames(s); !slices.Equal(got, []string{"prod"}) || s.Namespaces[0].ManagedFields != nil {
		t.Errorf("namespaces: got %v (managedFields %v)", got, s.Namespaces[0].ManagedFields)
	}
	if got := policyKeys(s); !slices.Equal(got, []string{"prod/deny-all"}) {
		t.Errorf("policies: got %v", got)
	}

	// The transform kept what render reads and dropped the rest.
	web, ok := k.Pod("prod", "web")
	if !ok {
		t.Fatal("Pod(prod, web): not found")
	}
	if web.ManagedFields != nil || web.Finalizers != nil || web.Annotations[corev1.LastAppliedConfigAnnotation] != "" {
		t.Errorf("metadata not slimmed: %+v", web.ObjectMeta)
	}
	if web.UID != "uid-web" || web.Labels["app"] != "web" || web.Annotations["k8s.aliyun.com/ingress-bandwidth"] != "1m" {
		t.Errorf("metadata lost what render needs: %+v", web.ObjectMeta)
	}
	c := web.Spec.Containers[0]
	if web.Spec.Volumes != nil || web.Spec.InitContainers != nil || c.Image != "" || c.Env != nil || c.Command != nil {
		t.Errorf("spec not slimmed: %+v", web.Spec)
	}
	if web.Spec.NodeName != "node-a" || c.Name != "app" || c.Ports[0].Name != "http" || c.Resources.Limits.Name("aliyun/eni", resource.DecimalSI).Value() != 1 {
		t.Errorf("spec lost what render needs: %+v", web.Spec)
	}
	if web.Status.Conditions != nil || web.Status.ContainerStatuses != nil {
		t.Errorf("status not slimmed: %+v", web.Status)
	}
	if web.Status.Phase != corev1.PodRunning || web.Status.PodIP != "198.18.0.10" || len(web.Status.PodIPs) != 1 {
		t.Errorf("status lost what render needs: %+v", web.Status)
	}

	pods := client.CoreV1().Pods("prod")
	// An update signals Changed.
	drain(k)
	relabel(ctx, t, pods, "db", "tier", "back")
	waitFor(t, k, "the new label", func(Snapshot) bool {
		p, ok := k.Pod("prod", "db")
		return ok && p.Labels["tier"] == "back"
	})

	// A new pod elsewhere, a deleted pod here.
	drain(k)
	if _, err := pods.Create(ctx, testPod("prod", "cache", "node-c", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pods.Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "cache added and web deleted", func(s Snapshot) bool {
		return slices.Equal(podKeys(s), []string{"prod/cache", "prod/db"})
	})

	// A deleted policy and a new namespace.
	drain(k)
	if err := client.NetworkingV1().NetworkPolicies("prod").Delete(ctx, "deny-all", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dev"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "policy deleted and namespace added", func(s Snapshot) bool {
		return len(s.Policies) == 0 && slices.Equal(nsNames(s), []string{"dev", "prod"})
	})

	// This node changes; another node's change never becomes this node.
	drain(k)
	nodes := client.CoreV1().Nodes()
	b, err := nodes.Get(ctx, "node-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Labels = map[string]string{"changed": "b"}
	if _, err := nodes.Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a, err := nodes.Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.Labels = map[string]string{"changed": "a"}
	if _, err := nodes.Update(ctx, a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, k, "node-a's label", func(s Snapshot) bool { return s.Node != nil && s.Node.Labels["changed"] == "a" })
	if s.Node.Name != "node-a" {
		t.Errorf("node: got %s", s.Node.Name)
	}

	// This node deleted: Node nil and an error naming it.
	drain(k)
	if err := nodes.Delete(ctx, "node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, k, "node-a gone", func(s Snapshot) bool { return s.Node == nil })
	if !errorsContain(s, "Node node-a", "not found") {
		t.Errorf("errors without this node: %v", s.Errors)
	}
}

func TestKubernetesEmptyClusterSyncs(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k, err := NewKubernetes(fake.NewClientset(), "node-a", KubernetesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// No object means no add event: Changed must still fire once synced.
	s := waitFor(t, k, "sync", func(Snapshot) bool { return k.Synced() })
	if s.Node != nil || !errorsContain(s, "Node node-a", "not found") {
		t.Errorf("empty cluster: %s", describe(s))
	}
	if err := k.Start(ctx); err == nil {
		t.Error("second Start: no error")
	}
}

func TestNewKubernetesRejects(t *testing.T) {
	if _, err := NewKubernetes(nil, "node-a", KubernetesOptions{}); err == nil {
		t.Error("nil client: no error")
	}
	if _, err := NewKubernetes(fake.NewClientset(), "", KubernetesOptions{}); err == nil {
		t.Error("empty node name: no error")
	}
}

func TestUnchanged(t *testing.T) {
	base, err := slim(testPod("prod", "web", "node-a", map[string]string{"app": "web"}))
	if err != nil {
		t.Fatal(err)
	}
	old := base.(*corev1.Pod)
	old.ResourceVersion = "1"

	// Only a condition changed: after the transform the objects are equal.
	next := testPod("prod", "web", "node-a", map[string]string{"app": "web"})
	next.ResourceVersion = "2"
	next.Status.Conditions[0].Status = corev1.ConditionFalse
	cur, _ := slim(next)
	if !unchanged(old, cur) {
		t.Error("a pod whose only change is a dropped field counts as changed")
	}
	if old.ResourceVersion != "1" || cur.(*corev1.Pod).ResourceVersion != "2" {
		t.Error("unchanged modified its arguments")
	}

	next.Labels["app"] = "api"
	cur, _ = slim(next)
	if unchanged(old, cur) {
		t.Error("a label change counts as unchanged")
	}
	if unchanged(old, &corev1.Namespace{}) {
		t.Error("objects of different types count as unchanged")
	}

	// slim does not modify its argument and is idempotent.
	orig := testPod("prod", "web", "node-a", nil)
	once, _ := slim(orig)
	twice, _ := slim(once)
	if orig.ManagedFields == nil || orig.Annotations[corev1.LastAppliedConfigAnnotation] == "" {
		t.Error("slim modified its argument")
	}
	if !unchanged(once, twice) {
		t.Error("slim is not idempotent")
	}
}

func TestBuildConfig(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	_, err := BuildConfig("")
	if err == nil || !strings.Contains(err.Error(), "--kube-inputs") {
		t.Errorf("no kubeconfig, not in a pod: got %v, want an error saying what to give", err)
	}

	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := BuildConfig(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing kubeconfig: got %v, want an error naming it", err)
	}

	path := filepath.Join(t.TempDir(), "kubeconfig")
	const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := BuildConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("host: got %q", cfg.Host)
	}
}

// TestKubernetesSnapshotFollowsChanges: Snapshot lists an informer again
// only after a change to it (sortedList), and each snapshot still shows
// every change Changed announced, in its sorted place, in slices of the
// caller's own.
func TestKubernetesSnapshotFollowsChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
		testPod("prod", "web", "node-a", map[string]string{"app": "web"}),
		testPod("prod", "db", "node-b", map[string]string{"app": "db"}),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "prod", Name: "deny-all"}},
	)
	k, err := NewKubernetes(client, "node-a", KubernetesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, k, "sync", func(s Snapshot) bool { return k.Synced() && len(s.Pods) == 2 })

	// The caller's slices are its own.
	s.Pods[0], s.Pods[1] = s.Pods[1], nil
	s.Policies = append(s.Policies[:0], nil)
	again := k.Snapshot()
	if got := podKeys(again); !slices.Equal(got, []string{"prod/db", "prod/web"}) || again.Policies[0] == nil {
		t.Fatalf("a caller's changes to its snapshot reached the next one: pods %v, policies %v", got, again.Policies)
	}
	if s := k.Snapshot(); &s.Pods[0] == &again.Pods[0] {
		t.Fatal("two snapshots share their pod slice")
	}

	// A label change shows in the snapshot's pod.
	pods := client.CoreV1().Pods("prod")
	drain(k)
	relabel(ctx, t, pods, "db", "tier", "back")
	s = waitFor(t, k, "the new label in the snapshot", func(s Snapshot) bool {
		return len(s.Pods) == 2 && s.Pods[0].Labels["tier"] == "back"
	})
	before := s.Pods[0]

	// An update that Changed ignores (a condition only) keeps the listed
	// object, which reads the same.
	db, err := pods.Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db.Status.Conditions[0].Status = corev1.ConditionFalse
	db.ResourceVersion = "99"
	if _, err := pods.Update(ctx, db, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(waitBound); ; time.Sleep(10 * time.Millisecond) {
		// The store itself, not Pod: a lookup that finds the store ahead
		// of the list makes the next Snapshot list again.
		if p, ok, _ := k.informers[podInformer].inf.GetStore().GetByKey("prod/db"); ok && p != before {
			break // the informer has the update
		}
		if time.Now().After(deadline) {
			t.Fatal("the condition update never reached the informer")
		}
	}
	if s := k.Snapshot(); s.Pods[0] != before {
		t.Errorf("an update that changes nothing made Snapshot list the pods again")
	}

	// A new pod sorts into its place; a deleted policy and a namespace's
	// new label show.
	drain(k)
	if _, err := pods.Create(ctx, testPod("prod", "cache", "node-c", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.NetworkingV1().NetworkPolicies("prod").Delete(ctx, "deny-all", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ns, err := client.CoreV1().Namespaces().Get(ctx, "prod", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels = map[string]string{"team": "b"}
	if _, err := client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "the new pod, the policy gone, the namespace label", func(s Snapshot) bool {
		return slices.Equal(podKeys(s), []string{"prod/cache", "prod/db", "prod/web"}) && len(s.Policies) == 0 &&
			len(s.Namespaces) == 1 && s.Namespaces[0].Labels["team"] == "b"
	})
}

// relabel sets a label of the pod name through the API.
func relabel(ctx context.Context, t *testing.T, pods typedcorev1.PodInterface, name, key, value string) {
	t.Helper()
	p, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Labels[key] = value
	if _, err := pods.Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestKubernetesSnapshotAfterPodLookup: the informer's store is updated
// before the handlers count the change, so the store can hold a pod the
// listed pods lack yet. A caller that found the pod through Pod (a CNI
// ADD waiting for its pod) finds it in the next Snapshot.
func TestKubernetesSnapshotAfterPodLookup(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}},
		testPod("prod", "web", "node-a", nil))
	k, err := NewKubernetes(client, "node-a", KubernetesOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, k, "sync", func(s Snapshot) bool { return k.Synced() && len(s.Pods) == 1 })
	// The store ahead of the handlers: a pod put there directly, which no
	// handler counts.
	ahead, err := slim(testPod("prod", "api", "node-a", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.informers[podInformer].inf.GetStore().Add(ahead); err != nil {
		t.Fatal(err)
	}
	if got := podKeys(k.Snapshot()); !slices.Equal(got, []string{"prod/web"}) {
		t.Fatalf("before any lookup the snapshot lists %v: the test does not reproduce a store ahead of the list", got)
	}
	if _, ok := k.Pod("prod", "api"); !ok {
		t.Fatal("Pod(prod, api): not found in the store")
	}
	if got := podKeys(k.Snapshot()); !slices.Equal(got, []string{"prod/api", "prod/web"}) {
		t.Errorf("after Pod found prod/api the snapshot lists %v", got)
	}
	// A pod the list has as it is costs no listing.
	before := k.informers[podInformer].list.changes.Load()
	if _, ok := k.Pod("prod", "web"); !ok {
		t.Fatal("Pod(prod, web): not found")
	}
	if after := k.informers[podInformer].list.changes.Load(); after != before {
		t.Errorf("looking up a listed pod counted %d changes", after-before)
	}
}
