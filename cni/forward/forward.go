// Package forward is the agent's side of the terway CNI binary, a static C
// program (forwarder/terway.c) that hands each invocation to the agent
// whole: its CNI_* environment and its stdin, unread. The agent runs the
// invocation in-process with package plugin, exactly as the Go plugin
// binary would have run it, and answers with what to print on stdout and
// the exit status.
//
// Why: the runtime starts the plugin for every ADD and DEL, and on the
// paravirtual VMs we run on a Go program's start alone (the runtime's
// initialisation, threads, page faults of its binary) costs more CPU than
// the C forwarder's whole run, about 1 ms of each ADD. With many pods
// started at once the node is CPU-bound, and that millisecond is a fifth
// of terway's CPU per ADD. Every check of the protocol stays in Go, in one
// place: the forwarder parses nothing but the config's "socket" key.
//
// # The exec call
//
//	POST /v1/cni/exec
//	Content-Type: application/vnd.terway.cni-exec
//	Terway-Caller-Netns: <dev>:<ino>   (the forwarder's /proc/self/ns/net)
//
// The body is the forwarder's CNI_* variables, each "NAME=value" ended by a
// NUL byte, then one more NUL, then stdin verbatim. The answer is HTTP 200
// with a Terway-Exit header (the exit status) and a body to print on
// stdout as it is; any other answer is a protocol error to the forwarder.
// The JSON endpoints (package wire) stay for the Go plugin of an older
// node and for people with curl.
package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/cni/plugin"
	"github.com/terway-reconciler/terway/cni/wire"
)

// Path is where the forwarder posts an invocation.
const Path = wire.PathPrefix + "exec"

// Headers of the exec call.
const (
	// CallerNetnsHeader carries the forwarder's own network namespace as
	// "dev:ino": an ADD into it is refused as the plugin would refuse it.
	CallerNetnsHeader = "Terway-Caller-Netns"
	// SocketHeader carries the socket the forwarder dialled: the config's
	// as the forwarder read it. The agent refuses the call when the
	// config, read whole, names another (a key spelled in a way the
	// forwarder's scan does not read), rather than serve another agent's
	// pod.
	SocketHeader = "Terway-Socket"
	// ExitHeader carries the exit status the forwarder exits with.
	ExitHeader = "Terway-Exit"
	// ContentType is the exec call's body type.
	ContentType = "application/vnd.terway.cni-exec"
)

// maxEnvBytes bounds the environment part of an exec body.
const maxEnvBytes = 64 << 10

// NewHandler serves the exec call and hands every other path to inner,
// the agent's JSON handler (cni/server), which also serves each exec call's
// request in-process.
func NewHandler(inner http.Handler) http.Handler {
	return &handler{inner: inner}
}

type handler struct{ inner http.Handler }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		h.inner.ServeHTTP(w, r)
		return
	}
	var stdout bytes.Buffer
	code := h.exec(r, &stdout)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(ExitHeader, strconv.Itoa(code))
	w.Header().Set("Content-Length", strconv.Itoa(stdout.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(stdout.Bytes())
}

// exec runs one invocation and returns its exit status, its output in
// stdout. A malformed call is answered as the plugin answers a failure: a
// CNI error on stdout, status 1.
func (h *handler) exec(r *http.Request, stdout *bytes.Buffer) int {
	env, stdin, caller, socket, err := readCall(r)
	if err != nil {
		b, _ := json.MarshalIndent(wire.NewError(wire.ErrInternal,
			"terway: the agent could not read the forwarder's call", err.Error()), "", "    ")
		stdout.Write(append(b, '\n'))
		return 1
	}
	getenv := func(name string) string { return env[name] }
	with := &plugin.Plugin{RoundTrip: h.roundTrip, CallerNetns: caller, DialledSocket: socket}
	return plugin.Invoke(r.Context(), getenv, bytes.NewReader(stdin), stdout, io.Discard, with)
}

// readCall splits an exec body into its environment and stdin, and reads
// the caller's namespace and the socket it dialled.
func readCall(r *http.Request) (env map[string]string, stdin []byte, caller *plugin.NetnsID, socket string, err error) {
	fail := func(format string, args ...any) (map[string]string, []byte, *plugin.NetnsID, string, error) {
		return nil, nil, nil, "", fmt.Errorf(format, args...)
	}
	if r.Method != http.MethodPost {
		return fail("method %s, want POST", r.Method)
	}
	const limit = maxEnvBytes + wire.MaxMessageBytes + 2 // stdin may be one byte over, for the plugin to report
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return fail("reading the body: %v", err)
	}
	if len(body) > limit {
		return fail("the body is larger than %d bytes", limit)
	}
	env = map[string]string{}
	for size := 0; ; {
		end := bytes.IndexByte(body, 0)
		if end < 0 {
			return fail("the environment is not ended by an empty entry")
		}
		entry := string(body[:end])
		body = body[end+1:]
		if entry == "" {
			break
		}
		if size += end + 1; size > maxEnvBytes {
			return fail("the environment is larger than %d bytes", maxEnvBytes)
		}
		name, value, ok := strings.Cut(entry, "=")
		if !ok || !strings.HasPrefix(name, "CNI_") {
			return fail("environment entry %q is not CNI_NAME=value", entry)
		}
		if _, dup := env[name]; !dup {
			env[name] = value // the first, as getenv reads it in the forwarder
		}
	}
	if v := r.Header.Get(CallerNetnsHeader); v != "" {
		d, i, ok := strings.Cut(v, ":")
		dev, err1 := strconv.ParseUint(d, 10, 64)
		ino, err2 := strconv.ParseUint(i, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return fail("header %s: %q is not dev:ino", CallerNetnsHeader, v)
		}
		caller = &plugin.NetnsID{Dev: dev, Ino: ino}
	}
	return env, body, caller, r.Header.Get(SocketHeader), nil
}

// roundTrip serves one JSON request of the plugin code with the agent's
// own handler, in-process: the same decoding, checks and answers as over
// the socket, without a second connection.
func (h *handler) roundTrip(ctx context.Context, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://terway"+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	rec := &recorder{header: http.Header{}}
	served := make(chan struct{})
	go func() {
		defer close(served)
		defer func() {
			// Off the server's goroutine, whose recovery does not reach
			// here: a panic is the call's internal error, not the agent's
			// end.
			if p := recover(); p != nil {
				b, _ := json.Marshal(wire.Response{Error: wire.NewError(wire.ErrInternal,
					"terway agent: internal error serving the forwarder's call", fmt.Sprint(p))})
				rec.status = http.StatusInternalServerError
				rec.body.Reset()
				rec.body.Write(b)
			}
		}()
		h.inner.ServeHTTP(rec, req)
	}()
	select {
	case <-served:
	case <-ctx.Done():
	}
	if err := ctx.Err(); err != nil {
		// As over the socket, where the context's end shuts the
		// connection down: the call timed out (the config's timeout, or
		// the forwarder went away) whatever the handler does, which sees
		// its request's context end and finishes on its own.
		return 0, nil, err
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.status, rec.body.Bytes(), nil
}

// recorder is the http.ResponseWriter of an in-process request.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}
