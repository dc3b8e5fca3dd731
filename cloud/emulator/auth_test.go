package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

// The documentation's DescribeRegions example, signed with "testsecret".
//
// The facts file gives the vector as a string to sign whose inner "&" are
// literal, with signature VyBL52idtt+oImX0NZC+2ngk15Q=: that is the right
// HMAC of that string, so it checks Sign. But the SDK percent-encodes the
// whole canonical query, "&" included (%26), which is what StringToSign
// does; TestSignatureRejected proves byte equality with the SDK's own
// string (the SDK says so in its Recommend).
func TestSignatureKnownAnswer(t *testing.T) {
	const factsSTS = "GET&%2F&AccessKeyId%3Dtestid&Action%3DDescribeRegions&Format%3DXML&SignatureMethod%3DHMAC-SHA1&SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion%3D1.0&Timestamp%3D2016-02-23T12%253A46%253A24Z&Version%3D2014-05-26"
	if got := Sign(factsSTS, "testsecret"); got != "VyBL52idtt+oImX0NZC+2ngk15Q=" {
		t.Errorf("Sign(known answer): got %s, want VyBL52idtt+oImX0NZC+2ngk15Q=", got)
	}

	p := map[string]string{
		"AccessKeyId":      "testid",
		"Action":           "DescribeRegions",
		"Format":           "XML",
		"SignatureMethod":  "HMAC-SHA1",
		"SignatureNonce":   "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
		"SignatureVersion": "1.0",
		"Timestamp":        "2016-02-23T12:46:24Z",
		"Version":          "2014-05-26",
		"Signature":        "not signed",
	}
	const wantSTS = "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
	sts := StringToSign("GET", p)
	if sts != wantSTS {
		t.Fatalf("StringToSign:\n got %s\nwant %s", sts, wantSTS)
	}
	if got := Sign(sts, "testsecret"); got != "OLeaidS1JvxuMvnyHOwuJ+uX5qY=" {
		t.Errorf("Sign: got %s, want OLeaidS1JvxuMvnyHOwuJ+uX5qY=", got)
	}
	// Characters the cloud encodes its own way: space, *, ~.
	if got := percentEncode("a b*c~d"); got != "a%20b%2Ac~d" {
		t.Errorf("percentEncode: got %s", got)
	}
}

func TestSignatureRejected(t *testing.T) {
	v := start(t, nil)
	req := func() *ecs.DescribeInstanceAttributeRequest {
		r := ecs.CreateDescribeInstanceAttributeRequest()
		r.InstanceId = v.info.InstanceID
		return r
	}

	_, err := ecsClient(t, v.info, "LTAIunknown", "whatever").DescribeInstanceAttribute(req())
	wantCode(t, err, "InvalidAccessKeyId.NotFound", 404)

	_, err = ecsClient(t, v.info, v.info.AccessKeyID, "wrong-secret").DescribeInstanceAttribute(req())
	wantCode(t, err, "SignatureDoesNotMatch", 400)
	// The SDK compares the string to sign the server echoes with its own:
	// equal strings mean only the secret is wrong, so the emulator builds
	// the string exactly as the SDK does.
	var se *sdkerrors.ServerError
	if errors.As(err, &se); !strings.HasPrefix(se.Recommend(), "InvalidAccessKeySecret") {
		t.Errorf("SDK recommendation: %q (the server's string to sign differs from the SDK's)", se.Recommend())
	}

	_, err = v.ecs.DescribeInstanceAttribute(req())
	must(t, err)
	if got := v.e.Calls()["DescribeInstanceAttribute"]; got != 3 {
		t.Errorf("Calls: want 3 DescribeInstanceAttribute, got %d", got)
	}
}

