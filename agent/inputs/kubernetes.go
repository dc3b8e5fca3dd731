package inputs

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// KubernetesOptions tunes a Kubernetes source. The zero value is ready to
// use.
type KubernetesOptions struct {
	// Logger receives one line per decision; nil means slog.Default().
	Logger *slog.Logger
	// Resync makes the informers replay their caches periodically. Zero (the
	// default) turns it off: replays change nothing here, since unchanged
	// objects do not signal Changed, and the agent runs its own full pass.
	Resync time.Duration
}

// Kubernetes is the in-cluster source: client-go shared informers for this
// node's Node object (a field selector on its name), Pods in all namespaces
// (other nodes' pods are NetworkPolicy peers), Namespaces and
// NetworkPolicies.
//
// To keep memory small on big clusters, every object is slimmed before it
// is cached (see slimPod and slimMeta): managed fields and the
// last-applied-configuration annotation go, and a Pod keeps only what render
// reads. An update that leaves the slimmed object as it was (a pod condition
// flipping, a status heartbeat) does not signal Changed.
//
// A failing list or watch (RBAC, an unreachable API server) appears in
// Snapshot.Errors while that informer has not synced; after it has, client-go
// retries with backoff, the cache stays the last known truth, and the
// failure is logged.
type Kubernetes struct {
	nodeName string
	log      *slog.Logger
	changed  chan struct{}

	nodeFactory, factory informers.SharedInformerFactory
	informers            []namedInformer

	mu        sync.Mutex
	started   bool
	watchErrs map[string]error // last list/watch failure by informer
}

// Positions in Kubernetes.informers.
const (
	nodeInformer = iota
	podInformer
	namespaceInformer
	policyInformer
)

type namedInformer struct {
	kind string
	inf  cache.SharedIndexInformer
	reg  cache.ResourceEventHandlerRegistration
	// list is the informer's objects as the last Snapshot listed them.
	list *sortedList
}

// sortedList is an informer's objects sorted by namespace/name, listed
// again only after a change. A Snapshot is taken for every CNI ADD, and
// listing and sorting a cluster's objects each time grew with the
// cluster: 0.5 ms at 500 pods and 1,000 policies, 3 to 4 ms at 5,000
// pods and 2,000 policies (BenchmarkKubernetesSnapshot), most of it for
// objects that had not changed. The informer updates its cache before it
// calls the handlers that count the changes, so a list made after
// reading the count holds at least every change counted. An update that
// Changed ignores (unchanged: only the resourceVersion or a dropped field
// moved) is not counted either: the list keeps the object it has, which
// reads the same.
type sortedList struct {
	changes atomic.Uint64
	mu      sync.Mutex
	listed  uint64 // changes when objs was listed
	objs    any    // []T, nil before the first listing
}

// cachedList returns a copy of l's objects (the Snapshot's slices are the
// caller's), listing inf again first if a change came since.
func cachedList[T namespacedName](l *sortedList, inf cache.SharedIndexInformer) []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	if changes := l.changes.Load(); l.objs == nil || changes != l.listed {
		l.objs, l.listed = listAs[T](inf), changes
	}
	return slices.Clone(l.objs.([]T))
}

// NewKubernetes returns a source over client for the node nodeName. It
// contacts the API server only at Start.
func NewKubernetes(client kubernetes.Interface, nodeName string, opts KubernetesOptions) (*Kubernetes, error) {
	if client == nil {
		return nil, fmt.Errorf("kubernetes inputs: client is nil")
	}
	if nodeName == "" {
		return nil, fmt.Errorf("kubernetes inputs: node name is empty: the source must know which Node is this one")
	}
	k := &Kubernetes{
		nodeName:  nodeName,
		log:       opts.Logger,
		changed:   make(chan struct{}, 1),
		watchErrs: map[string]error{},
	}
	if k.log == nil {
		k.log = slog.Default()
	}
	k.log = k.log.With("source", "kubernetes", "node", nodeName)
	transform := informers.WithTransform(slim)
	k.nodeFactory = informers.NewSharedInformerFactoryWithOptions(client, opts.Resync, transform,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector(metav1.ObjectNameField, nodeName).String()
		}))
	k.factory = informers.NewSharedInformerFactoryWithOptions(client, opts.Resync, transform)

	for _, ni := range []namedInformer{ // in the order of the constants above
		{kind: "Node", inf: k.nodeFactory.Core().V1().Nodes().Informer()},
		{kind: "Pod", inf: k.factory.Core().V1().Pods().Informer()},
		{kind: "Namespace", inf: k.factory.Core().V1().Namespaces().Informer()},
		{kind: "NetworkPolicy", inf: k.factory.Networking().V1().NetworkPolicies().Informer()},
	} {
		if err := ni.inf.SetWatchErrorHandlerWithContext(k.watchErrorHandler(ni.kind)); err != nil {
			return nil, fmt.Errorf("kubernetes inputs: %s informer: watch error handler: %w", ni.kind, err)
		}
		list := &sortedList{}
		changed := func() {
			list.changes.Add(1)
			signal(k.changed)
		}
		reg, err := ni.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { changed() },
			UpdateFunc: func(old, cur any) {
				if !unchanged(old, cur) {
					changed()
				}
			},
			DeleteFunc: func(any) { changed() },
		})
		if err != nil {
			return nil, fmt.Errorf("kubernetes inputs: %s informer: event handler: %w", ni.kind, err)
		}
		ni.reg, ni.list = reg, list
		k.informers = append(k.informers, ni)
	}
	return k, nil
}

