// Package kubetest runs a real Kubernetes control plane for tests: etcd and
// kube-apiserver, built from source by hack/k8s-assets.sh, on 127.0.0.1 with
// free ports, fresh keys and RBAC on. No controller-manager or scheduler
// runs, so Pods stay Pending until a test plays the kubelet, and a deleted
// Namespace stays Terminating: use fresh namespace names.
//
// Everything lives in t.TempDir(); the processes are ended by their PID
// when the test ends, also when it fails.
package kubetest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/terway-reconciler/terway/internal/kubepki"
)

// ControlPlane is one etcd and one kube-apiserver.
type ControlPlane struct {
	t      testing.TB
	dir    string
	assets string
	pki    *kubepki.PKI

	etcdURL string
	apiPort int
	etcd    *process
	api     *process

	// AdminKubeconfig is a kubeconfig file for a cluster-admin identity
	// (a client certificate in system:masters).
	AdminKubeconfig string
	// Admin is a client for that identity.
	Admin kubernetes.Interface
}

// Start runs etcd and kube-apiserver and waits for /readyz. They are
// stopped when the test ends.
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	c := &ControlPlane{t: t, dir: t.TempDir(), assets: Assets(t)}
	var err error
	if c.pki, err = kubepki.New(c.dir, []net.IP{net.IPv4(10, 96, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	start := time.Now()
	if err := c.startEtcd(); err != nil {
		t.Fatal(err)
	}
	// A port that was free a moment ago can be taken before the API server
	// binds it; a second port is cheaper than a flaky test.
	for attempt := 0; ; attempt++ {
		if c.apiPort, err = freePort(); err != nil {
			t.Fatal(err)
		}
		if err = c.StartAPIServer(); err == nil || attempt == 2 {
			break
		}
		t.Logf("kubetest: API server on port %d did not start, trying another port: %v", c.apiPort, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	c.AdminKubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	if err := c.writeKubeconfig(c.AdminKubeconfig, "kubetest-admin", &clientcmdapi.AuthInfo{
		ClientCertificateData: c.pki.AdminCert, ClientKeyData: c.pki.AdminKey,
	}); err != nil {
		t.Fatal(err)
	}
	if c.Admin, err = kubernetes.NewForConfig(c.AdminConfig()); err != nil {
		t.Fatal(err)
	}
	t.Logf("kubetest: Kubernetes %s API server at %s ready in %s", Version, c.URL(), time.Since(start).Round(time.Millisecond))
	return c
}

// URL is the API server's address; the same from the host and from a test
// namespace exposed with ExposeIn.
func (c *ControlPlane) URL() string { return "https://127.0.0.1:" + strconv.Itoa(c.apiPort) }

// Port is the API server's port.
func (c *ControlPlane) Port() int { return c.apiPort }

// CAFile is the CA certificate that verifies the API server.
func (c *ControlPlane) CAFile() string { return c.pki.CAFile }

// AdminConfig returns a fresh REST config for the admin identity.
func (c *ControlPlane) AdminConfig() *rest.Config {
	return &rest.Config{
		Host: c.URL(),
		TLSClientConfig: rest.TLSClientConfig{
			CAData: c.pki.CAPEM, CertData: c.pki.AdminCert, KeyData: c.pki.AdminKey,
		},
		QPS: 200, Burst: 400, // tests create objects in bursts; the default 5 QPS would dominate timings
	}
}

func (c *ControlPlane) startEtcd() error {
	var err error
	for attempt := 0; ; attempt++ {
		var client, peer int
		if client, err = freePort(); err != nil {
			return err
		}
		if peer, err = freePort(); err != nil {
			return err
		}
		c.etcdURL = "http://127.0.0.1:" + strconv.Itoa(client)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
		c.etcd, err = startProcess(filepath.Join(c.assets, "etcd"), filepath.Join(c.dir, "etcd.log"),
			"--name", "kubetest", "--data-dir", filepath.Join(c.dir, "etcd"),
			"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "kubetest="+peerURL,
			// Test data need not survive a power cut; fsync would dominate
			// write latency on a busy CI disk.
			"--unsafe-no-fsync", "--log-level", "warn")
		if err == nil {
			err = c.etcd.waitReady(20*time.Second, func() error { return httpOK(http.DefaultClient, c.etcdURL+"/health") })
		}
		if err == nil || attempt == 2 {
			return err
		}
		c.etcd.stop()
	}
}

// StartAPIServer starts the API server on its port (again, after
// StopAPIServer) and waits for /readyz. etcd keeps the cluster's objects.
func (c *ControlPlane) StartAPIServer() error {
	if c.api != nil {
		return fmt.Errorf("kubetest: kube-apiserver already running (pid %d)", c.api.cmd.Process.Pid)
	}
	var err error
	c.api, err = startProcess(filepath.Join(c.assets, "kube-apiserver"), filepath.Join(c.dir, "kube-apiserver.log"),
		"--etcd-servers", c.etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(c.apiPort),
		// 1.37 refuses a loopback advertise address unless no endpoint
		// reconciler publishes it as the kubernetes Service's endpoint.
		"--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
		"--cert-dir", filepath.Join(c.dir, "apiserver-certs"),
		"--tls-cert-file", c.pki.ServingCert, "--tls-private-key-file", c.pki.ServingKey,
		"--client-ca-file", c.pki.CAFile,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", c.pki.SAPublic, "--service-account-signing-key-file", c.pki.SAPrivate,
		"--service-cluster-ip-range", "10.96.0.0/12",
		"--authorization-mode", "RBAC",
		// No controller-manager creates default ServiceAccounts, so the
		// ServiceAccount admission plugin would reject every Pod.
		"--disable-admission-plugins", "ServiceAccount",
		// The DaemonSet in manifests/ runs privileged.
		"--allow-privileged=true",
		// On SIGTERM, net/http's Shutdown otherwise waits up to the request
		// timeout (60 s) for open watches, which every informer holds; in
		// this mode it gives them 2 s after in-flight requests drained.
		"--shutdown-send-retry-after=true",
		"--profiling=false")
	if err != nil {
		c.api = nil
		return err
	}
	client, err := c.httpClient()
	if err != nil {
		return err
	}
	err = c.api.waitReady(60*time.Second, func() error { return httpOK(client, c.URL()+"/readyz") })
	if err != nil {
		c.api.stop()
		c.api = nil
	}
	return err
}

// StopAPIServer ends the API server (SIGTERM, then SIGKILL after 10 s) and
// leaves etcd running, as a control-plane upgrade or crash would.
func (c *ControlPlane) StopAPIServer() {
	if c.api != nil {
		c.api.stop()
		c.api = nil
	}
}

// RestartAPIServer stops and starts the API server, keeping etcd and so
// every object; clients reconnect to the same address.
func (c *ControlPlane) RestartAPIServer() error {
	c.StopAPIServer()
	return c.StartAPIServer()
}

// Stop ends both processes; the test's cleanup calls it.
func (c *ControlPlane) Stop() {
	c.StopAPIServer()
	if c.etcd != nil {
		c.etcd.stop()
		c.etcd = nil
	}
	if c.t.Failed() {
		c.t.Logf("kubetest: kube-apiserver log (tail):\n%s", tail(filepath.Join(c.dir, "kube-apiserver.log"), 40))
	}
}

// Kubectl runs kubectl as the admin and returns its combined output.
func (c *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlStdin(ctx, "", args...)
}

// KubectlStdin runs kubectl as the admin with stdin (for `-f -`).
func (c *ControlPlane) KubectlStdin(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.assets, "kubectl"), append([]string{"--kubeconfig", c.AdminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// writeKubeconfig writes a kubeconfig for this API server and one identity.
func (c *ControlPlane) writeKubeconfig(path, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.URL(), CertificateAuthorityData: c.pki.CAPEM}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	cfg.CurrentContext = "kubetest"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("kubetest: write kubeconfig %s: %w", path, err)
	}
	return nil
}

// httpClient speaks to the API server as the admin, for /readyz.
func (c *ControlPlane) httpClient() (*http.Client, error) {
	cert, err := tls.X509KeyPair(c.pki.AdminCert, c.pki.AdminKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.CAPEM)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		Proxy:           nil, // never via a proxy from the environment
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

func httpOK(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("kubetest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is one child process and its log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // the exit status, once done is closed
}

func startProcess(bin, logPath string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child holds its own descriptor
	p := &process{name: filepath.Base(bin), log: logPath, done: make(chan struct{}), cmd: exec.Command(bin, args...)}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	// If the test binary dies without cleanup (a panic, a timeout), the
	// kernel ends the child instead of leaving it bound to a port.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("kubetest: start %s: %w", p.name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// waitReady polls ready until it succeeds, the process exits or the bound
// passes; the error then carries the last failure and the log's tail.
func (p *process) waitReady(bound time.Duration, ready func() error) error {
	deadline := time.Now().Add(bound)
	var last error
	for {
		if last = ready(); last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("kubetest: %s (pid %d) exited before it was ready: %v\n%s", p.name, p.cmd.Process.Pid, p.err, tail(p.log, 30))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kubetest: %s (pid %d) not ready within %s: %v\n%s", p.name, p.cmd.Process.Pid, bound, last, tail(p.log, 30))
		}
	}
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after 10 s.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last n lines of a file, for failure messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
