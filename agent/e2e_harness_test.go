package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/internal/cnibench"
	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/testbin"
	"github.com/terway-reconciler/terway/internal/traffic"
)

// binaries builds terwayd and the terway CNI plugin (the C forwarder) once
// per test process.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "terway-e2e-bin-")
		if buildErr != nil {
			return
		}
		buildErr = testbin.Build(context.Background(), binDir, "terwayd")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	// The CNI benchmark re-executes this binary inside the node namespace
	// to drive the plugins from there; see internal/cnibench.
	if job := os.Getenv(cnibench.DriverEnv); job != "" {
		os.Exit(cnibench.DriverMain(job))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// cluster is a node namespace running the real terwayd in standalone mode,
// its input folder, and a libcni client that drives the real terway binary.
type cluster struct {
	t        testing.TB
	node     string // node netns path
	inputs   string // --kube-inputs folder
	state    string
	socket   string
	health   string
	cni      *libcni.CNIConfig
	netconf  *libcni.NetworkConfigList
	agent    *exec.Cmd
	agentLog *os.File
	logLevel string // terwayd's --log-level; debug when empty
	// extraArgs are more terwayd flags.
	extraArgs []string
	pods      map[string]*podNS
	mu        sync.Mutex
}

type podNS struct {
	ns, name, netns, containerID string
	ip                           string
}

const nodeIP = "198.19.0.1"

func newCluster(t testing.TB, resync time.Duration) *cluster {
	t.Helper()
	return newClusterWith(t, resync, true)
}

// newClusterWith starts the agent; without withNode the inputs hold no Node
// object and the agent is not waited for (it cannot become ready).
func newClusterWith(t testing.TB, resync time.Duration, withNode bool) *cluster {
	t.Helper()
	return newClusterArgs(t, resync, withNode)
}

// newClusterArgs is newClusterWith with more terwayd flags.
func newClusterArgs(t testing.TB, resync time.Duration, withNode bool, extraArgs ...string) *cluster {
	t.Helper()
	bin := binaries(t)
	dir := t.TempDir()
	c := &cluster{
		t: t, node: nstest.Netns(t, "node"), inputs: filepath.Join(dir, "inputs"), state: filepath.Join(dir, "state"),
		socket: filepath.Join(dir, "run", "terway.sock"), pods: map[string]*podNS{}, extraArgs: extraArgs,
	}
	nstest.Run(t, c.node, "ip", "addr", "add", nodeIP+"/32", "dev", "lo")
	must(t, os.MkdirAll(c.inputs, 0o755))
	if withNode {
		c.writeNode()
	}
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "terway", "plugins": [{"type": "terway", "socket": %q}]}`, c.socket)
	var err error
	c.netconf, err = libcni.ConfListFromBytes([]byte(conf))
	must(t, err)
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(dir, "cni-cache"), &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}})
	c.startAgent(resync, withNode)
	t.Cleanup(c.stopAgent)
	return c
}

func (c *cluster) writeNode() {
	c.writeInput("node.yaml", `apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 198.18.0.0/22}
