package eni

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

// ErrNotStarted is returned by calls that need the view of the cloud and
// the restored holdings, before Start has finished.
var ErrNotStarted = errors.New("ENI reconciler not started: the ENIs and held IPs are not known yet")

// ErrNoCapacity is wrapped by errors that say the instance type's limits
// leave no room for another IP or ENI.
var ErrNoCapacity = errors.New("no capacity left on the instance")

// ErrVSwitchExhausted is wrapped by VSwitchExhaustedError.
var ErrVSwitchExhausted = errors.New("vswitch has no free IP")

// VSwitchExhaustedError says which vswitches have no IP left, so that the
// operator knows which one to widen or add.
type VSwitchExhaustedError struct {
	// VSwitches are the vswitches tried, each with the cloud's code and
	// the time it will be tried again.
	VSwitches []BlockedVSwitch
}

// Error names each vswitch, the cloud's code and when it is tried again.
func (e *VSwitchExhaustedError) Error() string {
	if len(e.VSwitches) == 0 {
		return "no configured vswitch has a free IP"
	}
	parts := make([]string, 0, len(e.VSwitches))
	for _, v := range e.VSwitches {
		parts = append(parts, fmt.Sprintf("vswitch %s has no free IP (%s), skipped until %s", v.ID, v.Code, v.Until.Format(time.TimeOnly)))
	}
	return strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrVSwitchExhausted) work.
func (e *VSwitchExhaustedError) Unwrap() error { return ErrVSwitchExhausted }

// APIError is a failed API call, reduced to what is safe and useful to
// log: the SDK's own errors carry response headers and, for transport
// failures, the signed URL with the access key id and security token.
type APIError struct {
	Action string
	// Code is the cloud's error code ("Throttling"), an SDK client code
	// ("SDK.TimeoutError"), or empty when no answer came back.
	Code       string
	HTTPStatus int
	RequestID  string
	Message    string
	// NoAnswer is set when the call may have been carried out but its
	// answer was lost (connection reset, timeout, unreadable answer).
	NoAnswer bool
	cause    error
}

// Error is one line: action, code, HTTP status and request id, message.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString(e.Action)
	b.WriteString(": ")
	switch {
	case e.NoAnswer && e.Code == "":
		b.WriteString("no answer")
	default:
		b.WriteString(e.Code)
	}
	if e.HTTPStatus != 0 || e.RequestID != "" {
		fmt.Fprintf(&b, " (HTTP %d, request %s)", e.HTTPStatus, e.RequestID)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.cause != nil {
		b.WriteString(": ")
		b.WriteString(e.cause.Error())
	}
	return b.String()
}

// Unwrap gives the transport error, if any (never the SDK's error).
func (e *APIError) Unwrap() error { return e.cause }

// maxMessage bounds the cloud's message in our errors.
const maxMessage = 300

// toAPIError reduces an SDK error. Messages of authentication errors are
// dropped: the cloud echoes the string it signed, which holds the access
// key id and the security token.
func toAPIError(action string, err error) *APIError {
	e := &APIError{Action: action}
	var server *sdkerrors.ServerError
	var client *sdkerrors.ClientError
	switch {
	case errors.As(err, &server):
		e.Code, e.HTTPStatus, e.RequestID = server.ErrorCode(), server.HttpStatus(), server.RequestId()
		if !sensitiveCode(e.Code) {
			e.Message = trim(server.Message())
		}
		if e.Code == "" {
			// Not the cloud's JSON: a proxy or a broken answer.
			e.Code = fmt.Sprintf("HTTP%d", e.HTTPStatus)
			e.NoAnswer = e.HTTPStatus >= 500
		}
	case errors.As(err, &client):
		e.Code = client.ErrorCode()
		switch e.Code {
		case sdkerrors.TimeoutErrorCode, sdkerrors.JsonUnmarshalErrorCode:
			e.NoAnswer = true
		default:
			e.Message = trim(client.Message())
		}
		if origin := client.OriginError(); origin != nil {
			e.cause = stripURL(origin)
			if _, ok := origin.(*url.Error); ok {
				e.NoAnswer = true
			}
		}
	default:
		var u *url.Error
		if errors.As(err, &u) {
			e.NoAnswer = true
		}
		e.cause = stripURL(err)
	}
	return e
}

// stripURL drops the request URL (signed, with credentials in its query)
// from a transport error.
func stripURL(err error) error {
	var u *url.Error
	if errors.As(err, &u) {
		return fmt.Errorf("%s %s: %w", u.Op, hostOnly(u.URL), u.Err)
	}
	return err
}

func hostOnly(raw string) string {
	p, err := url.Parse(raw)
	if err != nil {
		return "(endpoint)"
	}
	return p.Scheme + "://" + p.Host + "/"
}

func sensitiveCode(code string) bool {
	for _, p := range []string{"Signature", "IncompleteSignature", "InvalidAccessKey", "InvalidSecurityToken", "Forbidden.AccessKey"} {
		if strings.HasPrefix(code, p) {
			return true
		}
	}
	return false
}

func trim(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxMessage {
		s = s[:maxMessage] + "..."
	}
	return s
}

// codeOf returns the cloud's error code of err, or "".
func codeOf(err error) string {
	var e *APIError
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Error codes the reconciler acts on.
const (
	codeIPNotEnough       = "InvalidVSwitchId.IpNotEnough"
	codeQuotaPrivateIP    = "QuotaExceeded.PrivateIpAddress"
	codeENINotFound       = "InvalidEniId.NotFound"
	codeInvalidENIState   = "InvalidOperation.InvalidEniState"
	codeIPUnassigned      = "InvalidIp.IpUnassigned"
	codeIPv4CountExceeded = "InvalidOperation.Ipv4CountExceeded"
	codeENIPerInstance    = "EniPerInstanceLimitExceeded"
)

// isThrottled reports the cloud's rate limiting.
func isThrottled(code string) bool {
	return strings.HasPrefix(code, "Throttling") || code == "RequestLimitExceeded"
}

// retryable reports an error worth the same call again: throttling, the
// cloud's transient failures, a concurrent operation on the same ENI, and
// lost answers (every write we make is safe to repeat: ClientTokens on
// create and assign, "already done" codes on the others).
func retryable(err error) bool {
	var e *APIError
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.NoAnswer, isThrottled(e.Code), e.HTTPStatus >= 500:
		return true
	}
	switch e.Code {
	case "InternalError", "ServiceUnavailable", "UnknownError", "OperationConflict", "Operation.Conflict",
		"LastTokenProcessing", "IdempotentProcessing", "InvalidOperation.Conflict":
		return true
	}
	return strings.HasPrefix(e.Code, "InternalError")
}

// vswitchExhausted reports the codes that mean the vswitch has no IP left.
func vswitchExhausted(code string) bool {
	return code == codeIPNotEnough || code == codeQuotaPrivateIP
}
