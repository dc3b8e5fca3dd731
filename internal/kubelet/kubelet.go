// Package kubelet is a kubelet stand-in for end-to-end tests against a real
// API server: it watches the Pods bound to one node and plays the part of
// the kubelet and its container runtime for their network. For each pod it
// makes a network namespace, runs CNI ADD through libcni with the real
// plugin binary, optionally starts echo servers on the pod's container
// ports, and writes the pod's IP, phase Running and the Ready condition
// back; when the pod is deleted it runs CNI DEL, removes the namespace and
// finishes the deletion, as the kubelet does once containers are gone.
//
// There are no containers: a pod is its network namespace. Nothing here
// touches the namespace the test process runs in.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/terway-reconciler/terway/internal/nstest"
)

// Config configures a Kubelet.
type Config struct {
	// Client writes pod status and finishes deletions, so it needs the
	// kubelet's rights on pods (tests give it the admin).
	Client   kubernetes.Interface
	NodeName string
	// HostIP is written to status.hostIP; empty leaves it unset.
	HostIP string
	// CNIBinDirs hold the plugin binaries named by ConfList.
	CNIBinDirs []string
	// ConfList is the CNI network configuration list (JSON), as a runtime
	// reads it from /etc/cni/net.d.
	ConfList []byte
	// CacheDir is libcni's result cache; a folder of the test.
	CacheDir string
	// NetnsPrefix starts every pod namespace's name; the default,
	// "tt<run>-k", is unique per test process like nstest's names, so
	// leftovers are recognisable and parallel runs never collide.
	NetnsPrefix string
	// Serve starts a TCP or UDP echo server on podIP:port for every
	// container port, so tests can send real traffic to pods.
	Serve bool
	// Logf receives one line per decision; nil discards them.
	Logf func(format string, args ...any)
}

// Sandbox is one pod's network as the stand-in made it.
type Sandbox struct {
	Namespace, Name string
	UID             string
	// Netns is the pod's network namespace path.
	Netns       string
	ContainerID string
	// IP is the address CNI ADD returned.
	IP string
	// Reported is true once status.podIP and Ready were written.
	Reported bool
}

// Kubelet watches one node's pods; see the package comment.
type Kubelet struct {
	cfg     Config
	cni     *libcni.CNIConfig
	netconf *libcni.NetworkConfigList
	factory informers.SharedInformerFactory
	pods    cache.SharedIndexInformer
	queue   workqueue.TypedRateLimitingInterface[string]
	cancel  context.CancelFunc
	workers sync.WaitGroup

	mu        sync.Mutex
	sandboxes map[string]*sandbox // by namespace/name
	failures  map[string]error    // last failed setup by namespace/name
	stopped   bool
}

// sandbox is a Sandbox and what must be undone with it.
type sandbox struct {
	Sandbox
	netnsName string
	rt        *libcni.RuntimeConf
	servers   []closer
}

type closer interface{ Close() }

// Workers bounds concurrent pod setups: the agent serialises its writes
// anyway, and two cores are shared with it and the API server.
const workers = 2

// Start begins watching the node's pods. Stop undoes everything it made.
func Start(ctx context.Context, cfg Config) (*Kubelet, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("kubelet: config: client is nil")
	case cfg.NodeName == "":
		return nil, errors.New("kubelet: config: nodeName is empty")
	case len(cfg.ConfList) == 0:
		return nil, errors.New("kubelet: config: confList is empty")
	}
	if cfg.NetnsPrefix == "" {
		cfg.NetnsPrefix = "tt" + nstest.RunID + "-k"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	list, err := libcni.ConfListFromBytes(cfg.ConfList)
	if err != nil {
		return nil, fmt.Errorf("kubelet: config: confList: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	k := &Kubelet{
		cfg: cfg, netconf: list, cancel: cancel,
		cni: libcni.NewCNIConfigWithCacheDir(cfg.CNIBinDirs, cfg.CacheDir,
			&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}),
		// Failed setups retry from 500 ms up to 10 s, faster than a real
		// kubelet's sandbox backoff so tests see retries within seconds.
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, 10*time.Second)),
		sandboxes: map[string]*sandbox{},
		failures:  map[string]error{},
	}
	k.factory = informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	k.pods = k.factory.Core().V1().Pods().Informer()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := k.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, cur any) { enqueue(cur) }, DeleteFunc: enqueue,
	}); err != nil {
		cancel()
		return nil, fmt.Errorf("kubelet: pod informer: %w", err)
	}
	k.factory.Start(ctx.Done())
	for i := 0; i < workers; i++ {
		k.workers.Add(1)
		go k.work(ctx)
	}
	return k, nil
}

