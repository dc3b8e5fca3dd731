package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Options for Up.
type Options struct {
	// Cluster is the folder (or file) of Kubernetes YAML to run.
	Cluster string
	// Mode is vpc (default) or eni-multi-ip.
	Mode string
	// Name tells sims apart; DefaultName when empty.
	Name string
	// BinDir holds terwayd, terway and terwayctl.
	BinDir string
	// Resync is the agent's full-resync interval (default 5s: a sim is for
	// watching changes happen).
	Resync time.Duration
	// Workers attach pods concurrently (default 4).
	Workers int
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// EmulatorArgs are extra flags for the emulator in ENI mode (faults,
	// delays: see terwayctl emulator --help).
	EmulatorArgs []string
	// KeepOnFailure leaves a failed sim in place for inspection (logs in
	// Dir/logs); `down` removes it.
	KeepOnFailure bool
	// RestartBackoff and RestartBackoffMax bound the delay before the
	// supervisor restarts a dead agent (defaults DefaultRestartBackoff and
	// DefaultRestartBackoffMax).
	RestartBackoff, RestartBackoffMax time.Duration
	// AgentEnv is added to the agent's environment (NAME=VALUE).
	AgentEnv []string
	// Cloud, in VPC mode, also starts the emulator and gives the agent
	// its cloud configuration: pods requesting aliyun/eni get a whole ENI,
	// the others keep their podCIDR addresses. ENI mode always has both.
	Cloud bool
	// ReservedENIsForMultiIP, when set, goes into the agent's cloud
	// configuration (the ENIs kept for multi-IP pods).
	ReservedENIsForMultiIP *int
	// DevicePluginDir, when set, is where the agent serves the aliyun/eni
	// device plugin (--device-plugin on); a test's kubelet stand-in
	// listens there. Empty: --device-plugin off, so a simulated node
	// never registers with a kubelet the machine may have.
	DevicePluginDir string
}

// Default node for a cluster folder without a Node object.
const (
	defaultNodeName = "sim-node"
	defaultPodCIDR  = "198.18.0.0/22"
	defaultNodeIP   = "198.19.0.1"
	// healthAddr is inside the node namespace, so every sim can use it.
	healthAddr = "127.0.0.1:9482"
)

