package emulator

import (
	"encoding/json"
)

// idempotent is a remembered successful response to a call with a
// ClientToken. The cloud returns the same result for the same token and
// parameters (no second ENI, no more IPs) and refuses the token with other
// parameters. Failed calls are not remembered: retrying them runs them again.
type idempotent struct {
	fingerprint string
	body        json.RawMessage
}

// replay returns the remembered response for the call's ClientToken, if any.
func (e *Emulator) replay(c *call) (json.RawMessage, *apiError, bool) {
	token := c.p.str("ClientToken")
	if token == "" {
		return nil, nil, false
	}
	if len(token) > 64 {
		return nil, invalid("ClientToken", token, "at most 64 ASCII characters"), true
	}
	prev, ok := e.tokens[c.action+"\x00"+token]
	if !ok {
		return nil, nil, false
	}
	if prev.fingerprint != c.p.fingerprint() {
		return nil, errf(codeIdempotentMismatch, "The ClientToken %q was used for a %s call with other parameters.", token, c.action), true
	}
	e.log.Debug("idempotent replay", "action", c.action, "clientToken", token)
	return prev.body, nil, true
}

// remember stores a successful response under the call's ClientToken and
// returns it as it will be sent.
func (e *Emulator) remember(c *call, resp any) (any, *apiError) {
	token := c.p.str("ClientToken")
	if token == "" {
		return resp, nil
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return nil, errf(codeInternalError, "The emulator could not encode the %s response: %v.", c.action, err)
	}
	e.tokens[c.action+"\x00"+token] = idempotent{fingerprint: c.p.fingerprint(), body: body}
	return json.RawMessage(body), nil
}
