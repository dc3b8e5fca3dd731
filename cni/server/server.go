// Package server serves the wire protocol to the terway CNI plugin over
// HTTP on the agent's unix socket. It lives apart from package wire so that
// the plugin binary, which only needs the client, does not link net/http.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/terway-reconciler/terway/cni/wire"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// NewHTTPHandler serves wire.Handler under wire.PathPrefix: it decodes and validates
// each request, calls the method for its command, and writes the wire.Response.
// A panic in the wire.Handler is answered as code 999 and logged, so one bad pod
// never takes the socket down. log may be nil (slog.Default).
func NewHTTPHandler(h wire.Handler, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return &httpHandler{h: h, log: log}
}

type httpHandler struct {
	h   wire.Handler
	log *slog.Logger
}

func (s *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, cerr := DecodeRequest(r)
	if cerr != nil {
		s.log.Warn("cni request refused", "path", r.URL.Path, "code", cerr.Code, "msg", cerr.Msg)
		WriteError(w, cerr)
		return
	}
	res, err := s.call(r.Context(), req)
	if err != nil {
		WriteError(w, err)
		return
	}
	WriteResult(w, req.Command, res)
}

// call runs the wire.Handler method for req.Command, turning a panic into an error.
func (s *httpHandler) call(ctx context.Context, req *wire.Request) (res *types100.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("cni handler panicked", "command", req.Command,
				"containerID", req.ContainerID, "pod", req.Args.Key(), "panic", fmt.Sprint(p))
			res, err = nil, types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: %s for container %q failed: internal error", req.Command, req.ContainerID),
				fmt.Sprint(p))
		}
	}()
	switch req.Command {
	case wire.CmdAdd:
		res, err = s.h.Add(ctx, req)
		if err == nil && res == nil {
			err = types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: ADD for container %q returned no result", req.ContainerID), "")
		}
		return res, err
	case wire.CmdDel:
		return nil, s.h.Del(ctx, req)
	case wire.CmdCheck:
		return nil, s.h.Check(ctx, req)
	case wire.CmdGC:
		return nil, s.h.GC(ctx, req)
	case wire.CmdStatus:
		return nil, s.h.Status(ctx, req)
	}
	return nil, types.NewError(types.ErrInternal, fmt.Sprintf("terway agent: command %q has no handler", req.Command), "")
}

// DecodeRequest reads and validates the wire.Request of an HTTP call made by
// Client: method POST, path wire.PathPrefix + command, a JSON body no larger than
// wire.MaxMessageBytes whose command (if set) matches the path. Unknown JSON
// fields are ignored so that a newer plugin can talk to an older agent.
// The error is the CNI error to send back.
func DecodeRequest(r *http.Request) (*wire.Request, *types.Error) {
	if r.Method != http.MethodPost {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway agent: %s %s: only POST is served", r.Method, r.URL.Path), "")
	}
	name, ok := strings.CutPrefix(r.URL.Path, wire.PathPrefix)
	cmd := wire.Command(strings.ToUpper(name))
	if !ok || !cmd.Valid() {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway agent: path %q names no command; want %s followed by one of %v", r.URL.Path, wire.PathPrefix, wire.Commands), "")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, wire.MaxMessageBytes+1))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure,
			fmt.Sprintf("terway agent: %s: reading request body: %v", cmd, err), "")
	}
	if len(body) > wire.MaxMessageBytes {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("terway agent: %s: request body is larger than %d bytes", cmd, wire.MaxMessageBytes), "")
	}
	req := &wire.Request{}
	if err := json.Unmarshal(body, req); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("terway agent: %s: request body is not a valid request: %v", cmd, err), "")
	}
	if req.Command == "" {
		req.Command = cmd
	}
	if req.Command != cmd {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway agent: request command %q does not match path %q", req.Command, r.URL.Path), "")
	}
	if e := req.Validate(); e != nil {
		return nil, e
	}
	return req, nil
}

// WriteResult writes a successful wire.Response: the result for ADD (normalised
// to wire.ResultVersion), an empty object for the other commands.
func WriteResult(w http.ResponseWriter, cmd wire.Command, res *types100.Result) {
	resp := wire.Response{}
	if cmd == wire.CmdAdd && res != nil {
		r, err := wire.ToResultVersion(res)
		if err != nil {
			WriteError(w, types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: ADD result cannot be expressed as CNI %s", wire.ResultVersion), err.Error()))
			return
		}
		resp.Result = r
	}
	writeJSON(w, http.StatusOK, &resp)
}

// WriteError writes err as a wire.Response with a CNI error: a *types.Error found
// with errors.As is sent unchanged, anything else as code 999 with its text.
func WriteError(w http.ResponseWriter, err error) {
	ce := AsCNIError(err)
	writeJSON(w, HTTPStatus(ce.Code), &wire.Response{Error: ce})
}

// AsCNIError returns the *types.Error inside err, or wraps err's text in a
// code 999 error, so that every failure reaches the runtime with a code.
func AsCNIError(err error) *types.Error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// HTTPStatus is the HTTP status that mirrors a CNI error code.
func HTTPStatus(code uint) int {
	switch code {
	case types.ErrIncompatibleCNIVersion, types.ErrUnsupportedField, types.ErrInvalidEnvironmentVariables,
		types.ErrDecodingFailure, types.ErrInvalidNetworkConfig, types.ErrInvalidNetNS:
		return http.StatusBadRequest
	case types.ErrUnknownContainer:
		return http.StatusNotFound
	case types.ErrTryAgainLater, types.ErrPluginNotAvailable, types.ErrLimitedConnectivity:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(&wire.Response{Error: types.NewError(types.ErrInternal,
			"terway agent: encoding the response failed", err.Error())})
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	// An explicit length keeps net/http from chunking a large answer (a
	// CHECK error that lists a long plan): the plugin's client reads
	// length-delimited bodies only.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