// Up starts a sim and returns when every pod is ready. Leftovers of an
// earlier run under the same name are removed first. When Up fails it
// removes what it made.
func Up(ctx context.Context, o Options) (st *State, err error) {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if err := checkName(o.Name); err != nil {
		return nil, err
	}
	switch o.Mode {
	case "", spec.PodModeVPC:
		o.Mode = spec.PodModeVPC
	case spec.PodModeENIMultiIP:
	default:
		return nil, fmt.Errorf("--mode %q: want vpc or eni-multi-ip", o.Mode)
	}
	if o.Resync == 0 {
		o.Resync = 5 * time.Second
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}
	for _, b := range []string{"terwayd", "terway", "terwayctl"} {
		if _, err := os.Stat(filepath.Join(o.BinDir, b)); err != nil {
			return nil, fmt.Errorf("binary %s not found in %s (run make build): %w", b, o.BinDir, err)
		}
	}
	objs, list, err := readObjects(o.Cluster)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", o.Cluster, err)
	}
	if err := Down(o.Name); err != nil {
		return nil, fmt.Errorf("remove leftovers of sim %s: %w", o.Name, err)
	}
	st = &State{Name: o.Name, Mode: o.Mode, Dir: Dir(o.Name), BinDir: o.BinDir}
	if err := os.MkdirAll(filepath.Join(st.Dir, "inputs"), 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && !o.KeepOnFailure {
			_ = Down(o.Name)
		}
	}()

	node, list, err := pickNode(objs.Nodes, list, o.Mode)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", o.Cluster, err)
	}
	st.Node = node.Name
	st.NodeIP = nodeInternalIP(node)
	var local []*corev1.Pod
	for _, obj := range list {
		if pod, ok := obj.obj.(*corev1.Pod); ok {
			if pod.Spec.NodeName == "" {
				pod.Spec.NodeName = st.Node // what the scheduler would do
			}
			if isLocal(pod, st.Node) {
				local = append(local, pod)
			}
		}
		if err := writeObject(st.inputs(), obj); err != nil {
			return nil, err
		}
	}
	if err := st.writeConfig(objs.Config, o.Mode); err != nil {
		return nil, err
	}

	nodeNS, vpcNS := netnsPrefix(o.Name)+"node", netnsPrefix(o.Name)+"vpc"
	for _, ns := range []string{nodeNS, vpcNS} {
		if err := addNetns(ns); err != nil {
			return nil, err
		}
	}
	st.NodeNetns, st.VPCNetns = netnsPath(nodeNS), netnsPath(vpcNS)
	if o.Mode == spec.PodModeVPC {
		if err := wireVPC(nodeNS, vpcNS, st.NodeIP, node.Spec.PodCIDR); err != nil {
			return nil, err
		}
	} else if err := vswitchARP(vpcNS); err != nil {
		return nil, err
	}
	if o.Mode != spec.PodModeVPC || o.Cloud {
		if err := st.startEmulator(o.EmulatorArgs, o.ReservedENIsForMultiIP); err != nil {
			return nil, err
		}
	}
	if err := st.save(); err != nil {
		return nil, err
	}

	start := time.Now()
	if err := st.startAgent(o); err != nil {
		return nil, err
	}
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := st.waitReady(ctx, 30*time.Second, true); err != nil {
		return nil, err
	}
	logf("agent ready in %s", time.Since(start).Round(time.Millisecond))
	pods, attachErr := st.attachAll(ctx, local, o.Workers)
	st.Pods = pods
	st.sortPods()
	if err := st.save(); err != nil {
		return nil, err
	}
	if attachErr != nil {
		return nil, attachErr
	}
	return st, nil
}

func (st *State) inputs() string { return filepath.Join(st.Dir, "inputs") }

// pickNode finds the Node the sim plays: the only one in the folder, or a
// default one added to the inputs.
func pickNode(nodes []*corev1.Node, list []object, mode string) (*corev1.Node, []object, error) {
	switch len(nodes) {
	case 1:
		if nodes[0].Spec.PodCIDR == "" && mode == spec.PodModeVPC {
			return nil, nil, fmt.Errorf("Node %s: spec.podCIDR: empty (VPC mode allocates from it)", nodes[0].Name)
		}
		return nodes[0], list, nil
	case 0:
		n := &corev1.Node{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: defaultNodeName},
			Spec:       corev1.NodeSpec{PodCIDR: defaultPodCIDR},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: defaultNodeIP}}},
		}
		return n, append(list, object{"Node", "", n.Name, n}), nil
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return nil, nil, fmt.Errorf("%d Node objects (%s): a sim plays exactly one node", len(nodes), strings.Join(names, ", "))
}

func nodeInternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && net.ParseIP(a.Address).To4() != nil {
			return a.Address
		}
	}
	return defaultNodeIP
}

// writeConfig writes the agent's configuration: the folder's terway/v1
// Config if it has one, with the sim's mode.
func (st *State) writeConfig(cfg *render.Config, mode string) error {
	c := render.Config{}
	if cfg != nil {
		c = *cfg
	}
	c.Mode = mode
	c.APIVersion, c.Kind = "terway/v1", "Config"
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(st.Dir, "config.yaml"), data, 0o600)
}