// rawCall sends a hand-signed request and returns status and error code.
func rawCall(t *testing.T, v *env, method string, p map[string]string, sign bool) (int, string) {
	t.Helper()
	if sign {
		p["Signature"] = Sign(StringToSign(method, p), v.info.AccessKeySecret)
	}
	q := url.Values{}
	for k, val := range p {
		q.Set(k, val)
	}
	r, err := http.NewRequest(method, "http://"+v.info.Endpoint+"/?"+q.Encode(), nil)
	must(t, err)
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(r)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var eb struct{ Code string }
	_ = json.Unmarshal(body, &eb)
	return resp.StatusCode, eb.Code
}

func baseParams(v *env, nonce string) map[string]string {
	return map[string]string{
		"Action": "DescribeInstanceAttribute", "Version": "2014-05-26", "Format": "JSON",
		"AccessKeyId": v.info.AccessKeyID, "SignatureMethod": "HMAC-SHA1", "SignatureVersion": "1.0",
		"SignatureType": "", "SignatureNonce": nonce, "Timestamp": time.Now().UTC().Format("2006-01-02T15:04:05Z"),
		"RegionId": v.info.RegionID, "InstanceId": v.info.InstanceID,
	}
}

func TestProtocolChecks(t *testing.T) {
	v := start(t, nil)
	for _, tc := range []struct {
		name   string
		method string
		edit   func(p map[string]string)
		sign   bool
		status int
		code   string
	}{
		{"GET works like POST", "GET", nil, true, 200, ""},
		{"replayed nonce", "POST", func(p map[string]string) { p["SignatureNonce"] = "nonce-1" }, true, 400, "SignatureNonceUsed"},
		{"no signature", "POST", nil, false, 400, "IncompleteSignature"},
		{"bad timestamp", "POST", func(p map[string]string) { p["Timestamp"] = "yesterday" }, true, 400, "IllegalTimestamp"},
		{"stale timestamp", "POST", func(p map[string]string) { p["Timestamp"] = "2016-02-23T12:46:24Z" }, true, 400, "IllegalTimestamp"},
		{"wrong method signed", "POST", func(p map[string]string) { p["Signature"] = Sign(StringToSign("GET", p), v.info.AccessKeySecret) }, false, 400, "SignatureDoesNotMatch"},
		{"unsupported method", "POST", func(p map[string]string) { p["SignatureMethod"] = "HMAC-SHA256" }, true, 400, "IncompleteSignature"},
		{"unknown action", "POST", func(p map[string]string) { p["Action"] = "RunInstances" }, true, 404, "InvalidAction.NotFound"},
		{"wrong version", "POST", func(p map[string]string) { p["Version"] = "2016-04-28" }, true, 400, "InvalidVersion"},
		{"no access key", "POST", func(p map[string]string) { delete(p, "AccessKeyId") }, true, 400, "MissingParameter"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := baseParams(v, "n-"+strings.ReplaceAll(tc.name, " ", "-"))
			if tc.name == "replayed nonce" {
				q := baseParams(v, "nonce-1")
				if status, c := rawCall(t, v, "POST", q, true); status != 200 {
					t.Fatalf("first use of the nonce: %d %s", status, c)
				}
			}
			if tc.edit != nil {
				tc.edit(p)
			}
			status, c := rawCall(t, v, tc.method, p, tc.sign)
			if status != tc.status || c != tc.code {
				t.Errorf("got %d %q, want %d %q", status, c, tc.status, tc.code)
			}
		})
	}
}

func TestStartLoopbackOnly(t *testing.T) {
	e, err := New(DefaultWorld())
	must(t, err)
	defer e.Close()
	for _, addr := range []string{"0.0.0.0:0", ":0", "localhost:0", "[::1]:0"} {
		if err := e.Start(addr, ""); err == nil {
			t.Errorf("Start(%q) was accepted; only 127.0.0.1 is allowed", addr)
		}
	}
	if err := e.Start("127.0.0.1:0", "0.0.0.0:0"); err == nil {
		t.Errorf("metadata on 0.0.0.0 was accepted")
	}
}
