package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/cni/wire"
)

// funcHandler is a Handler whose methods are set per test; an unset method
// succeeds.
type funcHandler struct {
	add    func(context.Context, *wire.Request) (*types100.Result, error)
	del    func(context.Context, *wire.Request) error
	status func(context.Context, *wire.Request) error
	got    chan *wire.Request
}

func (h *funcHandler) record(r *wire.Request) {
	if h.got != nil {
		h.got <- r
	}
}

func (h *funcHandler) Add(ctx context.Context, r *wire.Request) (*types100.Result, error) {
	h.record(r)
	if h.add != nil {
		return h.add(ctx, r)
	}
	return sampleResult(), nil
}

func (h *funcHandler) Del(ctx context.Context, r *wire.Request) error {
	h.record(r)
	if h.del != nil {
		return h.del(ctx, r)
	}
	return nil
}

func (h *funcHandler) Check(_ context.Context, r *wire.Request) error { h.record(r); return nil }
func (h *funcHandler) GC(_ context.Context, r *wire.Request) error    { h.record(r); return nil }

func (h *funcHandler) Status(ctx context.Context, r *wire.Request) error {
	h.record(r)
	if h.status != nil {
		return h.status(ctx, r)
	}
	return nil
}

// sockDir is a short temporary directory: unix socket paths must fit in
// 108 bytes, which t.TempDir's long names can exceed.
func sockDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "tw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// serve runs h on a fresh socket and returns its path.
func serve(t *testing.T, h Handler) string {
	t.Helper()
	sock := filepath.Join(sockDir(t), "run", "agent.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: NewHTTPHandler(h, slog.New(slog.NewTextHandler(io.Discard, nil))), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

func addRequest() *wire.Request {
	return &wire.Request{
		ContainerID: "c1", Netns: "/var/run/netns/p1", IfName: "eth0",
		Args:    wire.PodArgs{Namespace: "default", Name: "web-0"},
		NetConf: wire.NetConf{CNIVersion: "0.4.0", Name: "terway", Type: "terway"},
	}
}

// decodeResult decodes an answer's Result.
func decodeResult(t *testing.T, resp *wire.Response) *types100.Result {
	t.Helper()
	res := &types100.Result{}
	if err := json.Unmarshal(resp.Result, res); err != nil {
		t.Fatalf("result %s: %v", resp.Result, err)
	}
	return res
}

func TestClientServerAdd(t *testing.T) {
	h := &funcHandler{got: make(chan *wire.Request, 1)}
	c := wire.NewClient(serve(t, h), 10*time.Second)
	resp, err := c.Add(context.Background(), addRequest())
	if err != nil {
		t.Fatal(err)
	}
	if res := decodeResult(t, resp); res.CNIVersion != wire.ResultVersion || res.IPs[0].Address.String() != "198.18.0.10/32" {
		t.Errorf("result = %+v", res)
	}
	// The output is in the request's version (0.4.0), which names each
	// IP's version.
	var out struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Version string `json:"version"`
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(resp.Output, &out); err != nil || out.CNIVersion != "0.4.0" || len(out.IPs) != 1 ||
		out.IPs[0].Version != "4" || out.IPs[0].Address != "198.18.0.10/32" {
		t.Errorf("output = %s (%v), want the result in 0.4.0", resp.Output, err)
	}
	got := <-h.got
	if got.Command != wire.CmdAdd || got.Args.Name != "web-0" || got.CNIVersion != "0.4.0" {
		t.Errorf("agent saw %+v", got)
	}
}

func TestClientServerResultVersionNormalised(t *testing.T) {
	h := &funcHandler{add: func(context.Context, *wire.Request) (*types100.Result, error) {
		r := sampleResult()
		r.CNIVersion = ""
		return r, nil
	}}
	resp, err := wire.NewClient(serve(t, h), 10*time.Second).Add(context.Background(), addRequest())
	if err != nil {
		t.Fatal(err)
	}
	if res := decodeResult(t, resp); res.CNIVersion != wire.ResultVersion {
		t.Fatalf("got %+v; want a %s result", res, wire.ResultVersion)
	}
}

func TestClientServerErrors(t *testing.T) {
	cniErr := types.NewError(types.ErrTryAgainLater, "pool empty", "vswitch vsw-1 has no free IP")
	for _, tc := range []struct {
		name string
		err  error
		want *types.Error
	}{
		{"cni error", cniErr, cniErr},
		{"wrapped cni error", fmt.Errorf("allocating: %w", cniErr), cniErr},
		{"plain error", errors.New("disk full"), types.NewError(types.ErrInternal, "disk full", "")},
		{"status not ready", types.NewError(types.ErrPluginNotAvailable, "informers not synced", ""), types.NewError(50, "informers not synced", "")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &funcHandler{
				add:    func(context.Context, *wire.Request) (*types100.Result, error) { return nil, tc.err },
				status: func(context.Context, *wire.Request) error { return tc.err },
			}
			c := wire.NewClient(serve(t, h), 10*time.Second)
			want := wire.Error{Code: tc.want.Code, Msg: tc.want.Msg, Details: tc.want.Details}
			_, err := c.Add(context.Background(), addRequest())
			var ce *wire.Error
			if !errors.As(err, &ce) || *ce != want {
				t.Errorf("ADD error = %#v, want %#v", err, want)
			}
			err = c.Status(context.Background(), &wire.Request{NetConf: addRequest().NetConf})
			if !errors.As(err, &ce) || *ce != want {
				t.Errorf("STATUS error = %#v, want %#v", err, want)
			}
		})
	}
}

func TestServerRecoversPanicAndNilResult(t *testing.T) {
	h := &funcHandler{
		add: func(context.Context, *wire.Request) (*types100.Result, error) { return nil, nil },
		del: func(context.Context, *wire.Request) error { panic("boom") },
	}
	c := wire.NewClient(serve(t, h), 10*time.Second)
	_, err := c.Add(context.Background(), addRequest())
	var ce *wire.Error
	if !errors.As(err, &ce) || ce.Code != wire.ErrInternal || !strings.Contains(ce.Msg, "returned no result") {
		t.Errorf("nil result: %v", err)
	}
	err = c.Del(context.Background(), addRequest())
	if !errors.As(err, &ce) || ce.Code != wire.ErrInternal || ce.Details != "boom" {
		t.Errorf("panic: %v", err)
	}
	if _, err := c.Add(context.Background(), addRequest()); err == nil || !strings.Contains(err.Error(), "no result") {
		t.Errorf("server did not survive the panic: %v", err)
	}
}

func TestServerRefusesBadCalls(t *testing.T) {
	sock := serve(t, &funcHandler{})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	for _, tc := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/v1/cni/add", "", 400, "only POST"},
		{"POST", "/v1/cni/version", "{}", 400, "names no command"},
		{"POST", "/v2/x", "{}", 400, "names no command"},
		{"POST", "/v1/cni/add", "not json", 400, "not a valid request"},
		{"POST", "/v1/cni/del", `{"command":"ADD"}`, 400, "does not match path"},
		{"POST", "/v1/cni/status", `{"netconf":{"cniVersion":"1.1.0","name":"n"}}`, 400, `\"type\" is missing`},
		{"POST", "/v1/cni/status", `{"netconf":{"cniVersion":"1.1.0","name":"n","type":"t"},"futureField":1}`, 200, ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://terway"+tc.path, strings.NewReader(tc.body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s %s: HTTP %d %s; want %d with %q", tc.method, tc.path, tc.body, resp.StatusCode, body, tc.status, tc.want)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	sock := filepath.Join(sockDir(t), "absent.sock")
	err := wire.NewClient(sock, 5*time.Second).Status(context.Background(), &wire.Request{NetConf: addRequest().NetConf})
	var ce *wire.CallError
	if !errors.As(err, &ce) || ce.Kind != wire.Unreachable || ce.Socket != sock || !strings.Contains(err.Error(), sock) {
		t.Fatalf("got %v, want wire.Unreachable naming %s", err, sock)
	}
	// A socket file with nobody behind it: connection refused.
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	_ = l.Close()
	err = wire.NewClient(sock, 5*time.Second).Del(context.Background(), addRequest())
	if !errors.As(err, &ce) || ce.Kind != wire.Unreachable || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("stale socket: got %v, want wire.Unreachable (connection refused)", err)
	}
}

func TestClientTimeoutCancelsAgent(t *testing.T) {
	cancelled := make(chan struct{})
	h := &funcHandler{add: func(ctx context.Context, _ *wire.Request) (*types100.Result, error) {
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}}
	_, err := wire.NewClient(serve(t, h), 100*time.Millisecond).Add(context.Background(), addRequest())
	var ce *wire.CallError
	if !errors.As(err, &ce) || ce.Kind != wire.TimedOut || !strings.Contains(err.Error(), "within 100ms") {
		t.Fatalf("got %v, want wire.TimedOut within 100ms", err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's context was not cancelled when the plugin gave up")
	}
}

// TestClientCancelEndsAWaitingCall: cancelling the caller's context ends a
// call the agent is working on, and the agent's context ends too.
func TestClientCancelEndsAWaitingCall(t *testing.T) {
	started, cancelled := make(chan struct{}), make(chan struct{})
	h := &funcHandler{add: func(ctx context.Context, _ *wire.Request) (*types100.Result, error) {
		close(started)
		<-ctx.Done()
		close(cancelled)
		return nil, ctx.Err()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := wire.NewClient(serve(t, h), 0).Add(ctx, addRequest())
	var ce *wire.CallError
	if !errors.As(err, &ce) || ce.Kind != wire.TimedOut {
		t.Fatalf("got %v, want wire.TimedOut after the cancel", err)
	}
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's context was not cancelled when the caller gave up")
	}
}

// TestClientFullBacklogIsUnreachable: an agent too busy to accept (its
// listen backlog full) is unreachable at once, as with package net's dial:
// the runtime retries, rather than the plugin waiting out its timeout.
func TestClientFullBacklogIsUnreachable(t *testing.T) {
	sock := filepath.Join(sockDir(t), "busy.sock")
	lfd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(lfd) })
	if err := syscall.Bind(lfd, &syscall.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(lfd, 0); err != nil {
		t.Fatal(err)
	}
	// Fill the backlog with connections nobody accepts.
	full := false
	for i := 0; i < 16 && !full; i++ {
		fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Close(fd) })
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: sock})
		full = errors.Is(err, syscall.EAGAIN)
		if err != nil && !full {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("the listen backlog never filled")
	}
	done := make(chan error, 1)
	go func() { done <- wire.NewClient(sock, time.Hour).Del(context.Background(), addRequest()) }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the call waited on a full backlog")
	}
	var ce *wire.CallError
	if !errors.As(err, &ce) || ce.Kind != wire.Unreachable || !strings.Contains(err.Error(), sock) {
		t.Fatalf("got %v, want wire.Unreachable naming %s", err, sock)
	}
}