// Stop ends the watch and removes every pod namespace it made. It runs no
// CNI DEL: at the end of a test the agent and the node namespace go too.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	k.stopped = true
	k.mu.Unlock()
	k.cancel()
	k.queue.ShutDown()
	k.workers.Wait()
	k.factory.Shutdown()
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, sb := range k.sandboxes {
		sb.closeServers()
		if err := deleteNetns(sb.netnsName); err != nil {
			k.cfg.Logf("kubelet: pod %s: %v", key, err)
		}
		delete(k.sandboxes, key)
	}
}

// Sandbox returns the pod's sandbox, if it is set up.
func (k *Kubelet) Sandbox(namespace, name string) (Sandbox, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sb, ok := k.sandboxes[namespace+"/"+name]
	if !ok {
		return Sandbox{}, false
	}
	return sb.Sandbox, true
}

// LastError is the pod's last failed setup (a CNI ADD error), nil after a
// success.
func (k *Kubelet) LastError(namespace, name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.failures[namespace+"/"+name]
}

// WaitRunning waits until the pod is set up and its status written.
func (k *Kubelet) WaitRunning(ctx context.Context, namespace, name string) (Sandbox, error) {
	for {
		if sb, ok := k.Sandbox(namespace, name); ok && sb.Reported {
			return sb, nil
		}
		select {
		case <-ctx.Done():
			return Sandbox{}, fmt.Errorf("kubelet: pod %s/%s not running: %w (last setup error: %v)",
				namespace, name, ctx.Err(), k.LastError(namespace, name))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// WaitGone waits until the pod's sandbox is torn down.
func (k *Kubelet) WaitGone(ctx context.Context, namespace, name string) error {
	for {
		if _, ok := k.Sandbox(namespace, name); !ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kubelet: pod %s/%s still has its sandbox: %w", namespace, name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (k *Kubelet) work(ctx context.Context) {
	defer k.workers.Done()
	for {
		key, shutdown := k.queue.Get()
		if shutdown {
			return
		}
		err := k.sync(ctx, key)
		k.mu.Lock()
		if err != nil {
			k.failures[key] = err
		} else {
			delete(k.failures, key)
		}
		k.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			k.cfg.Logf("kubelet: %v (retrying)", err) // err names the pod
			k.queue.AddRateLimited(key)
		} else {
			k.queue.Forget(key)
		}
		k.queue.Done(key)
	}
}

// sync brings one pod's sandbox and status in line with its object.
func (k *Kubelet) sync(ctx context.Context, key string) error {
	obj, exists, err := k.pods.GetStore().GetByKey(key)
	if err != nil {
		return err
	}
	k.mu.Lock()
	sb := k.sandboxes[key]
	k.mu.Unlock()
	var pod *corev1.Pod
	if exists {
		pod, _ = obj.(*corev1.Pod)
	}
	gone := pod == nil || pod.DeletionTimestamp != nil ||
		pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	if sb != nil && (gone || string(pod.UID) != sb.UID) {
		if err := k.teardown(ctx, key, sb); err != nil {
			return err
		}
		sb = nil
	}
	if pod == nil {
		return nil
	}
	if pod.DeletionTimestamp != nil {
		return k.finishDeletion(ctx, pod)
	}
	if gone || pod.Spec.HostNetwork {
		return nil // host-network pods need no CNI; finished pods keep none
	}
	if sb == nil {
		if sb, err = k.setup(ctx, pod); err != nil {
			return err
		}
	}
	return k.reportRunning(ctx, pod, sb)
}
