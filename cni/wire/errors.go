package wire

import "fmt"

// Error is a CNI error as the spec prints it: a code, a message and
// details. The agent answers with one; the plugin prints it. It is this
// package's own type, not the CNI library's, so that the plugin binary
// does not link the library (its start-up is part of every pod's start);
// the JSON is the same, and the agent converts (cni/server).
type Error struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

// The error codes of the CNI spec that the plugin and the agent use.
const (
	ErrIncompatibleCNIVersion      uint = 1
	ErrUnsupportedField            uint = 2
	ErrUnknownContainer            uint = 3
	ErrInvalidEnvironmentVariables uint = 4
	ErrIOFailure                   uint = 5
	ErrDecodingFailure             uint = 6
	ErrInvalidNetworkConfig        uint = 7
	ErrInvalidNetNS                uint = 8
	ErrTryAgainLater               uint = 11
	ErrPluginNotAvailable          uint = 50
	ErrLimitedConnectivity         uint = 51
	ErrInternal                    uint = 999
)

// NewError returns a CNI error.
func NewError(code uint, msg, details string) *Error {
	return &Error{Code: code, Msg: msg, Details: details}
}

// Error is "msg; details", or msg alone.
func (e *Error) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s; %s", e.Msg, e.Details)
}
