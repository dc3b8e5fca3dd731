package forward_test

// The harness: the terway binary (the C forwarder) built once per test run,
// a fake agent serving the wire protocol and the forwarder's exec call
// (NewHandler) on a unix socket in a temporary directory, and
// a libcni runtime with its conflist, bin and cache directories, set up the
// way containerd sets them up. Nothing here opens a network namespace or
// touches the machine's network: the netns paths are just strings the fake
// agent records.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terway-reconciler/terway/cni/forward"
	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
)

// binDir holds the built terway binary (the CNI bin directory).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "terway-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := forward.Build(context.Background(), filepath.Join(dir, "terway"), ""); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// fakeAgent implements wire.Handler: it answers ADD with a fixed result from
// 198.18.0.0/15 and records every request. Hooks, when set, replace the
// default answer of a command.
type fakeAgent struct {
	mu    sync.Mutex
	calls []*wire.Request

	addErr    error
	delErr    error
	checkErr  error
	gcErr     error
	statusErr error
	// block, when set, makes every method wait for the caller to give up
	// and then reports that through cancelled.
	block     bool
	cancelled chan struct{}
	// hang, when set, makes every method wait for it to close, whatever
	// its context says (a handler stuck behind the agent's lock).
	hang chan struct{}
}

func (a *fakeAgent) record(r *wire.Request) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, r)
	return len(a.calls)
}

func (a *fakeAgent) wait(ctx context.Context) error {
	if a.hang != nil {
		<-a.hang
		return nil
	}
	if !a.block {
		return nil
	}
	<-ctx.Done()
	a.cancelled <- struct{}{}
	return ctx.Err()
}

// Calls returns a copy of the recorded requests.
func (a *fakeAgent) Calls() []*wire.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*wire.Request(nil), a.calls...)
}

// Commands returns the recorded commands in order.
func (a *fakeAgent) Commands() []wire.Command {
	var out []wire.Command
	for _, c := range a.Calls() {
		out = append(out, c.Command)
	}
	return out
}

func (a *fakeAgent) Add(ctx context.Context, r *wire.Request) (*types100.Result, error) {
	n := a.record(r)
	if err := a.wait(ctx); err != nil {
		return nil, err
	}
	if a.addErr != nil {
		return nil, a.addErr
	}
	return fixedResult(r.Netns, n), nil
}

func (a *fakeAgent) Del(ctx context.Context, r *wire.Request) error {
	a.record(r)
	if err := a.wait(ctx); err != nil {
		return err
	}
	return a.delErr
}

func (a *fakeAgent) Check(ctx context.Context, r *wire.Request) error {
	a.record(r)
	if err := a.wait(ctx); err != nil {
		return err
	}
	return a.checkErr
}

func (a *fakeAgent) GC(ctx context.Context, r *wire.Request) error {
	a.record(r)
	if err := a.wait(ctx); err != nil {
		return err
	}
	return a.gcErr
}

func (a *fakeAgent) Status(ctx context.Context, r *wire.Request) error {
	a.record(r)
	if err := a.wait(ctx); err != nil {
		return err
	}
	return a.statusErr
}

// fixedResult is the pod datapath of VPC mode: eth0 with 198.18.0.n/32 and
// a default route via the link-local gateway.
func fixedResult(netns string, n int) *types100.Result {
	gw := net.ParseIP("169.254.1.1").To4()
	return &types100.Result{
		CNIVersion: wire.ResultVersion,
		Interfaces: []*types100.Interface{{Name: "eth0", Mac: "02:00:c6:12:00:01", Sandbox: netns}},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(0),
			Address:   net.IPNet{IP: net.IPv4(198, 18, 0, byte(n)).To4(), Mask: net.CIDRMask(32, 32)},
			Gateway:   gw,
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:    types.DNS{Nameservers: []string{"198.18.255.10"}, Search: []string{"default.svc.cluster.local"}},
	}
}

// tempDir is a short temporary directory, so socket paths stay under the
// 108-byte limit of unix addresses.
func tempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// startAgent serves a on a new socket and returns its path.
func startAgent(t *testing.T, a *fakeAgent) string {
	t.Helper()
	if a.cancelled == nil {
		a.cancelled = make(chan struct{}, 16)
	}
	sock := filepath.Join(tempDir(t), "run", "terway.sock")
	l, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := &http.Server{Handler: forward.NewHandler(server.NewHTTPHandler(a, log)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// runtime is a libcni runtime with its own conflist and cache directories.
type runtime struct {
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

// newRuntime writes a conflist for cniVersion whose terway plugin entry has
// the given extra fields (JSON object members, e.g. `"socket":"/x"`), and
// loads it as containerd does.
func newRuntime(t *testing.T, cniVersion, pluginFields string) *runtime {
	t.Helper()
	dir := tempDir(t)
	confDir := filepath.Join(dir, "net.d")
	if err := os.Mkdir(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	entry := `{"type":"terway"`
	if pluginFields != "" {
		entry += "," + pluginFields
	}
	entry += `}`
	conflist := fmt.Sprintf(`{"cniVersion":%q,"name":"terway","plugins":[%s]}`, cniVersion, entry)
	if err := os.WriteFile(filepath.Join(confDir, "10-terway.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.LoadNetworkConf(confDir, "terway")
	if err != nil {
		t.Fatalf("loading conflist %s: %v", conflist, err)
	}
	return &runtime{
		// An explicit exec: with nil, libcni creates one lazily on first use,
		// which races when calls run concurrently (as runtimes run them).
		cni: libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "cache"),
			&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}),
		list: list,
	}
}

// runtimeFor is newRuntime pointing at sock.
func runtimeFor(t *testing.T, cniVersion, sock string, more ...string) *runtime {
	fields := fmt.Sprintf(`"socket":%q`, sock)
	for _, m := range more {
		fields += "," + m
	}
	return newRuntime(t, cniVersion, fields)
}

// podRT is the runtime config of a pod sandbox the way kubelet's runtimes
// fill it; the netns path is a name only, nothing opens it.
func podRT(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       "/var/run/netns/cni-test-" + id,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", "pod-" + id},
			{"K8S_POD_INFRA_CONTAINER_ID", id},
			{"K8S_POD_UID", "uid-" + id},
		},
	}
}

// ctx bounds one libcni call; the plugin's own timeouts are shorter.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// rawAgent listens on a unix socket and answers every request with answer,
// whatever it asked; it returns the socket and the requests' headers.
func rawAgent(t *testing.T, answer []byte) (string, chan http.Header) {
	t.Helper()
	sock := filepath.Join(tempDir(t), "raw.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	headers := make(chan http.Header, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
				select {
				case headers <- req.Header:
				default:
				}
			}
			_, _ = c.Write(answer)
			_ = c.Close()
		}
	}()
	return sock, headers
}
