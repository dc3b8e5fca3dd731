// Package server serves the wire protocol to the terway CNI plugin over
// HTTP on the agent's unix socket. It lives apart from package wire so that
// the plugin binary, which only needs the client, links neither net/http
// nor the CNI library: the conversions between CNI versions happen here.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/terway-reconciler/terway/cni/wire"
)

// Handler is what the agent implements to serve the plugin. Each method gets
// a request that has passed wire.Request.Validate for its command.
//
// Errors: return a *types.Error or *wire.Error (possibly wrapped) to choose the code, msg
// and details the runtime sees; any other error becomes code 999 with the
// error's text. Useful codes: 3 (container unknown: the runtime need not
// DEL), 7 (invalid config, e.g. a bad pod annotation), 11 (try again later:
// inputs not synced yet, IPs exhausted but being refilled), 50/51 (STATUS:
// not ready / not ready and running pods may suffer).
//
// The context is cancelled when the plugin goes away (its timeout expired
// or the runtime killed it). ADD should still finish persisting what it
// allocated, or roll it back, because the runtime will DEL or retry with the
// same container id; every method must be idempotent for that reason.
type Handler interface {
	// Add gives the attachment (ContainerID, IfName) its network and returns
	// the result. A repeated ADD for an attachment that already exists
	// returns the existing allocation rather than a second IP.
	Add(ctx context.Context, req *wire.Request) (*types100.Result, error)
	// Del releases the attachment. It succeeds when there is nothing to
	// release, and works without the Pod object and without Netns.
	Del(ctx context.Context, req *wire.Request) error
	// Check reports an error when the attachment in req.PrevResult is not
	// realised as the agent's document says it should be.
	Check(ctx context.Context, req *wire.Request) error
	// GC releases every attachment on req.NetConf.Name that is not in
	// req.ValidAttachments.
	GC(ctx context.Context, req *wire.Request) error
	// Status returns nil when the agent can serve ADD now, or an error with
	// code 50 or 51 saying why not.
	Status(ctx context.Context, req *wire.Request) error
}

// NewHTTPHandler serves Handler under wire.PathPrefix: it decodes and validates
// each request, calls the method for its command, and writes the wire.Response.
// A panic in the Handler is answered as code 999 and logged, so one bad pod
// never takes the socket down. log may be nil (slog.Default).
func NewHTTPHandler(h Handler, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return &httpHandler{h: h, log: log}
}

type httpHandler struct {
	h   Handler
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
	WriteResult(w, req, res)
}

// call runs the Handler method for req.Command, turning a panic into an error.
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
		return nil, fromWire(e)
	}
	if req.Command == wire.CmdAdd {
		// Refused before the handler sets anything up, not after.
		if _, err := (&types100.Result{CNIVersion: wire.ResultVersion}).GetAsVersion(req.CNIVersion); err != nil {
			return nil, types.NewError(types.ErrIncompatibleCNIVersion,
				fmt.Sprintf("terway agent: ADD: a result cannot be expressed as CNI %s", req.CNIVersion), err.Error())
		}
	}
	if e := normalisePrevResult(req); e != nil {
		return nil, e
	}
	return req, nil
}

// normalisePrevResult converts req.PrevResult, as the runtime wrote it in
// the config's version, to wire.ResultVersion. A broken one fails CHECK,
// which depends on it, and is dropped for DEL, which must do its best
// without it; other commands carry none.
func normalisePrevResult(req *wire.Request) *types.Error {
	if len(req.PrevResult) == 0 || string(req.PrevResult) == "null" || req.Command != wire.CmdCheck && req.Command != wire.CmdDel {
		req.PrevResult = nil
		return nil
	}
	data, err := prevResultIn(req.CNIVersion, req.PrevResult)
	switch {
	case err == nil:
		req.PrevResult = data
	case req.Command == wire.CmdCheck:
		return types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("terway network config: field \"prevResult\": %v", err), "")
	default:
		req.PrevResult = nil
	}
	return nil
}

