package agent

import (
	"log/slog"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/spec"
)

// Event reasons, one per kind of pod failure people act on differently.
const (
	// ReasonInvalidAnnotation: a pod annotation the agent reads (bandwidth)
	// has a value it cannot use; the pod runs without what it asked for, or
	// its CNI ADD is refused.
	ReasonInvalidAnnotation = "InvalidAnnotation"
	// ReasonNetworkProblem: anything else the document's problems say about
	// a pod (a policy not enforceable for it, no podCIDR on the node).
	ReasonNetworkProblem = "NetworkProblem"
	// ReasonSetupRefused: CNI ADD was refused because of the pod's inputs.
	ReasonSetupRefused = "FailedNetworkSetup"
)

// eventComponent is the Events' source: what `kubectl get events` shows in
// the FROM column.
const eventComponent = "terwayd"

// reannounceEvery repeats a problem that persists, so that it outlives the
// API server's event TTL (one hour by default) while it is still true.
const reannounceEvery = 30 * time.Minute

// problemEvents publishes pod-level problems as Kubernetes Events on the
// pods, so that `kubectl describe pod` and `kubectl get events` show why a
// pod's network is not what it asked for. In standalone mode (no API
// server) the same lines go to the log only.
//
// Every reconcile renders the same problems again; publishing them each
// time would flood the API server. So each problem is published once when
// it appears, again only after reannounceEvery, and forgotten when it goes
// (a problem that comes back is news again). A problem is keyed by pod UID,
// field and reason: a new bad value is a new problem.
type problemEvents struct {
	log         *slog.Logger
	node        string
	recorder    record.EventRecorder // nil: log only
	broadcaster record.EventBroadcaster
	now         func() time.Time

	mu   sync.Mutex
	sent map[problemKey]sentProblem
}

type problemKey struct {
	uid    types.UID
	origin string // "render" or "add": pruned by different rules
	field  string
	reason string
}

type sentProblem struct {
	at  time.Time
	pod string // namespace/name
}

// newProblemEvents returns the publisher; with a nil client it only logs.
func newProblemEvents(log *slog.Logger, node string, client typedcorev1.EventsGetter) *problemEvents {
	e := &problemEvents{log: log, node: node, now: time.Now, sent: map[problemKey]sentProblem{}}
	if client == nil {
		return e
	}
	// The broadcaster batches, correlates (same event again → count+1, one
	// patch) and rate-limits per object on top of our own de-duplication.
	e.broadcaster = record.NewBroadcaster()
	e.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.Events("")})
	e.recorder = e.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: eventComponent, Host: node})
	return e
}

// close stops the broadcaster; events still queued may be lost.
func (e *problemEvents) close() {
	if e.broadcaster != nil {
		e.broadcaster.Shutdown()
	}
}

