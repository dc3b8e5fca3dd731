package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// Handler is what the agent implements to serve the plugin. Each method gets
// a request that has passed Request.Validate for its command.
//
// Errors: return a *types.Error (possibly wrapped) to choose the code, msg
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
	Add(ctx context.Context, req *Request) (*types100.Result, error)
	// Del releases the attachment. It succeeds when there is nothing to
	// release, and works without the Pod object and without Netns.
	Del(ctx context.Context, req *Request) error
	// Check reports an error when the attachment in req.PrevResult is not
	// realised as the agent's document says it should be.
	Check(ctx context.Context, req *Request) error
	// GC releases every attachment on req.NetConf.Name that is not in
	// req.ValidAttachments.
	GC(ctx context.Context, req *Request) error
	// Status returns nil when the agent can serve ADD now, or an error with
	// code 50 or 51 saying why not.
	Status(ctx context.Context, req *Request) error
}

// NewHTTPHandler serves Handler under PathPrefix: it decodes and validates
// each request, calls the method for its command, and writes the Response.
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
	WriteResult(w, req.Command, res)
}

// call runs the Handler method for req.Command, turning a panic into an error.
func (s *httpHandler) call(ctx context.Context, req *Request) (res *types100.Result, err error) {
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
	case CmdAdd:
		res, err = s.h.Add(ctx, req)
		if err == nil && res == nil {
			err = types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: ADD for container %q returned no result", req.ContainerID), "")
		}
		return res, err
	case CmdDel:
		return nil, s.h.Del(ctx, req)
	case CmdCheck:
		return nil, s.h.Check(ctx, req)
	case CmdGC:
		return nil, s.h.GC(ctx, req)
	case CmdStatus:
		return nil, s.h.Status(ctx, req)
	}
	return nil, types.NewError(types.ErrInternal, fmt.Sprintf("terway agent: command %q has no handler", req.Command), "")
}

// DecodeRequest reads and validates the Request of an HTTP call made by
// Client: method POST, path PathPrefix + command, a JSON body no larger than
// MaxMessageBytes whose command (if set) matches the path. Unknown JSON
// fields are ignored so that a newer plugin can talk to an older agent.
// The error is the CNI error to send back.
func DecodeRequest(r *http.Request) (*Request, *types.Error) {
	if r.Method != http.MethodPost {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway agent: %s %s: only POST is served", r.Method, r.URL.Path), "")
	}
	name, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	cmd := Command(strings.ToUpper(name))
	if !ok || !cmd.Valid() {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway agent: path %q names no command; want %s followed by one of %v", r.URL.Path, PathPrefix, Commands), "")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxMessageBytes+1))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure,
			fmt.Sprintf("terway agent: %s: reading request body: %v", cmd, err), "")
	}
	if len(body) > MaxMessageBytes {
		return nil, types.NewError(types.ErrDecodingFailure,
			fmt.Sprintf("terway agent: %s: request body is larger than %d bytes", cmd, MaxMessageBytes), "")
	}
	req := &Request{}
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

// WriteResult writes a successful Response: the result for ADD (normalised
// to ResultVersion), an empty object for the other commands.
func WriteResult(w http.ResponseWriter, cmd Command, res *types100.Result) {
	resp := Response{}
	if cmd == CmdAdd && res != nil {
		r, err := toResultVersion(res)
		if err != nil {
			WriteError(w, types.NewError(types.ErrInternal,
				fmt.Sprintf("terway agent: ADD result cannot be expressed as CNI %s", ResultVersion), err.Error()))
			return
		}
		resp.Result = r
	}
	writeJSON(w, http.StatusOK, &resp)
}

// WriteError writes err as a Response with a CNI error: a *types.Error found
// with errors.As is sent unchanged, anything else as code 999 with its text.
func WriteError(w http.ResponseWriter, err error) {
	ce := AsCNIError(err)
	writeJSON(w, HTTPStatus(ce.Code), &Response{Error: ce})
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
		b, _ = json.Marshal(&Response{Error: types.NewError(types.ErrInternal,
			"terway agent: encoding the response failed", err.Error())})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// toResultVersion converts a 1.0.0 or 1.1.0 result to ResultVersion; an
// empty version is taken to be ResultVersion.
func toResultVersion(res *types100.Result) (*types100.Result, error) {
	if res.CNIVersion == "" {
		c := *res
		c.CNIVersion = ResultVersion
		return &c, nil
	}
	return types100.NewResultFromResult(res)
}