// prevResultIn decodes a prevResult written in the version its own
// "cniVersion" names (confVersion when it names none) and returns it
// converted to wire.ResultVersion, as JSON.
func prevResultIn(confVersion string, raw json.RawMessage) (json.RawMessage, error) {
	pc := &types.PluginConf{CNIVersion: confVersion}
	if err := json.Unmarshal(raw, &pc.RawPrevResult); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if v, ok := pc.RawPrevResult["cniVersion"]; ok && v != nil {
		s, isString := v.(string)
		if !isString {
			return nil, fmt.Errorf("cniVersion %v is not a string", v)
		}
		if s != "" {
			pc.CNIVersion = s
		}
	}
	if err := version.ParsePrevResult(pc); err != nil {
		return nil, err
	}
	res, err := types100.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("converting from %s to %s: %w", pc.PrevResult.Version(), wire.ResultVersion, err)
	}
	// A result that does not survive JSON (an IP without an address
	// encodes as "<nil>") is broken here, not in the handler.
	data, err := json.Marshal(res)
	if err == nil {
		err = json.Unmarshal(data, new(types100.Result))
	}
	if err != nil {
		return nil, fmt.Errorf("not a usable result: %w", err)
	}
	return data, nil
}

// PrevResult returns the request's prevResult, which DecodeRequest has
// converted to wire.ResultVersion, or nil.
func PrevResult(req *wire.Request) (*types100.Result, error) {
	if len(req.PrevResult) == 0 {
		return nil, nil
	}
	res := &types100.Result{}
	if err := json.Unmarshal(req.PrevResult, res); err != nil {
		return nil, fmt.Errorf("prevResult: %w", err)
	}
	return res, nil
}

// WriteResult writes a successful wire.Response: for ADD the result in
// wire.ResultVersion and in the request's version, an empty object for the
// other commands.
func WriteResult(w http.ResponseWriter, req *wire.Request, res *types100.Result) {
	resp := wire.Response{}
	if req.Command == wire.CmdAdd && res != nil {
		var err error
		if resp.Result, resp.Output, err = encodeResult(res, req.CNIVersion); err != nil {
			WriteError(w, types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: the ADD result for container %q cannot be expressed as CNI %s", req.ContainerID, req.CNIVersion),
				err.Error()))
			return
		}
	}
	writeJSON(w, http.StatusOK, &resp)
}

// encodeResult encodes res in wire.ResultVersion and in version.
func encodeResult(res *types100.Result, version string) (result, output json.RawMessage, err error) {
	r := res
	if r.CNIVersion == "" {
		c := *res
		c.CNIVersion = wire.ResultVersion
		r = &c
	}
	if r, err = types100.NewResultFromResult(r); err != nil {
		return nil, nil, err
	}
	if result, err = json.Marshal(r); err != nil {
		return nil, nil, err
	}
	if version == "" || version == wire.ResultVersion {
		return result, result, nil
	}
	out, err := r.GetAsVersion(version)
	if err != nil {
		return nil, nil, err
	}
	output, err = json.Marshal(out)
	return result, output, err
}

// WriteError writes err as a wire.Response with a CNI error: a *types.Error
// or *wire.Error found with errors.As is sent unchanged, anything else as
// code 999 with its text.
func WriteError(w http.ResponseWriter, err error) {
	ce := AsCNIError(err)
	writeJSON(w, HTTPStatus(ce.Code), &wire.Response{Error: &wire.Error{Code: ce.Code, Msg: ce.Msg, Details: ce.Details}})
}

// AsCNIError returns the *types.Error or *wire.Error inside err, or wraps
// err's text in a code 999 error, so that every failure reaches the
// runtime with a code.
func AsCNIError(err error) *types.Error {
	var ce *types.Error
	if errors.As(err, &ce) {
		return ce
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return fromWire(we)
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// fromWire is the CNI library's form of a wire error.
func fromWire(e *wire.Error) *types.Error {
	return types.NewError(e.Code, e.Msg, e.Details)
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
		b, _ = json.Marshal(&wire.Response{Error: wire.NewError(wire.ErrInternal,
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