func TestClientProtocolAndBroken(t *testing.T) {
	dir := sockDir(t)
	// Something that is not a terway agent on the socket.
	other := filepath.Join(dir, "other.sock")
	l, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	_, err = wire.NewClient(other, 5*time.Second).Add(context.Background(), addRequest())
	var ce *wire.CallError
	if !errors.As(err, &ce) || ce.Kind != wire.Protocol || !strings.Contains(err.Error(), "404 page not found") {
		t.Fatalf("foreign server: got %v, want wire.Protocol quoting the body", err)
	}

	// An agent that accepts and hangs up without answering (crash mid-call).
	broken := filepath.Join(dir, "broken.sock")
	bl, err := net.Listen("unix", broken)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bl.Close() })
	go func() {
		for {
			c, err := bl.Accept()
			if err != nil {
				return
			}
			_, _ = c.Read(make([]byte, 512))
			_ = c.Close()
		}
	}()
	_, err = wire.NewClient(broken, 5*time.Second).Add(context.Background(), addRequest())
	if !errors.As(err, &ce) || ce.Kind != wire.Broken {
		t.Fatalf("hang-up: got %v, want wire.Broken", err)
	}
}

func sampleResult() *types100.Result {
	return &types100.Result{
		CNIVersion: wire.ResultVersion,
		Interfaces: []*types100.Interface{{Name: "eth0", Mac: "02:00:00:00:00:01", Sandbox: "/var/run/netns/p1"}},
		IPs: []*types100.IPConfig{{
			Interface: types100.Int(0),
			Address:   net.IPNet{IP: net.ParseIP("198.18.0.10").To4(), Mask: net.CIDRMask(32, 32)},
			Gateway:   net.ParseIP("169.254.1.1").To4(),
		}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: net.ParseIP("169.254.1.1").To4()}},
	}
}

