package emulator

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
	"time"
)

// The RPC signature (SignatureVersion 1.0, HMAC-SHA1), re-derived from the
// documented algorithm: sorted, percent-encoded parameters (RFC 3986 style:
// space as %20, * as %2A, ~ literal), joined as METHOD&%2F&<encoded query>,
// signed with the secret plus "&".

// percentEncode is the cloud's flavour of URL encoding.
func percentEncode(s string) string {
	e := url.QueryEscape(s)
	e = strings.ReplaceAll(e, "+", "%20")
	e = strings.ReplaceAll(e, "*", "%2A")
	return strings.ReplaceAll(e, "%7E", "~")
}

// StringToSign returns the string the client signed for these parameters.
// Signature itself is left out; parameters with empty values are kept (the
// SDK always sends and signs an empty SignatureType).
func StringToSign(method string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		if k != "Signature" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = percentEncode(k) + "=" + percentEncode(params[k])
	}
	return strings.ToUpper(method) + "&%2F&" + percentEncode(strings.Join(parts, "&"))
}

// Sign returns the base64 HMAC-SHA1 of stringToSign keyed with secret+"&".
func Sign(stringToSign, secret string) string {
	m := hmac.New(sha1.New, []byte(secret+"&"))
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// stsPrefix starts every temporary AccessKeyId, as in the cloud.
const stsPrefix = "STS."

// stsCredential is a temporary credential the metadata service issued for
// the RAM role; calls signed with it must carry its SecurityToken.
type stsCredential struct {
	Secret  string
	Token   string
	Expires time.Time
	Issued  time.Time
}

// nonceWindow is how long a SignatureNonce is remembered: the cloud refuses
// a replayed nonce, and requests older than this are refused by timestamp anyway.
const nonceWindow = 15 * time.Minute

// timestampSkew is how far a request's Timestamp may be from the emulator's
// clock. The cloud allows 15 minutes; the emulator is generous because tests
// may fake or stall clocks, and it only guards against garbage.
const timestampSkew = 24 * time.Hour

// authenticate checks the common parameters, the credential and the
// signature of a request. It runs under the emulator's lock (it reads the
// STS credentials and records the nonce).
func (e *Emulator) authenticate(method string, p map[string]string, now time.Time) *apiError {
	for _, k := range []string{"AccessKeyId", "SignatureNonce", "Timestamp"} {
		if p[k] == "" {
			return missing(k)
		}
	}
	if p["Signature"] == "" {
		return errf(codeIncompleteSignature, "The request signature does not conform to Aliyun standards: parameter \"Signature\" is missing.")
	}
	if m := p["SignatureMethod"]; m != "HMAC-SHA1" {
		return errf(codeIncompleteSignature, "The request signature does not conform to Aliyun standards: SignatureMethod %q is not supported (HMAC-SHA1 is).", m)
	}
	if v := p["SignatureVersion"]; v != "1.0" {
		return errf(codeIncompleteSignature, "The request signature does not conform to Aliyun standards: SignatureVersion %q is not supported (1.0 is).", v)
	}
	ts, err := time.Parse("2006-01-02T15:04:05Z", p["Timestamp"])
	if err != nil {
		return errf(codeIllegalTimestamp, "The input parameter \"Timestamp\" (%q) is not in the format yyyy-MM-ddTHH:mm:ssZ (UTC).", p["Timestamp"])
	}
	if d := now.Sub(ts); d > timestampSkew || d < -timestampSkew {
		return errf(codeIllegalTimestamp, "The input parameter \"Timestamp\" (%s) is more than %s away from the server time %s.", p["Timestamp"], timestampSkew, now.UTC().Format(time.RFC3339))
	}

	ak := p["AccessKeyId"]
	secret := ""
	if strings.HasPrefix(ak, stsPrefix) {
		c, ok := e.sts[ak]
		if !ok {
			return errf(codeAccessKeyNotFound, "Specified access key is not found: %s.", ak)
		}
		if p["SecurityToken"] == "" {
			return missing("SecurityToken")
		}
		if p["SecurityToken"] != c.Token {
			return errf(codeSecurityTokenMismatch, "The SecurityToken does not belong to the temporary access key %s.", ak)
		}
		if now.After(c.Expires) {
			return errf(codeSecurityTokenExpired, "The SecurityToken of %s expired at %s.", ak, c.Expires.UTC().Format(time.RFC3339))
		}
		secret = c.Secret
	} else {
		s, ok := e.keys[ak]
		if !ok {
			return errf(codeAccessKeyNotFound, "Specified access key is not found: %s.", ak)
		}
		secret = s
	}

	sts := StringToSign(method, p)
	if !hmac.Equal([]byte(Sign(sts, secret)), []byte(p["Signature"])) {
		// The cloud echoes its string to sign; the SDK compares it with its
		// own to tell a wrong secret from a wrongly built request.
		return errf(codeSignatureMismatch, "Specified signature is not matched with our calculation. server string to sign is:%s", sts)
	}

	// Only a correctly signed request burns its nonce, so a forged request
	// cannot block a legitimate one.
	if now.Sub(e.noncesPruned) > time.Minute {
		for n, at := range e.nonces {
			if now.Sub(at) > nonceWindow {
				delete(e.nonces, n)
			}
		}
		e.noncesPruned = now
	}
	key := ak + "/" + p["SignatureNonce"]
	if _, used := e.nonces[key]; used {
		return errf(codeNonceUsed, "Specified signature nonce %q was used already.", p["SignatureNonce"])
	}
	e.nonces[key] = now
	return nil
}
