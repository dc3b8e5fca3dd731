package emulator

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// authCodes are the answers of a request refused for its credentials or
// signature.
var authCodes = map[string]bool{
	codeIncompleteSignature: true, codeSignatureMismatch: true, codeNonceUsed: true,
	codeIllegalTimestamp: true, codeAccessKeyNotFound: true,
	codeSecurityTokenExpired: true, codeSecurityTokenMismatch: true,
}

// FuzzServeAPI sends one RPC request through the emulator's handler: its
// parameters parsed from the query or the form body, then the signature
// check, then the action's own parameter parsing. With sign set the harness
// signs the parameters the way the SDK does, so the fuzzer reaches the
// actions. Properties: no panic; every answer is the cloud's JSON (an error
// has RequestId, Code, Message and the code's HTTP status); an unsigned
// request is never served; a signed one is never refused for its
// signature, a replay of it is refused for its nonce, and a changed
// signature is refused as a mismatch.
func FuzzServeAPI(f *testing.F) {
	for _, s := range []struct {
		post        bool
		query, body string
		sign        bool
	}{
		{false, "Action=DescribeInstanceTypes", "", true},
		{true, "Action=DescribeVSwitches&VpcId=vpc-emu0000000000000001", "", true},
		{true, "Action=CreateNetworkInterface&VSwitchId=vsw-emu000000000000000h&SecurityGroupId=sg-emu00000000000000001&ClientToken=t1&Tag.1.Key=k&Tag.1.Value=v", "", true},
		{true, "Action=AssignPrivateIpAddresses&NetworkInterfaceId=eni-x&SecondaryPrivateIpAddressCount=3", "", true},
		{true, "Action=UnassignPrivateIpAddresses&NetworkInterfaceId=eni-x&PrivateIpAddress.1=198.18.0.9&PrivateIpAddress.2=x", "", true},
		{true, "Action=DescribeNetworkInterfaces&PageSize=500&PageNumber=-1&NetworkInterfaceId.1=eni-a&Tag.2.Value=v", "", true},
		{true, "Action=AttachNetworkInterface&NetworkInterfaceId=eni-x&InstanceId=i-emu00000000000000001", "", true},
		{false, "Action=DescribeInstances&InstanceIds=%5B%22i-x%22%5D&Name=%2A%20~", "", true},
		{false, "Action=DescribeInstanceAttribute&InstanceId=i-emu00000000000000001", "", true},
		{false, "Action=DetachNetworkInterface&Version=1999-01-01", "", true},
		{false, "Action=Nope", "", true},
		{true, "", "Action=DescribeInstanceTypes&Version=2014-05-26&AccessKeyId=LTAIemulator00000001&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0&Timestamp=2026-01-01T00:00:00Z&SignatureNonce=n&Signature=abc", false},
		{false, "Action=DescribeInstanceTypes&Version=2014-05-26&AccessKeyId=STS.x&SignatureNonce=1&Timestamp=x&Signature=s&SignatureMethod=HMAC-SHA1&SignatureVersion=1.0", "", false},
		{false, "%zz", "", false}, {true, "a=1", "%zz;", false}, {false, "", "", false},
	} {
		f.Add(s.post, s.query, s.body, s.sign)
	}
	e, err := New(DefaultWorld())
	if err != nil {
		f.Fatal(err)
	}
	e.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.SetAsyncDelay(time.Millisecond, time.Millisecond, time.Millisecond)
	f.Cleanup(func() { _ = e.Close() })
	key := e.world.AccessKeys[0]
	nonce := 0
	f.Fuzz(func(t *testing.T, post bool, query, body string, sign bool) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		if !sign {
			code, _ := serveOnce(t, e, method, query, body)
			if code == "" {
				t.Fatalf("unsigned %s ?%s body %q was served", method, query, body)
			}
			return
		}
		values, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		if spec, ok := actions[values.Get("Action")]; ok && !values.Has("Version") {
			values.Set("Version", spec.version)
		}
		nonce++
		values.Set("AccessKeyId", key.ID)
		values.Set("SignatureMethod", "HMAC-SHA1")
		values.Set("SignatureVersion", "1.0")
		values.Set("Timestamp", time.Now().UTC().Format("2006-01-02T15:04:05Z"))
		values.Set("SignatureNonce", "fuzz-"+strconv.Itoa(nonce))
		values.Del("Signature")
		values.Del("SecurityToken")
		p := map[string]string{}
		for k, vs := range values {
			p[k] = vs[0]
		}
		values.Set("Signature", Sign(StringToSign(method, p), key.Secret))
		query, body = values.Encode(), ""
		if post {
			query, body = "", query
		}
		code, msg := serveOnce(t, e, method, query, body)
		if authCodes[code] {
			t.Fatalf("signed %s refused for its signature: %s: %s\nparams %q", method, code, msg, p)
		}
		if code == codeInvalidAction || code == codeInvalidVersion || code == codeMissingParameter && strings.Contains(msg, `"Action"`) {
			return // refused before the signature is read
		}
		if again, msg := serveOnce(t, e, method, query, body); again != codeNonceUsed {
			t.Fatalf("replayed signed %s: %s (%s), want %s", method, again, msg, codeNonceUsed)
		}
		forged := strings.Replace(query+body, "Signature=", "Signature=x", 1)
		if post {
			body = forged
		} else {
			query = forged
		}
		if got, msg := serveOnce(t, e, method, query, body); got != codeSignatureMismatch && got != codeIncompleteSignature {
			t.Fatalf("forged signature on %s: %s (%s), want %s", method, got, msg, codeSignatureMismatch)
		}
	})
}

// serveOnce runs one request through the handler and checks the answer is
// the cloud's JSON. It returns the error code, "" for a success.
func serveOnce(t *testing.T, e *Emulator, method, query, body string) (code, message string) {
	t.Helper()
	target := "/"
	if query != "" {
		target = "/?" + query
	}
	var r *http.Request
	func() {
		defer func() {
			if recover() != nil {
				r = nil // httptest refuses a target net/http would never deliver
			}
		}()
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	}()
	if r == nil {
		return "unparseable", ""
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	w := httptest.NewRecorder()
	e.serveAPI(w, r)
	var answer map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &answer); err != nil {
		t.Fatalf("%s ?%s body %q: answer %d is not JSON: %v\n%s", method, query, body, w.Code, err, w.Body.Bytes())
	}
	if w.Code == http.StatusOK {
		if _, isErr := answer["Code"]; isErr {
			t.Fatalf("HTTP 200 with an error body: %s", w.Body.Bytes())
		}
		return "", ""
	}
	code, _ = answer["Code"].(string)
	message, _ = answer["Message"].(string)
	if id, _ := answer["RequestId"].(string); code == "" || message == "" || id == "" {
		t.Fatalf("HTTP %d answer lacks RequestId, Code or Message: %s", w.Code, w.Body.Bytes())
	}
	if w.Code != statusOf(code) {
		t.Fatalf("code %s answered with HTTP %d, want %d", code, w.Code, statusOf(code))
	}
	return code, message
}