// startAgent starts the supervisor, which starts the agent and restarts
// it whenever it dies, and waits for the agent's first PID.
func (st *State) startAgent(o Options) error {
	args := []string{"ip", "netns", "exec", filepath.Base(st.NodeNetns), filepath.Join(st.BinDir, "terwayd"),
		"--node-name", st.Node, "--kube-inputs", st.inputs(), "--state-dir", filepath.Join(st.Dir, "agent"),
		"--socket", st.socket(), "--config", filepath.Join(st.Dir, "config.yaml"),
		"--resync-interval", o.Resync.String(), "--health-addr", healthAddr}
	if o.DevicePluginDir != "" {
		args = append(args, "--device-plugin", "on", "--device-plugin-dir", o.DevicePluginDir)
	} else {
		// A simulated node never advertises devices to a kubelet the
		// machine may have.
		args = append(args, "--device-plugin", "off")
	}
	if st.Mode != spec.PodModeVPC || o.Cloud {
		args = append(args, "--cloud-config", filepath.Join(st.Dir, "cloud.yaml"))
	}
	sup := []string{st.ctl(), "sim", "supervise", "--dir", st.Dir}
	if o.RestartBackoff > 0 {
		sup = append(sup, "--backoff", o.RestartBackoff.String())
	}
	if o.RestartBackoffMax > 0 {
		sup = append(sup, "--backoff-max", o.RestartBackoffMax.String())
	}
	pid, err := startDaemon(st.Dir, "supervisor.log", append(append(sup, "--"), args...), o.AgentEnv)
	if err != nil {
		return err
	}
	st.SupervisorPID = pid
	for deadline := time.Now().Add(10 * time.Second); ; {
		if p, err := st.Agent(); err == nil {
			st.AgentPID = p.PID
			return nil
		}
		if !alive(pid) || time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(st.Dir, "logs", "supervisor.log"))
			return fmt.Errorf("the supervisor did not start terwayd: %s", lastLines(string(data), 5))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AgentGet fetches a path of the agent's health endpoint (/readyz, /plan,
// /applied, /metrics) from inside the node namespace.
func (st *State) AgentGet(ctx context.Context, path string) (int, string, error) {
	return traffic.Get(ctx, st.NodeNetns, "http://"+healthAddr+path, 10*time.Second)
}

// nodeClient is an HTTP client whose connections start inside the node
// namespace: the agent and the emulator listen on the node's loopback.
func (st *State) nodeClient() *http.Client { return traffic.HTTPClient(st.NodeNetns, 10*time.Second) }

func (st *State) waitReady(ctx context.Context, timeout time.Duration, failOnExit bool) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		// During up, a crash is a failure to report, not one to wait out
		// through the supervisor's restarts.
		if p, err := st.Agent(); failOnExit && (err != nil || p.Restarts > 0 || !alive(p.PID)) {
			return fmt.Errorf("terwayd exited: %s", st.agentLog())
		}
		code, body, err := st.AgentGet(ctx, "/readyz")
		if err == nil && code == http.StatusOK {
			return nil
		}
		last = strings.TrimSpace(body)
		if err != nil {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("terwayd not ready after %s (%s): %s", timeout, last, st.agentLog())
}

func (st *State) agentLog() string {
	data, _ := os.ReadFile(filepath.Join(st.Dir, "logs", "terwayd.log"))
	return lastLines(string(data), 5)
}

// Down removes every namespace, process and file of the sim called name.
// It is idempotent and also clears what a crashed run left.
func Down(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	dir := Dir(name)
	// The supervisor first, or it restarts the agent stopped next; then
	// every other process, since a process inside a namespace keeps it
	// alive after ip netns del.
	stop(supervisorsOf(dir), dir, 8*time.Second)
	stop(processesOf(dir), dir, 5*time.Second)
	var errs []error
	for _, ns := range netnsWithPrefix(netnsPrefix(name)) {
		if err := delNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Summary is the one line `sim up` prints.
func (st *State) Summary(took time.Duration) string {
	return fmt.Sprintf("sim %s up: node %s (%s), mode %s, %d pods ready in %s; netns %s",
		st.Name, st.Node, st.NodeIP, st.Mode, len(st.Pods), took.Round(time.Millisecond), st.NodeNetns)
}
