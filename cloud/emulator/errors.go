package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is an error the emulated cloud answers with: an HTTP status and
// the cloud's error code. Every response with one is the cloud's JSON error
// body, so the SDK surfaces it as *errors.ServerError with ErrorCode() = Code.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// The cloud's error codes the emulator produces, with the HTTP status the
// cloud documents (or was observed to use) for each.
const (
	codeThrottling            = "Throttling"
	codeInternalError         = "InternalError"
	codeServiceUnavailable    = "ServiceUnavailable"
	codeIPNotEnough           = "InvalidVSwitchId.IpNotEnough"
	codeIPv4CountExceeded     = "InvalidOperation.Ipv4CountExceeded"
	codeENIPerInstanceLimit   = "EniPerInstanceLimitExceeded"
	codeMaxENICount           = "MaxEniCountExceeded"
	codeInvalidENIState       = "InvalidOperation.InvalidEniState"
	codeIncorrectInstance     = "IncorrectInstanceStatus"
	codeDetachPrimary         = "InvalidOperation.DetachPrimaryEniNotAllowed"
	codeZoneMismatch          = "InvalidOperation.AvailabilityZoneMismatch"
	codeENINotFound           = "InvalidEniId.NotFound"
	codeInstanceNotFound      = "InvalidInstanceId.NotFound"
	codeVSwitchNotFound       = "InvalidVSwitchId.NotFound"
	codeSGNotFound            = "InvalidSecurityGroupId.NotFound"
	codeIPInvalid             = "InvalidVSwitchId.IpInvalid"
	codeIPAssigned            = "InvalidIp.IpAssigned"
	codeIPUnassigned          = "InvalidIp.IpUnassigned"
	codeIdempotentMismatch    = "IdempotentParameterMismatch"
	codeMissingParameter      = "MissingParameter"
	codeInvalidParameter      = "InvalidParameter"
	codeInvalidAction         = "InvalidAction.NotFound"
	codeInvalidVersion        = "InvalidVersion"
	codeAccessKeyNotFound     = "InvalidAccessKeyId.NotFound"
	codeSignatureMismatch     = "SignatureDoesNotMatch"
	codeIncompleteSignature   = "IncompleteSignature"
	codeNonceUsed             = "SignatureNonceUsed"
	codeIllegalTimestamp      = "IllegalTimestamp"
	codeSecurityTokenExpired  = "InvalidSecurityToken.Expired"
	codeSecurityTokenMismatch = "InvalidSecurityToken.MismatchWithAccessKey"
)

// codeStatus is the HTTP status per code, used for injected faults too.
var codeStatus = map[string]int{
	codeThrottling:                   http.StatusBadRequest,
	"Throttling.User":                http.StatusTooManyRequests,
	"Throttling.Api":                 http.StatusBadRequest,
	codeServiceUnavailable:           http.StatusServiceUnavailable,
	codeInternalError:                http.StatusInternalServerError,
	"OperationConflict":              http.StatusConflict,
	"Operation.Conflict":             http.StatusForbidden,
	codeIPNotEnough:                  http.StatusForbidden,
	"QuotaExceeded.PrivateIpAddress": http.StatusBadRequest,
	codeIPv4CountExceeded:            http.StatusForbidden,
	codeENIPerInstanceLimit:          http.StatusForbidden,
	codeMaxENICount:                  http.StatusForbidden,
	codeInvalidENIState:              http.StatusBadRequest,
	codeIncorrectInstance:            http.StatusForbidden,
	codeDetachPrimary:                http.StatusBadRequest,
	codeZoneMismatch:                 http.StatusForbidden,
	codeENINotFound:                  http.StatusNotFound,
	codeInstanceNotFound:             http.StatusNotFound,
	"InvalidEcsId.NotFound":          http.StatusNotFound,
	codeVSwitchNotFound:              http.StatusNotFound,
	codeSGNotFound:                   http.StatusNotFound,
	codeIPInvalid:                    http.StatusForbidden,
	codeIPAssigned:                   http.StatusForbidden,
	codeIPUnassigned:                 http.StatusForbidden,
	codeIdempotentMismatch:           http.StatusBadRequest,
	codeMissingParameter:             http.StatusBadRequest,
	codeInvalidParameter:             http.StatusBadRequest,
	codeInvalidAction:                http.StatusNotFound,
	codeInvalidVersion:               http.StatusBadRequest,
	"Forbidden.RAM":                  http.StatusForbidden,
	codeAccessKeyNotFound:            http.StatusNotFound,
	codeSignatureMismatch:            http.StatusBadRequest,
	codeIncompleteSignature:          http.StatusBadRequest,
	codeNonceUsed:                    http.StatusBadRequest,
	codeIllegalTimestamp:             http.StatusBadRequest,
	codeSecurityTokenExpired:         http.StatusBadRequest,
	codeSecurityTokenMismatch:        http.StatusBadRequest,
}

// faultAliases lets a fault name a code by its short name ("IpNotEnough").
var faultAliases = map[string]string{
	"IpNotEnough":       codeIPNotEnough,
	"Ipv4CountExceeded": codeIPv4CountExceeded,
	"InvalidEniState":   codeInvalidENIState,
}

// statusOf returns the documented HTTP status of a code; codes the emulator
// does not know are client errors.
func statusOf(code string) int {
	if s, ok := codeStatus[code]; ok {
		return s
	}
	return http.StatusBadRequest
}

// errf builds an apiError with the code's documented status.
func errf(code, format string, args ...any) *apiError {
	return &apiError{Status: statusOf(code), Code: code, Message: fmt.Sprintf(format, args...)}
}

func missing(param string) *apiError {
	return errf(codeMissingParameter, "The input parameter %q that is mandatory for processing this request is not supplied.", param)
}

func invalid(param, value, why string) *apiError {
	return errf(codeInvalidParameter, "The specified parameter %q (%q) is not valid: %s.", param, value, why)
}

// errorBody is the cloud's error document. Every field is a string: the
// SDK type-asserts them to string and would panic on anything else.
type errorBody struct {
	RequestID string `json:"RequestId"`
	HostID    string `json:"HostId"`
	Code      string `json:"Code"`
	Message   string `json:"Message"`
	Recommend string `json:"Recommend"`
}

func writeError(w http.ResponseWriter, requestID, host string, e *apiError) {
	body, _ := json.Marshal(errorBody{
		RequestID: requestID,
		HostID:    host,
		Code:      e.Code,
		Message:   e.Message,
		Recommend: "https://api.aliyun.com/troubleshoot?q=" + e.Code,
	})
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Responses are plain structs; failing here is a bug in the emulator.
		http.Error(w, "emulator: encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json;charset=utf-8")
	_, _ = w.Write(body)
}
