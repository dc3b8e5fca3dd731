package eni

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
)

func TestToAPIError(t *testing.T) {
	server := func(status int, body string) error { return sdkerrors.NewServerError(status, body, "") }
	signed := "http://127.0.0.1:1/?AccessKeyId=LTAIkey&SecurityToken=sts-secret&Signature=abc"
	tests := []struct {
		name      string
		err       error
		code      string
		retry     bool
		noAnswer  bool
		forbidden []string
	}{
		{
			name: "throttling", code: "Throttling", retry: true,
			err: server(400, `{"Code":"Throttling","Message":"Request was denied due to request throttling.","RequestId":"r1"}`),
		},
		{
			name: "internal error", code: "InternalError", retry: true,
			err: server(500, `{"Code":"InternalError","Message":"oops","RequestId":"r2"}`),
		},
		{
			name: "exhausted vswitch", code: codeIPNotEnough,
			err: server(403, `{"Code":"InvalidVSwitchId.IpNotEnough","Message":"no ip","RequestId":"r3"}`),
		},
		{
			name: "bad signature: the echoed string to sign is dropped", code: "SignatureDoesNotMatch",
			err:       server(400, `{"Code":"SignatureDoesNotMatch","Message":"server string to sign is:POST&%2F&AccessKeyId%3DLTAIkey%26SecurityToken%3Dsts-secret","RequestId":"r4"}`),
			forbidden: []string{"sts-secret", "LTAIkey"},
		},
		{
			name: "lost answer: the signed URL is dropped", retry: true, noAnswer: true,
			err:       &url.Error{Op: "Post", URL: signed, Err: errors.New("EOF")},
			forbidden: []string{"sts-secret", "LTAIkey", "Signature"},
		},
		{
			name: "SDK timeout wrapping a URL error", code: sdkerrors.TimeoutErrorCode, retry: true, noAnswer: true,
			err:       sdkerrors.NewClientError(sdkerrors.TimeoutErrorCode, "timeout", &url.Error{Op: "Post", URL: signed, Err: errors.New("deadline")}),
			forbidden: []string{"sts-secret", "LTAIkey"},
		},
		{
			name: "not the cloud's JSON from a gateway", code: "HTTP502", retry: true, noAnswer: true,
			err: server(502, `<html>bad gateway</html>`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := toAPIError(actionAssign, tt.err)
			if e.Code != tt.code || retryable(e) != tt.retry || e.NoAnswer != tt.noAnswer {
				t.Fatalf("code %q retry %v noAnswer %v: %v", e.Code, retryable(e), e.NoAnswer, e)
			}
			msg := e.Error()
			if !strings.HasPrefix(msg, actionAssign+": ") || strings.Contains(msg, "\n") {
				t.Fatalf("message %q: want one line starting with the action", msg)
			}
			for _, f := range tt.forbidden {
				if strings.Contains(msg, f) {
					t.Fatalf("message %q contains %q", msg, f)
				}
			}
		})
	}
}

func TestVSwitchExhaustedErrorNamesTheVSwitches(t *testing.T) {
	until := time.Date(2026, 1, 1, 12, 5, 0, 0, time.UTC)
	err := error(&VSwitchExhaustedError{VSwitches: []BlockedVSwitch{
		{ID: "vsw-a", Code: codeIPNotEnough, Until: until}, {ID: "vsw-b", Code: codeQuotaPrivateIP, Until: until}}})
	if !errors.Is(err, ErrVSwitchExhausted) {
		t.Fatal("not ErrVSwitchExhausted")
	}
	for _, want := range []string{"vswitch vsw-a has no free IP (InvalidVSwitchId.IpNotEnough)", "vsw-b", "12:05:00"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
}
