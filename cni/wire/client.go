package wire

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Client sends requests to the agent over its unix socket. It is what the
// plugin uses; the agent's tests and tools may use it too. Safe for
// concurrent use.
type Client struct {
	// SocketPath is the agent's socket (DefaultSocketPath if empty).
	SocketPath string
	// Timeout bounds each call, dial included; zero means only the
	// caller's context bounds it.
	Timeout time.Duration
	// RoundTrip, when set, carries each request instead of the socket: it
	// takes the path and JSON body of the POST and returns the answer's
	// HTTP status and body. The agent sets it to run in-process an
	// invocation the forwarder sent it whole (package cni/forward).
	RoundTrip func(ctx context.Context, path string, body []byte) (status int, answer []byte, err error)
}

// NewClient returns a client for the agent at socketPath whose calls give up
// after timeout (zero: no bound beyond the context).
func NewClient(socketPath string, timeout time.Duration) *Client {
	return &Client{SocketPath: socketPath, Timeout: timeout}
}

// ErrorKind says how a call failed when the agent gave no CNI answer. The
// plugin turns every kind into a CNI error; the kind picks the code.
type ErrorKind int

// The ways a call can fail without an answer from the agent.
const (
	// Unreachable: nothing accepted the connection (no socket, connection
	// refused, permission denied). The agent is down or restarting.
	Unreachable ErrorKind = iota + 1
	// TimedOut: no complete answer before the deadline, or the caller's
	// context was cancelled.
	TimedOut
	// Broken: the connection was accepted and then broke before a whole
	// answer arrived (the agent crashed mid-call).
	Broken
	// Protocol: something answered, but not with a Response (a different
	// server on the socket, or an incompatible agent).
	Protocol
)

