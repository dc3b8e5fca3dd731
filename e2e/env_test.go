package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/terway-reconciler/terway/internal/kubelet"
	"github.com/terway-reconciler/terway/internal/kubetest"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/traffic"
)

const (
	nodeName = "node-1"
	nodeIP   = "198.19.0.1"
	podCIDR  = "198.18.0.0/22"
	// healthAddr is inside the node namespace, whose loopback is its own.
	healthAddr = "127.0.0.1:9482"
)

// env is one node of a real cluster: the control plane, a node network
// namespace running terwayd as the terway ServiceAccount, and a kubelet
// stand-in that sets pods up through the real CNI plugin.
type env struct {
	t        *testing.T
	cp       *kubetest.ControlPlane
	node     string // node netns path
	dir      string
	resync   time.Duration
	state    string
	socket   string
	config   string // terwayd --config, from the manifest's ConfigMap
	saConfig string // kubeconfig of kube-system/terway

	agent    *exec.Cmd
	agentLog string
	kubelet  *kubelet.Kubelet
}

// newEnv applies manifests/terway.yml (the agent's ServiceAccount and RBAC
// come from it, so a rule missing there fails here), creates the Node and
// starts terwayd and the kubelet stand-in.
func newEnv(t *testing.T, resync time.Duration) *env {
	t.Helper()
	nstest.RequireRoot(t)
	bin := binaries(t)
	e := &env{t: t, cp: kubetest.Start(t), dir: t.TempDir(), resync: resync}
	e.state = filepath.Join(e.dir, "state")
	e.socket = filepath.Join(e.dir, "run", "terway.sock")
	e.kubectl("apply", "-f", kubetest.RepoFile(t, "manifests/terway.yml"))

	// The agent's configuration and the CNI conflist are the ones the
	// DaemonSet would mount from the ConfigMap; only the socket path is the
	// test's own.
	cfg := e.kubectl("get", "configmap", "-n", "kube-system", "terway-config", "-o", `jsonpath={.data.config\.yaml}`)
	e.config = filepath.Join(e.dir, "config.yaml")
	must(t, os.WriteFile(e.config, []byte(cfg), 0o644))
	conflist := e.kubectl("get", "configmap", "-n", "kube-system", "terway-config", "-o", `jsonpath={.data.10-terway\.conflist}`)
	if !strings.Contains(conflist, "/var/run/terway/terway.sock") {
		t.Fatalf("manifest conflist does not name the agent socket /var/run/terway/terway.sock:\n%s", conflist)
	}
	conflist = strings.ReplaceAll(conflist, "/var/run/terway/terway.sock", e.socket)

	e.node = nstest.Netns(t, "node")
	nstest.Run(t, e.node, "ip", "addr", "add", nodeIP+"/32", "dev", "lo")
	e.cp.ExposeIn(t, e.node)
	ctx := context.Background()
	_, err := e.cp.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Spec:       corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}}},
	}, metav1.CreateOptions{})
	must(t, err)
	e.saConfig, err = e.cp.ServiceAccountKubeconfig(ctx, "kube-system", "terway")
	must(t, err)
	e.startAgent()
	t.Cleanup(e.stopAgent)

	e.kubelet, err = kubelet.Start(ctx, kubelet.Config{
		Client: e.cp.Admin, NodeName: nodeName, HostIP: nodeIP,
		CNIBinDirs: []string{bin}, ConfList: []byte(conflist), CacheDir: filepath.Join(e.dir, "cni-cache"),
		Serve: true, Logf: t.Logf,
	})
	must(t, err)
	t.Cleanup(e.kubelet.Stop)
	return e
}

// as makes the helpers report to a subtest until the returned func runs:
// FailNow must be called from the goroutine of the test that fails.
// Subtests here run one after another, so swapping is safe.
func (e *env) as(t *testing.T) (restore func()) {
	parent := e.t
	e.t = t
	return func() { e.t = parent }
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// kubectl runs kubectl as the admin, failing the test on error.
func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	out, err := e.cp.Kubectl(context.Background(), args...)
	must(e.t, err)
	return out
}

func (e *env) kubectlStdin(stdin string, args ...string) string {
	e.t.Helper()
	out, err := e.cp.KubectlStdin(context.Background(), stdin, args...)
	must(e.t, err)
	return out
}