// TestLargeAnswerIsNotChunked: an error with 64 KiB of details reaches the
// client whole (the server sends a length; the client refuses chunking).
func TestLargeAnswerIsNotChunked(t *testing.T) {
	details := strings.Repeat("+ route 198.18.0.10/32 dev tw0123456789a scope link table main proto terway\n", 900)
	sock := serve(t, &funcHandler{del: func(context.Context, *wire.Request) error {
		return types.NewError(104, "CHECK: differences", details)
	}})
	c := wire.NewClient(sock, 5*time.Second)
	req := addRequest()
	err := c.Del(context.Background(), req)
	var ce *wire.Error
	if !errors.As(err, &ce) || ce.Details != details {
		t.Fatalf("large answer: %v", err)
	}
}

const prev040 = `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/n"}],` +
	`"ips":[{"version":"4","address":"198.18.0.7/32","gateway":"169.254.1.1","interface":0}]}`

// TestDecodeRequestNormalisesPrevResult: the plugin sends the prevResult as
// the runtime wrote it; the handler sees it in wire.ResultVersion, or not
// at all for a DEL whose prevResult is unusable.
func TestDecodeRequestNormalisesPrevResult(t *testing.T) {
	decode := func(cmd wire.Command, version, prev string) (*wire.Request, *types.Error) {
		req := addRequest()
		req.Command, req.CNIVersion, req.NetConf.CNIVersion = cmd, version, version
		req.PrevResult = json.RawMessage(prev)
		body, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		return DecodeRequest(httptest.NewRequest("POST", cmd.Path(), bytes.NewReader(body)))
	}
	req, e := decode(wire.CmdCheck, "0.4.0", prev040)
	if e != nil {
		t.Fatal(e)
	}
	res, err := PrevResult(req)
	if err != nil || res.CNIVersion != wire.ResultVersion || res.IPs[0].Address.String() != "198.18.0.7/32" {
		t.Fatalf("prevResult = %+v, %v", res, err)
	}
	for _, tc := range []struct {
		name, prev string
		cmd        wire.Command
		code       uint // 0: accepted without a prevResult
	}{
		{"check broken", `{"ips":[{"address":"nope"}]}`, wire.CmdCheck, 6},
		// An IP without an address converts but encodes as "<nil>"; DEL
		// goes on without it (found by FuzzBuildRequest).
		{"check without address", `{"cniVersion":"1.1.0","ips":[{"gateway":"169.254.1.1"}]}`, wire.CmdCheck, 6},
		{"del broken", `{"ips":[{"address":"nope"}]}`, wire.CmdDel, 0},
		{"del without address", `{"cniVersion":"1.1.0","ips":[{"gateway":"169.254.1.1"}]}`, wire.CmdDel, 0},
		{"del of another version", `{"cniVersion":"0.3.1","ips":[{"version":"4","address":"198.18.0.7/32"}]}`, wire.CmdDel, 0},
	} {
		req, e := decode(tc.cmd, "1.1.0", tc.prev)
		switch {
		case tc.code != 0 && (e == nil || e.Code != tc.code || !strings.Contains(e.Msg, "prevResult")):
			t.Errorf("%s: got %v, want code %d naming prevResult", tc.name, e, tc.code)
		case tc.code == 0 && e != nil:
			t.Errorf("%s: refused: %v", tc.name, e)
		case tc.code == 0 && tc.name != "del of another version" && req.PrevResult != nil:
			t.Errorf("%s: the handler sees the broken prevResult %s", tc.name, req.PrevResult)
		}
	}
}

// TestAddInAVersionWithoutAResultFormIsRefusedFirst: the agent converts the
// result to the request's version only after setting the pod up; a
// version it cannot convert to is refused before the handler runs.
func TestAddInAVersionWithoutAResultFormIsRefusedFirst(t *testing.T) {
	h := &funcHandler{got: make(chan *wire.Request, 1)}
	req := addRequest()
	req.CNIVersion, req.NetConf.CNIVersion = "9.9.9", "9.9.9"
	_, err := wire.NewClient(serve(t, h), 10*time.Second).Add(context.Background(), req)
	var ce *wire.Error
	if !errors.As(err, &ce) || ce.Code != wire.ErrIncompatibleCNIVersion || !strings.Contains(ce.Msg, "9.9.9") {
		t.Fatalf("got %v, want code 1 naming 9.9.9", err)
	}
	select {
	case got := <-h.got:
		t.Fatalf("the handler ran for %+v", got)
	default:
	}
}