status: {addresses: [{type: InternalIP, address: `+nodeIP+`}]}
`)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) writeInput(name, content string) {
	c.t.Helper()
	tmp := filepath.Join(c.inputs, "."+name+".tmp")
	must(c.t, os.WriteFile(tmp, []byte(content), 0o644))
	must(c.t, os.Rename(tmp, filepath.Join(c.inputs, name)))
}

func (c *cluster) removeInput(name string) {
	c.t.Helper()
	must(c.t, os.Remove(filepath.Join(c.inputs, name)))
}

// startAgent runs terwayd inside the node namespace and waits for /readyz.
func (c *cluster) startAgent(resync time.Duration, waitReady bool) {
	c.t.Helper()
	// The agent runs in the node netns, whose loopback is its own (so the
	// port is free); the test dials it from inside that namespace.
	c.health = "127.0.0.1:9482"
	logPath := filepath.Join(c.t.TempDir(), "terwayd.log")
	var err error
	c.agentLog, err = os.Create(logPath)
	must(c.t, err)
	level := c.logLevel
	if level == "" {
		level = "debug"
	}
	args := []string{"netns", "exec", nstest.Name(c.node), filepath.Join(binaries(c.t), "terwayd"),
		"--node-name", "node-1", "--kube-inputs", c.inputs, "--state-dir", c.state, "--socket", c.socket,
		"--resync-interval", resync.String(), "--health-addr", c.health, "--log-level", level,
		// Off unless a test says otherwise (a later flag wins): the test's
		// node is not the machine's kubelet's.
		"--device-plugin", "off"}
	c.agent = exec.Command("ip", append(args, c.extraArgs...)...)
	c.agent.Stdout, c.agent.Stderr = c.agentLog, c.agentLog
	c.agent.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(c.t, c.agent.Start())
	if !waitReady {
		return
	}
	c.waitReady()
}

func (c *cluster) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := c.get("/readyz"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("terwayd not ready within 30s; log:\n%s", c.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killAgent ends the agent with SIGKILL, as a crash would.
func (c *cluster) killAgent() {
	if c.agent == nil || c.agent.Process == nil {
		return
	}
	_ = c.agent.Process.Signal(syscall.SIGKILL)
	_ = c.agent.Wait()
	c.agent = nil
}

func (c *cluster) stopAgent() {
	if c.agent == nil || c.agent.Process == nil {
		return
	}
	if c.t.Failed() {
		c.t.Logf("terwayd's resyncs, from /applied:\n%s", c.resyncsApplied())
	}
	_ = c.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.agent.Process.Kill()
		<-done
	}
	c.agent = nil
	if c.t.Failed() {
		c.t.Logf("terwayd log:\n%s", c.log())
	}
}

// resyncsApplied is what the agent's resyncs executed (/applied less the
// CNI requests' operations, which the log has), the last 200 lines: a
// failure after concurrent CNI requests asks whether a resync wrote
// meanwhile, which the log's counts do not say.
func (c *cluster) resyncsApplied() string {
	code, body := c.get("/applied")
	if code != http.StatusOK {
		return fmt.Sprintf("HTTP %d: %s", code, body)
	}
	var out []string
	resync := false
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "# ") {
			resync = strings.HasSuffix(l, " resync") || strings.HasSuffix(l, " full resync")
		}
		if resync {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-200):], "\n")
}

func (c *cluster) log() string {
	data, _ := os.ReadFile(c.agentLog.Name())
	lines := strings.Split(string(data), "\n")
	if len(lines) > 80 {
		lines = lines[len(lines)-80:]
	}
	return strings.Join(lines, "\n")
}

// get fetches a health endpoint from inside the node namespace.
func (c *cluster) get(path string) (int, string) {
	var body string
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: c.dialInNode, Proxy: nil}}
	resp, err := client.Get("http://" + c.health + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		body += sc.Text() + "\n"
	}
	return resp.StatusCode, body
}

func (c *cluster) dialInNode(ctx context.Context, network, addr string) (net.Conn, error) {
	return traffic.Dial(ctx, c.node, network, addr)
}

// pod makes a pod: its YAML in the inputs, its network namespace, and a CNI
// ADD through libcni. It returns the CNI result's IP.
func (c *cluster) podYAML(ns, name string, labels, annotations map[string]string) string {
	var lb, an []string
	for k, v := range labels {
		lb = append(lb, fmt.Sprintf("%q: %q", k, v))
	}
	for k, v := range annotations {
		an = append(an, fmt.Sprintf("%q: %q", k, v))
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {namespace: %s, name: %s, uid: uid-%s-%s, labels: {%s}, annotations: {%s}}
spec:
  nodeName: node-1
  containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}]
`, ns, name, ns, name, strings.Join(lb, ", "), strings.Join(an, ", "))
}

func (c *cluster) rt(p *podNS) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.containerID, NetNS: p.netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.ns}, {"K8S_POD_NAME", p.name},
			{"K8S_POD_UID", "uid-" + p.ns + "-" + p.name}, {"K8S_POD_INFRA_CONTAINER_ID", p.containerID}},
	}
}

func (c *cluster) add(ns, name string) (*podNS, error) {
	p := &podNS{ns: ns, name: name, netns: nstest.Netns(c.t, ns+"-"+name), containerID: fmt.Sprintf("ctr-%s-%s-%d", ns, name, time.Now().UnixNano())}
	res, err := c.cni.AddNetworkList(context.Background(), c.netconf, c.rt(p))
	if err != nil {
		return p, err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return p, err
	}
	p.ip = r.IPs[0].Address.IP.String()
	c.mu.Lock()
	c.pods[ns+"/"+name] = p
	c.mu.Unlock()
	return p, nil
}

func (c *cluster) del(p *podNS) error {
	err := c.cni.DelNetworkList(context.Background(), c.netconf, c.rt(p))
	if err == nil {
		c.mu.Lock()
		delete(c.pods, p.ns+"/"+p.name)
		c.mu.Unlock()
	}
	return err
}

func (c *cluster) check(p *podNS) error {
	return c.cni.CheckNetworkList(context.Background(), c.netconf, c.rt(p))
}

func (c *cluster) gc(valid []*podNS) error {
	var atts []types.GCAttachment
	for _, p := range valid {
		atts = append(atts, types.GCAttachment{ContainerID: p.containerID, IfName: "eth0"})
	}
	return c.cni.GCNetworkList(context.Background(), c.netconf, &libcni.GCArgs{ValidAttachments: atts})
}

func (c *cluster) status() error {
	return c.cni.GetStatusNetworkList(context.Background(), c.netconf)
}

// readd repeats an ADD for an existing attachment and returns its IP.
func (c *cluster) readd(p *podNS) (string, error) {
	res, err := c.cni.AddNetworkList(context.Background(), c.netconf, c.rt(p))
	if err != nil {
		return "", err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", err
	}
	return r.IPs[0].Address.IP.String(), nil
}