// String names the kind for messages.
func (k ErrorKind) String() string {
	switch k {
	case Unreachable:
		return "unreachable"
	case TimedOut:
		return "timed out"
	case Broken:
		return "connection broken"
	case Protocol:
		return "protocol error"
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// CallError is a failure to get an answer from the agent. A CNI error the
// agent answered with is returned as *Error instead, never as this.
type CallError struct {
	// Socket is the path that was dialled.
	Socket string
	// Command is the command that was sent.
	Command Command
	// Kind classifies the failure.
	Kind ErrorKind
	// Timeout is the client's bound, for the message (zero if none).
	Timeout time.Duration
	// Err is the underlying cause.
	Err error
}

// Error says what failed, naming the socket, the command and the cause.
func (e *CallError) Error() string {
	switch e.Kind {
	case Unreachable:
		return fmt.Sprintf("terway agent unreachable at %s (%s): %v", e.Socket, e.Command, e.Err)
	case TimedOut:
		if e.Timeout > 0 {
			return fmt.Sprintf("terway agent at %s did not answer %s within %s: %v", e.Socket, e.Command, e.Timeout, e.Err)
		}
		return fmt.Sprintf("terway agent at %s did not answer %s: %v", e.Socket, e.Command, e.Err)
	}
	return fmt.Sprintf("terway agent at %s: %s: %s: %v", e.Socket, e.Command, e.Kind, e.Err)
}

// Unwrap returns the cause.
func (e *CallError) Unwrap() error { return e.Err }

// dialError marks a failure to connect, so Call can tell "nobody there"
// from "went away mid-call".
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func (c *Client) socket() string {
	if c.SocketPath == "" {
		return DefaultSocketPath
	}
	return c.SocketPath
}

// Call sends req and waits for the agent's answer. It returns the answer
// of a success (for ADD, with its Result and, from an agent as new as this
// package, its Output), or the *Error the agent answered with, or a
// *CallError when no answer came.
func (c *Client) Call(ctx context.Context, req *Request) (*Response, error) {
	if !req.Command.Valid() {
		return nil, fmt.Errorf("terway client: request command %q is not one of %v", req.Command, Commands)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("terway client: encoding %s request: %w", req.Command, err)
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	status, data, err := c.roundTrip(ctx, req.Command.Path(), body)
	if err != nil {
		return nil, c.fail(ctx, req.Command, err)
	}
	return c.decode(req.Command, status, data)
}

// roundTrip sends one HTTP/1.1 POST over a fresh connection to the socket
// and reads the answer. It is written by hand rather than with net/http so
// that the plugin binary, started once per CNI call, does not link and
// initialise an HTTP stack with TLS and HTTP/2: that is a third of its
// start-up time. The agent's side is an ordinary net/http server.
func (c *Client) roundTrip(ctx context.Context, path string, body []byte) (int, []byte, error) {
	if c.RoundTrip != nil {
		return c.RoundTrip(ctx, path, body)
	}
	conn, err := dialAgent(ctx, c.socket())
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: terway\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", path, len(body))
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return 0, nil, fmt.Errorf("sending the request: %w", err)
	}
	return readAnswer(bufio.NewReaderSize(conn, 4096))
}

// readAnswer reads the agent's HTTP answer: status line, headers, and a
// body bounded by MaxMessageBytes (a larger one comes back oversized for
// decode to report).
func readAnswer(r *bufio.Reader) (int, []byte, error) {
	status, length, err := readHead(r)
	if err != nil {
		return 0, nil, err
	}
	var data []byte
	if length >= 0 {
		if length > MaxMessageBytes {
			return status, make([]byte, MaxMessageBytes+1), nil // decode reports the size
		}
		data = make([]byte, length)
		_, err = io.ReadFull(r, data)
	} else {
		// No Content-Length: the agent closes the connection after the body.
		data, err = io.ReadAll(io.LimitReader(r, MaxMessageBytes+1))
	}
	if err != nil {
		return 0, nil, fmt.Errorf("reading the answer: %w", err)
	}
	return status, data, nil
}

// readHead reads the status line and headers, returning the status code and
// the Content-Length (-1 when absent). A chunked body is refused: the agent
// always sends a length.
func readHead(r *bufio.Reader) (status, length int, err error) {
	line, err := readLine(r)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the answer: %w", err)
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, convErr := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || convErr != nil {
		return 0, 0, protocolError{fmt.Errorf("answer does not start with an HTTP/1.x status line: %q", snippet([]byte(line)))}
	}
	length = -1
	for n := 0; ; n++ {
		if n > 100 {
			return 0, 0, protocolError{errors.New("answer has more than 100 header lines")}
		}
		h, err := readLine(r)
		if err != nil {
			return 0, 0, fmt.Errorf("reading the answer's headers: %w", err)
		}
		if h == "" {
			return status, length, nil
		}
		name, value, _ := strings.Cut(h, ":")
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "content-length":
			if length, err = strconv.Atoi(value); err != nil || length < 0 {
				return 0, 0, protocolError{fmt.Errorf("bad Content-Length %q", value)}
			}
		case "transfer-encoding":
			if !strings.EqualFold(value, "identity") {
				return 0, 0, protocolError{fmt.Errorf("unsupported Transfer-Encoding %q", value)}
			}
		}
	}
}

func readLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// protocolError marks an answer that is not HTTP as the agent speaks it.
type protocolError struct{ err error }

func (e protocolError) Error() string { return e.err.Error() }
func (e protocolError) Unwrap() error { return e.err }

// decode turns an answer's status and body into the response or error.
func (c *Client) decode(cmd Command, status int, data []byte) (*Response, error) {
	protoErr := func(format string, args ...any) error {
		return &CallError{Socket: c.socket(), Command: cmd, Kind: Protocol, Timeout: c.Timeout, Err: fmt.Errorf(format, args...)}
	}
	if len(data) > MaxMessageBytes {
		return nil, protoErr("answer (HTTP %d) is larger than %d bytes", status, MaxMessageBytes)
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, protoErr("answer (HTTP %d) is not a terway response: %w; it begins %q", status, err, snippet(data))
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if status != 200 {
		return nil, protoErr("answer has HTTP status %d but no CNI error; it begins %q", status, snippet(data))
	}
	if cmd != CmdAdd {
		return &Response{}, nil
	}
	if !hasValue(r.Result) {
		return nil, protoErr("ADD answer has neither a result nor an error")
	}
	var v struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal(r.Result, &v); err != nil || v.CNIVersion == "" {
		return nil, protoErr("ADD answer's result is not a CNI result: it begins %q", snippet(r.Result))
	}
	return &r, nil
}

// fail classifies a transport failure.
func (c *Client) fail(ctx context.Context, cmd Command, err error) error {
	kind := Broken
	var de *dialError
	var pe protocolError
	switch {
	case ctx.Err() != nil:
		// The context's end shuts the connection down: what failed after
		// it failed because of it.
		kind = TimedOut
	case errors.As(err, &de):
		kind = Unreachable
		err = de.err
	case errors.As(err, &pe):
		kind = Protocol
	}
	return &CallError{Socket: c.socket(), Command: cmd, Kind: kind, Timeout: c.Timeout, Err: err}
}

// Add sends an ADD (setting req.Command on a copy) and returns the answer.
func (c *Client) Add(ctx context.Context, req *Request) (*Response, error) {
	return c.Call(ctx, withCommand(req, CmdAdd))
}

// Del sends a DEL.
func (c *Client) Del(ctx context.Context, req *Request) error {
	_, err := c.Call(ctx, withCommand(req, CmdDel))
	return err
}

// Check sends a CHECK.
func (c *Client) Check(ctx context.Context, req *Request) error {
	_, err := c.Call(ctx, withCommand(req, CmdCheck))
	return err
}

// GC sends a GC.
func (c *Client) GC(ctx context.Context, req *Request) error {
	_, err := c.Call(ctx, withCommand(req, CmdGC))
	return err
}

// Status sends a STATUS.
func (c *Client) Status(ctx context.Context, req *Request) error {
	_, err := c.Call(ctx, withCommand(req, CmdStatus))
	return err
}

func withCommand(req *Request, cmd Command) *Request {
	r := *req
	r.Command = cmd
	return &r
}

// snippet is the start of a body for an error message.
func snippet(b []byte) string {
	const n = 80
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
