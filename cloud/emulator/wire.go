package emulator

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	ecsVersion = "2014-05-26"
	vpcVersion = "2016-04-28"
	ecsHost    = "ecs.aliyuncs.com"
	vpcHost    = "vpc.aliyuncs.com"
)

// call is one authenticated request as an action handler sees it.
type call struct {
	action    string
	p         params
	requestID string
	now       time.Time
	// after runs once the emulator's lock is released (hooks do netlink
	// work and must not hold it).
	after []func()
}

// actionFunc runs with the emulator's lock held and returns the response
// document (marshalled as JSON) or the cloud's error.
type actionFunc func(e *Emulator, c *call) (any, *apiError)

type actionSpec struct {
	version string
	host    string
	fn      actionFunc
}

// actions is the API surface; both products share one listener because the
// SDK client of each is pointed at the same Domain.
var actions = map[string]actionSpec{
	"CreateNetworkInterface":     {ecsVersion, ecsHost, (*Emulator).createNetworkInterface},
	"AttachNetworkInterface":     {ecsVersion, ecsHost, (*Emulator).attachNetworkInterface},
	"DetachNetworkInterface":     {ecsVersion, ecsHost, (*Emulator).detachNetworkInterface},
	"DeleteNetworkInterface":     {ecsVersion, ecsHost, (*Emulator).deleteNetworkInterface},
	"AssignPrivateIpAddresses":   {ecsVersion, ecsHost, (*Emulator).assignPrivateIPAddresses},
	"UnassignPrivateIpAddresses": {ecsVersion, ecsHost, (*Emulator).unassignPrivateIPAddresses},
	"DescribeNetworkInterfaces":  {ecsVersion, ecsHost, (*Emulator).describeNetworkInterfaces},
	"DescribeInstanceAttribute":  {ecsVersion, ecsHost, (*Emulator).describeInstanceAttribute},
	"DescribeInstances":          {ecsVersion, ecsHost, (*Emulator).describeInstances},
	"DescribeInstanceTypes":      {ecsVersion, ecsHost, (*Emulator).describeInstanceTypes},
	"DescribeVSwitches":          {vpcVersion, vpcHost, (*Emulator).describeVSwitches},
}

// adminPrefix holds the emulator's own endpoints (no signature: they are
// for the test harness and terwayctl, and the listener is loopback only).
const adminPrefix = "/__emulator/"

func (e *Emulator) newRequestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := strings.ToUpper(hex.EncodeToString(b))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func (e *Emulator) serveAPI(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, adminPrefix) {
		e.serveAdmin(w, r)
		return
	}
	requestID := e.newRequestID()
	if r.URL.Path != "/" {
		writeError(w, requestID, ecsHost, errf(codeInvalidAction, "Specified api is not found, please check your url and method: path %q (RPC calls use /).", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		writeError(w, requestID, ecsHost, errf(codeInvalidParameter, "HTTP method %s is not supported (POST or GET).", r.Method))
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, requestID, ecsHost, errf(codeInvalidParameter, "The request parameters cannot be parsed: %v.", err))
		return
	}
	p := params{}
	for k, vs := range r.Form {
		if len(vs) > 0 {
			p[k] = vs[0]
		}
	}
	action := p["Action"]
	if action == "" {
		writeError(w, requestID, ecsHost, missing("Action"))
		return
	}
	spec, ok := actions[action]
	if !ok {
		writeError(w, requestID, ecsHost, errf(codeInvalidAction, "Specified api %q is not found, please check your url and method.", action))
		return
	}
	if v := p["Version"]; v != spec.version {
		writeError(w, requestID, spec.host, errf(codeInvalidVersion, "Specified parameter Version %q is not valid for %s (want %s).", v, action, spec.version))
		return
	}

	now := e.now()
	e.mu.Lock()
	e.calls[action]++
	aerr := e.authenticate(r.Method, p, now)
	var f faultDecision
	if aerr == nil {
		f = e.decideFault(action)
	}
	e.mu.Unlock()
	if aerr != nil {
		writeError(w, requestID, spec.host, aerr)
		return
	}

	if f.latency > 0 {
		// A client that gives up meanwhile does not stop the call: the
		// cloud would still run it.
		t := time.NewTimer(f.latency)
		select {
		case <-t.C:
		case <-e.done:
			t.Stop()
			return
		}
	}
	if f.err != nil {
		writeError(w, requestID, spec.host, f.err)
		return
	}

	c := &call{action: action, p: p, requestID: requestID, now: e.now()}
	e.mu.Lock()
	resp, aerr := spec.fn(e, c)
	e.mu.Unlock()
	for _, fn := range c.after {
		fn()
	}

	if f.drop {
		e.log.Info("fault: dropping the response of a completed call", "action", action, "requestId", requestID)
		dropResponse(w)
		return
	}
	if aerr != nil {
		e.log.Debug("call refused", "action", action, "code", aerr.Code, "message", aerr.Message)
		writeError(w, requestID, spec.host, aerr)
		return
	}
	writeJSON(w, resp)
}

// dropResponse loses the response as a broken connection would: the client
// sees a transport error although the call took effect.
func dropResponse(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			if tc, ok := conn.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // reset, not a clean close
			}
			_ = conn.Close()
			return
		}
	}
	// No hijacking (HTTP/2): a bodiless 5xx is the closest.
	w.WriteHeader(http.StatusBadGateway)
}

func (e *Emulator) serveAdmin(w http.ResponseWriter, r *http.Request) {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		http.Error(w, "emulator admin endpoints are for loopback clients only", http.StatusForbidden)
		return
	}
	switch strings.TrimPrefix(r.URL.Path, adminPrefix) {
	case "dump":
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.MarshalIndent(e.Dump(), "", "  ")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(body, '\n'))
	case "info":
		writeJSON(w, e.Info())
	case "vswitch":
		// POST vswitch?id=ID&available=N: cap a vSwitch's free IPs (0
		// exhausts it), as other tenants taking addresses would.
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("available"))
		id := r.URL.Query().Get("id")
		if err != nil || n < 0 || id == "" {
			http.Error(w, "want id=VSWITCH and available=N (N >= 0)", http.StatusBadRequest)
			return
		}
		e.SetVSwitchAvailable(id, n)
		writeJSON(w, e.Dump().VSwitches)
	case "fault":
		// POST fault?action=A&code=C&rate=R (drop=R, latency=D; all empty
		// clears the action's fault).
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		var f Fault
		var bad []string
		num := func(key string) float64 {
			if q.Get(key) == "" {
				return 0
			}
			v, err := strconv.ParseFloat(q.Get(key), 64)
			if err != nil || v < 0 || v > 1 {
				bad = append(bad, key)
			}
			return v
		}
		f.Code, f.Rate = q.Get("code"), num("rate")
		f.SecondCode, f.SecondRate = q.Get("code2"), num("rate2")
		f.DropRate = num("drop")
		if l := q.Get("latency"); l != "" {
			d, err := time.ParseDuration(l)
			if err != nil || d < 0 {
				bad = append(bad, "latency")
			}
			f.Latency = d
		}
		if len(bad) > 0 {
			http.Error(w, "bad "+strings.Join(bad, ", "), http.StatusBadRequest)
			return
		}
		e.SetFault(q.Get("action"), f)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "unknown emulator endpoint "+r.URL.Path+" (dump, info, vswitch, fault)", http.StatusNotFound)
	}
}
