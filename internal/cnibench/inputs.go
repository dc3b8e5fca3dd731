package cnibench

// The node's inputs and the pods the rounds set up.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/terway-reconciler/terway/internal/synth"
)

// With policies, the cluster around the node (Options.Policies).
const (
	synthNamespaces = 20
	synthRemote     = 250
)

// benchPod is one pod of the inputs: where its sandbox is and who it is.
type benchPod struct {
	ns, name string
	labels   map[string]string
	shaped   bool
	netns    string // path
}

// planPods names the timed pods (b<i>) and the resident ones (r<i>): in
// namespace x with app=bench, or with policies spread over synth's
// namespaces with its labels, so that the policies select them as targets
// and as peers. Every shapedEvery-th timed pod is shaped.
func (b *Bench) planPods() {
	pod := func(prefix string, i int) benchPod {
		if b.o.Policies == 0 {
			return benchPod{ns: "x", name: prefix + strconv.Itoa(i), labels: map[string]string{"app": "bench"}}
		}
		// Offset so that resident and timed pods do not all share labels.
		n := i
		if prefix == "r" {
			n += b.o.Pods
		}
		return benchPod{ns: fmt.Sprintf("ns-%d", n%synthNamespaces), name: prefix + strconv.Itoa(i), labels: synth.PodLabels(n, synthNamespaces)}
	}
	b.timed, b.resident = nil, nil
	for i := range b.o.Pods {
		p := pod("b", i)
		p.shaped = i%shapedEvery == 0
		b.timed = append(b.timed, p)
	}
	for i := range b.o.Resident {
		b.resident = append(b.resident, pod("r", i))
	}
}

func (b *Bench) writeInputs() error {
	dir := filepath.Join(b.o.WorkDir, "inputs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	docs := []string{
		"apiVersion: v1\nkind: Node\nmetadata: {name: " + nodeName + "}\nspec: {podCIDR: " + podCIDR + "}\n" +
			"status: {addresses: [{type: InternalIP, address: " + nodeIP + "}]}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: x, labels: {ns: x}}\n",
	}
	if b.o.Policies > 0 {
		// synth's namespaces, its pods on other nodes and its policies.
		world := synth.Cluster(synth.Params{RemotePods: synthRemote, Policies: b.o.Policies, Namespaces: synthNamespaces, Seed: 1})
		docsOfWorld, err := synth.Documents(world, false)
		if err != nil {
			return err
		}
		for _, y := range docsOfWorld {
			docs = append(docs, string(y))
		}
	}
	for _, p := range slices.Concat(b.timed, b.resident) {
		ann := ""
		if p.shaped {
			ann = fmt.Sprintf("kubernetes.io/ingress-bandwidth: %q, kubernetes.io/egress-bandwidth: %q", shapedRate, shapedRate)
		}
		labels, err := json.Marshal(p.labels)
		if err != nil {
			return err
		}
		docs = append(docs, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {namespace: %s, name: %s, uid: uid-%s-%s, labels: %s, annotations: {%s}}
spec:
  nodeName: %s
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9090}]}]
`, p.ns, p.name, p.ns, p.name, labels, ann, nodeName))
	}
	return os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(strings.Join(docs, "---\n")), 0o644)
}

// setUpResident ADDs the resident pods through the driver, untimed, and
// leaves them set up (Round waits for their admission as policy peers).
func (b *Bench) setUpResident(ctx context.Context) error {
	if len(b.resident) == 0 {
		return nil
	}
	start := time.Now()
	dir := filepath.Join(b.o.WorkDir, "resident")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	j := &job{
		NodeNetns: netnsPath(b.nodeNS), Forbidden: b.rootNS, CacheDir: filepath.Join(dir, "cni-cache"),
		Concurrency: 4, Out: filepath.Join(dir, "result.json"), AddOnly: true,
		PluginDirs: []string{b.o.BinDir}, Conflist: terwayConflist(b.o.WorkDir),
	}
	for _, p := range b.resident {
		j.Pods = append(j.Pods, runtimeConf(p, containerID("resident/"+p.name)))
	}
	res, stderr, err := b.runDriver(ctx, j, dir)
	if err != nil {
		return err
	}
	if len(res.Errors) > 0 {
		return fmt.Errorf("resident pods: %s\n%s", strings.Join(res.Errors, "; "), stderr)
	}
	b.o.Logf("cnibench: %d resident pods set up in %s", len(b.resident), time.Since(start).Round(time.Millisecond))
	return nil
}

func terwayConflist(workDir string) string {
	return fmt.Sprintf(`{"cniVersion":"1.1.0","name":"terway","plugins":[{"type":"terway","socket":%q}]}`, socketPath(workDir))
}

// runtimeConf is the runtime's side of a CNI call for the pod.
func runtimeConf(p benchPod, id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id, NetNS: p.netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.ns}, {"K8S_POD_NAME", p.name},
			{"K8S_POD_UID", "uid-" + p.ns + "-" + p.name}, {"K8S_POD_INFRA_CONTAINER_ID", id}},
	}
}
