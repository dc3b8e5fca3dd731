package emulator

import (
	"time"
)

// Fault makes calls of an action misbehave the way the cloud does:
//   - Latency delays every call (before it runs);
//   - with probability Rate the call fails with Code, without effect;
//   - with probability DropRate the call takes effect and then its response
//     is lost (the connection is reset), so the client cannot know.
//
// Code is a cloud error code ("Throttling", "InternalError",
// "ServiceUnavailable", "InvalidVSwitchId.IpNotEnough" or its short name
// "IpNotEnough", ...); its HTTP status is the cloud's for that code unless
// HTTPStatus is set. SecondCode fails another share (SecondRate) of the
// calls, so one action can see, say, Throttling and InternalError at once.
// Times, when positive, limits how many calls the fault fails or drops;
// then it is spent (latency stops too).
type Fault struct {
	Code       string
	Rate       float64
	SecondCode string
	SecondRate float64
	Latency    time.Duration
	DropRate   float64
	HTTPStatus int
	Times      int
}

type faultState struct {
	Fault
	fired int
}

type faultDecision struct {
	latency time.Duration
	err     *apiError
	drop    bool
}

// SetFault sets the fault for an action ("" or "*" for every action that
// has no fault of its own). A zero Fault removes it.
func (e *Emulator) SetFault(action string, f Fault) {
	if action == "" {
		action = "*"
	}
	if c, ok := faultAliases[f.Code]; ok {
		f.Code = c
	}
	if c, ok := faultAliases[f.SecondCode]; ok {
		f.SecondCode = c
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if f == (Fault{}) {
		delete(e.faults, action)
		return
	}
	e.faults[action] = &faultState{Fault: f}
}

// ClearFaults removes every fault.
func (e *Emulator) ClearFaults() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.faults = map[string]*faultState{}
}

// decideFault rolls the dice for one call. Called with the lock held.
func (e *Emulator) decideFault(action string) faultDecision {
	f, ok := e.faults[action]
	if !ok {
		f, ok = e.faults["*"]
	}
	if !ok {
		return faultDecision{}
	}
	if f.Times > 0 && f.fired >= f.Times {
		return faultDecision{}
	}
	d := faultDecision{latency: f.Latency}
	roll := e.rng.Float64()
	code := ""
	switch {
	case f.Code != "" && roll < f.Rate:
		code = f.Code
	case f.SecondCode != "" && roll >= f.Rate && roll < f.Rate+f.SecondRate:
		code = f.SecondCode
	}
	switch {
	case code != "":
		status := f.HTTPStatus
		if status == 0 {
			status = statusOf(code)
		}
		d.err = &apiError{Status: status, Code: code, Message: "Injected fault: " + code + " for " + action + "."}
	case f.DropRate > 0 && e.rng.Float64() < f.DropRate:
		d.drop = true
	default:
		return d
	}
	f.fired++
	e.injected[action]++
	return d
}