// rendered publishes the pod problems of a rendered document. Problems of
// pods the agent has not set up yet ("no allocation") and of allocations
// are internal bookkeeping, logged elsewhere, and not events: every pod
// has the first between its creation and its CNI ADD.
func (e *problemEvents) rendered(state *spec.NodeState, pods inputs.PodGetter) {
	now := e.now()
	current := map[problemKey]bool{}
	live := map[types.UID]bool{} // pods set up on this node
	for _, p := range state.Pods {
		live[types.UID(p.UID)] = true
	}
	for _, p := range state.Problems {
		if p.Kind != "Pod" || strings.HasPrefix(p.Field, "allocation") {
			continue
		}
		pod, ok := pods.Pod(p.Namespace, p.Name)
		if !ok || pod.Spec.NodeName != e.node {
			continue // no object to attach it to, or not ours to report
		}
		k := problemKey{uid: pod.UID, origin: "render", field: p.Field, reason: p.Reason}
		current[k] = true
		e.publish(k, pod.Namespace, pod.Name, reasonFor(p.Field), describe(p), now)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, s := range e.sent {
		switch k.origin {
		case "render":
			if !current[k] {
				delete(e.sent, k)
			}
		case "add":
			// A refused ADD is news again only once the pod got its network
			// or its object is gone; the runtime retries ADD meanwhile.
			ns, name, _ := strings.Cut(s.pod, "/")
			if pod, ok := pods.Pod(ns, name); live[k.uid] || !ok || pod.UID != k.uid {
				delete(e.sent, k)
			}
		}
	}
}

// addRefused publishes why a pod's CNI ADD was refused: the problems of its
// own inputs, each once while the runtime retries. uid is the pod's, from
// the object when the source has it, else from the CNI arguments.
func (e *problemEvents) addRefused(state *spec.NodeState, podKey, uid string) {
	now := e.now()
	for _, p := range state.Problems {
		if p.Kind != "Pod" || p.Namespace+"/"+p.Name != podKey || !strings.HasPrefix(p.Field, "metadata.annotations") {
			continue
		}
		k := problemKey{uid: types.UID(uid), origin: "add", field: p.Field, reason: p.Reason}
		e.publish(k, p.Namespace, p.Name, ReasonSetupRefused, "CNI ADD refused, no network was set up: "+describe(p), now)
	}
}

// publishRendered is the reconcile loop's hook: the problems of the
// document it just rendered.
func (a *Agent) publishRendered(state *spec.NodeState) {
	if g, ok := a.src.(inputs.PodGetter); ok {
		a.events.rendered(state, g)
	}
}

// publishAddRefused is CNI ADD's hook when the pod's own inputs fail it.
func (a *Agent) publishAddRefused(state *spec.NodeState, podKey, argsUID string) {
	uid := argsUID
	if g, ok := a.src.(inputs.PodGetter); ok {
		ns, name, _ := strings.Cut(podKey, "/")
		if pod, found := g.Pod(ns, name); found {
			uid = string(pod.UID)
		}
	}
	a.events.addRefused(state, podKey, uid)
}

// publish logs and records one problem unless it was published recently.
func (e *problemEvents) publish(k problemKey, namespace, name, reason, message string, now time.Time) {
	podKey := namespace + "/" + name
	e.mu.Lock()
	if s, ok := e.sent[k]; ok && now.Sub(s.at) < reannounceEvery {
		e.mu.Unlock()
		return
	}
	e.sent[k] = sentProblem{at: now, pod: podKey}
	e.mu.Unlock()
	e.log.Warn("pod problem", "pod", podKey, "reason", reason, "message", message, "event", e.recorder != nil)
	if e.recorder == nil {
		return
	}
	// A reference, not the cached object: the informers' slimmed pods need
	// no scheme lookup, and the UID ties the event to this incarnation.
	e.recorder.Event(&corev1.ObjectReference{
		Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: name, UID: k.uid,
	}, corev1.EventTypeWarning, reason, message)
}

func reasonFor(field string) string {
	if strings.HasPrefix(field, "metadata.annotations") {
		return ReasonInvalidAnnotation
	}
	return ReasonNetworkProblem
}

// describe is the event message: the field and the reason, which for an
// annotation names the annotation and its value.
func describe(p spec.Problem) string {
	if p.Field == "" {
		return p.Reason
	}
	return p.Field + ": " + p.Reason
}

// Node Event reasons: the node stopped or started again enforcing its
// document (policy, routes, sysctls) for every pod.
const (
	// ReasonEnforcementLost: a node-level item keeps failing (the nftables
	// table that holds every pod's policy cannot be written, for example);
	// the message names the first failures.
	ReasonEnforcementLost = "NetworkEnforcementLost"
	// ReasonEnforcementRestored: every node-level item is realised again.
	ReasonEnforcementRestored = "NetworkEnforcementRestored"
)

// nodeEvent logs and records an Event on this node. uid is the Node
// object's (the kubelet uses the node name when it has none).
func (e *problemEvents) nodeEvent(uid types.UID, eventType, reason, message string) {
	log := e.log.Warn
	if eventType == corev1.EventTypeNormal {
		log = e.log.Info
	}
	log("node event", "node", e.node, "reason", reason, "message", message, "event", e.recorder != nil)
	if e.recorder == nil {
		return
	}
	if uid == "" {
		uid = types.UID(e.node)
	}
	e.recorder.Event(&corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: e.node, UID: uid},
		eventType, reason, message)
}

// healthState is what the Node was last told about enforcement.
type healthState struct {
	mu        sync.Mutex
	announced bool // an EnforcementLost is outstanding
}

// healthChanged publishes an Event on the Node when enforcement is lost
// (a node-level item fails) and when it is restored. It is called after
// every sync and every CNI write, so a loss is announced by the sync that
// sees it.
func (a *Agent) healthChanged() {
	enforcing, reasons := a.status.enforcing()
	a.health.mu.Lock()
	defer a.health.mu.Unlock()
	switch {
	case !enforcing && !a.health.announced:
		a.health.announced = true
		a.events.nodeEvent(a.nodeUID(), corev1.EventTypeWarning, ReasonEnforcementLost,
			"the node does not realise its network document; pods' policy or routes may be missing: "+strings.Join(reasons, "; "))
	case enforcing && a.health.announced:
		a.health.announced = false
		a.events.nodeEvent(a.nodeUID(), corev1.EventTypeNormal, ReasonEnforcementRestored,
			"every node-level item of the network document is realised again")
	}
}

func (a *Agent) nodeUID() types.UID {
	if n := a.lookupNode(); n != nil {
		return n.UID
	}
	return ""
}