// Start runs the informers until ctx ends; it does not wait for them to
// sync. Changed is signalled once they have, and after every change.
func (k *Kubernetes) Start(ctx context.Context) error {
	k.mu.Lock()
	if k.started {
		k.mu.Unlock()
		return fmt.Errorf("kubernetes inputs: source already started")
	}
	k.started = true
	k.mu.Unlock()

	k.nodeFactory.Start(ctx.Done())
	k.factory.Start(ctx.Done())
	go func() {
		// Changed must fire when Synced turns true even if the caches are
		// empty (no add events then), so that the agent's first full pass
		// is not left to its timer.
		if cache.WaitForCacheSync(ctx.Done(), k.hasSynced()...) {
			k.log.Info("informers synced")
			signal(k.changed)
		}
		<-ctx.Done()
		// Wait for the informers' goroutines, so nothing outlives the
		// source's context.
		k.nodeFactory.Shutdown()
		k.factory.Shutdown()
	}()
	return nil
}

// hasSynced lists, for each informer, whether its cache and our handler
// have both seen the first complete listing.
func (k *Kubernetes) hasSynced() []cache.InformerSynced {
	var out []cache.InformerSynced
	for _, ni := range k.informers {
		out = append(out, ni.inf.HasSynced, ni.reg.HasSynced)
	}
	return out
}

// Synced reports whether every informer has received its first complete
// listing and delivered it to our handlers.
func (k *Kubernetes) Synced() bool {
	for _, ok := range k.hasSynced() {
		if !ok() {
			return false
		}
	}
	return true
}

// Changed is signalled after every change to a watched object.
func (k *Kubernetes) Changed() <-chan struct{} { return k.changed }

// Snapshot returns the informers' current objects. They are the caches'
// own objects, which client-go never modifies in place.
func (k *Kubernetes) Snapshot() Snapshot {
	var s Snapshot
	synced := true
	for _, ni := range k.informers {
		if !ni.inf.HasSynced() {
			synced = false
			if err := k.watchErr(ni.kind); err != nil {
				s.Errors = append(s.Errors, err)
			}
		}
	}
	// The node informer's field selector already names this node; looking
	// it up by key as well keeps the answer right whatever the API serves.
	if obj, ok, err := k.informers[nodeInformer].inf.GetStore().GetByKey(k.nodeName); err != nil {
		s.Errors = append(s.Errors, fmt.Errorf("kubernetes inputs: Node %s: cache lookup: %w", k.nodeName, err))
	} else if n, isNode := obj.(*corev1.Node); ok && isNode {
		s.Node = n
	} else if synced {
		s.Errors = append(s.Errors, fmt.Errorf("kubernetes inputs: Node %s: not found in the API server", k.nodeName))
	}
	s.Pods = cachedList[*corev1.Pod](k.informers[podInformer].list, k.informers[podInformer].inf)
	s.Namespaces = cachedList[*corev1.Namespace](k.informers[namespaceInformer].list, k.informers[namespaceInformer].inf)
	s.Policies = cachedList[*networkingv1.NetworkPolicy](k.informers[policyInformer].list, k.informers[policyInformer].inf)
	return s
}

// Node implements NodeGetter: this node from the informer's cache.
func (k *Kubernetes) Node() *corev1.Node {
	obj, ok, err := k.informers[nodeInformer].inf.GetStore().GetByKey(k.nodeName)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}

// Pod returns the cached pod namespace/name.
//
// The store can be ahead of the listed pods (the informer updates it
// before the handlers count the change): a pod found here that the list
// does not have as it is makes the next Snapshot list again, so that a
// CNI ADD that waited for its pod here renders it.
func (k *Kubernetes) Pod(namespace, name string) (*corev1.Pod, bool) {
	obj, ok, err := k.informers[podInformer].inf.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	if ok {
		k.informers[podInformer].list.sawPod(p)
	}
	return p, ok
}

// sawPod counts a change when l, the pods' list, lacks p, the store's pod
// of its key: the next cachedList lists again.
func (l *sortedList) sawPod(p *corev1.Pod) {
	l.mu.Lock()
	defer l.mu.Unlock()
	listed, _ := l.objs.([]*corev1.Pod)
	if i, found := slices.BinarySearchFunc(listed, p, compareKeys); !found || listed[i] != p {
		l.changes.Add(1)
	}
}

func listAs[T namespacedName](inf cache.SharedIndexInformer) []T {
	objs := inf.GetStore().List()
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	sortByKey(out)
	return out
}

func (k *Kubernetes) watchErrorHandler(kind string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		k.mu.Lock()
		k.watchErrs[kind] = fmt.Errorf("kubernetes inputs: %s informer: list/watch: %w", kind, err)
		k.mu.Unlock()
		k.log.Warn("list/watch failed; client-go retries with backoff", "kind", kind, "err", err)
	}
}

func (k *Kubernetes) watchErr(kind string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.watchErrs[kind]
}