// startAgent runs terwayd in the node namespace as the terway
// ServiceAccount (NODE_NAME from the environment, as the DaemonSet sets it)
// and waits for /readyz.
func (e *env) startAgent() time.Duration {
	e.t.Helper()
	start := time.Now()
	e.agentLog = filepath.Join(e.dir, "terwayd.log")
	logFile, err := os.OpenFile(e.agentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(e.t, err)
	defer logFile.Close()
	// `ip netns exec` execs terwayd in place: the PID is terwayd's.
	e.agent = exec.Command("ip", "netns", "exec", nstest.Name(e.node), filepath.Join(binaries(e.t), "terwayd"),
		"--kubeconfig", e.saConfig, "--config", e.config, "--state-dir", e.state, "--socket", e.socket,
		"--resync-interval", e.resync.String(), "--health-addr", healthAddr, "--log-level", "debug",
		"--device-plugin", "off") // the test's node is not the machine's kubelet's
	e.agent.Env = append(os.Environ(), "NODE_NAME="+nodeName)
	e.agent.Stdout, e.agent.Stderr = logFile, logFile
	e.agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(e.t, e.agent.Start())
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _, _ := e.get("/readyz"); code == http.StatusOK {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("terwayd not ready within 30s; log:\n%s", e.log(60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopAgent ends terwayd by its PID: SIGTERM, SIGKILL after 10 s.
func (e *env) stopAgent() {
	if e.agent == nil || e.agent.Process == nil {
		return
	}
	_ = e.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = e.agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = e.agent.Process.Kill()
		<-done
	}
	e.agent = nil
	if e.t.Failed() {
		e.t.Logf("terwayd log (tail):\n%s", e.log(80))
	}
}

// killAgent ends terwayd with SIGKILL, as a crash would.
func (e *env) killAgent() {
	if e.agent == nil || e.agent.Process == nil {
		return
	}
	_ = e.agent.Process.Signal(syscall.SIGKILL)
	_ = e.agent.Wait()
	e.agent = nil
}

func (e *env) log(lines int) string {
	data, _ := os.ReadFile(e.agentLog)
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// get fetches an agent endpoint from inside the node namespace.
func (e *env) get(path string) (int, http.Header, string) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return traffic.Dial(ctx, e.node, network, addr)
		},
	}}
	resp, err := client.Get("http://" + healthAddr + path)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		b.WriteString(sc.Text() + "\n")
	}
	return resp.StatusCode, resp.Header, b.String()
}

// planOps is the number of operations a full resync would execute now
// (the agent's /plan); 0 on a converged node.
func (e *env) planOps() (int, string) {
	e.t.Helper()
	code, h, body := e.get("/plan")
	if code != http.StatusOK {
		e.t.Fatalf("/plan: HTTP %d: %s", code, body)
	}
	n, err := strconv.Atoi(h.Get("X-Terway-Plan-Operations"))
	must(e.t, err)
	return n, body
}

// podSpec is a pod bound to the node with an HTTP (TCP 80) and a DNS
// (UDP 53) port, served by the kubelet stand-in's echo servers.
func podSpec(ns, name string, labels, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			NodeName: nodeName,
			Containers: []corev1.Container{{Name: "c", Image: "e2e.invalid/none:1", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
				{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
			}}},
		},
	}
}

// createNamespace makes a namespace with a per-run name: deleted
// namespaces stay Terminating (no controller-manager), so names are never
// reused.
func (e *env) createNamespace(base string, labels map[string]string) string {
	e.t.Helper()
	name := base + "-" + nstest.RunID
	_, err := e.cp.Admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	must(e.t, err)
	return name
}

// sandbox returns a running pod's sandbox, failing the test if it has none.
func (e *env) sandbox(ns, name string) kubelet.Sandbox {
	e.t.Helper()
	sb, ok := e.kubelet.Sandbox(ns, name)
	if !ok || !sb.Reported {
		e.t.Fatalf("pod %s/%s is not running (last setup error: %v)", ns, name, e.kubelet.LastError(ns, name))
	}
	return sb
}

// probe reports whether from reaches to's echo server (TCP 80 or UDP 53).
// A blocked probe waits for its timeout, so blocked checks use a short one.
func probe(from, to kubelet.Sandbox, proto string, timeout time.Duration) bool {
	port := "80"
	if proto == "udp" {
		port = "53"
	}
	return traffic.Probe(from.Netns, proto, to.IP+":"+port, timeout)
}

func (e *env) reachable(from, to kubelet.Sandbox, proto string, want bool) {
	e.t.Helper()
	timeout := 2 * time.Second
	if !want {
		timeout = 500 * time.Millisecond
	}
	if got := probe(from, to, proto, timeout); got != want {
		e.t.Errorf("%s/%s -> %s/%s (%s) %s: reachable=%v, want %v", from.Namespace, from.Name, to.Namespace, to.Name, to.IP, proto, got, want)
	}
}

// nftRuleset is the agent's nftables table in the node namespace.
func (e *env) nftRuleset() string {
	// Stateless (-s): the anti-spoofing rules' counters move with every
	// packet, and only a change of the table's content counts here.
	out, err := nstest.Exec(e.node, "nft", "-s", "list", "table", "inet", "terway")
	if err != nil {
		return "error: " + err.Error() + ": " + out
	}
	return out
}

// podIPInNetns reads the pod's eth0 address from its namespace, the truth
// the kernel holds.
func podIPInNetns(t testing.TB, sb kubelet.Sandbox) string {
	t.Helper()
	out := nstest.Run(t, sb.Netns, "ip", "-j", "-4", "addr", "show", "dev", "eth0")
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 || len(links[0].AddrInfo) == 0 {
		t.Fatalf("pod %s/%s: eth0 addresses %q: %v", sb.Namespace, sb.Name, out, err)
	}
	return links[0].AddrInfo[0].Local
}

// waitPlanEmpty waits until the agent has nothing left to do: the state
// every measurement starts from, so that the change it sees is the one the
// test made.
func (e *env) waitPlanEmpty(bound time.Duration) {
	e.t.Helper()
	var last string
	deadline := time.Now().Add(bound)
	for {
		n, body := e.planOps()
		if n == 0 {
			return
		}
		last = body
		if time.Now().After(deadline) {
			e.t.Fatalf("plan not empty within %s:\n%s", bound, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// describe names a pod for messages.
func describe(sb kubelet.Sandbox) string {
	return fmt.Sprintf("%s/%s (%s)", sb.Namespace, sb.Name, sb.IP)
}
