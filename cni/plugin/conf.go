package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/terway-reconciler/terway/cni/wire"
)

// SupportedVersions are the CNI spec versions the plugin speaks. 0.4.0 is
// the oldest with CHECK and cached results on DEL; GC and STATUS need 1.1.0.
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// Default bounds on one call to the agent, per command. A conflist's
// "timeout" overrides them all.
var DefaultTimeouts = map[wire.Command]time.Duration{
	// ADD may wait for the cloud (an ENI secondary IP) on a cold pool;
	// kubelet gives the whole sandbox creation 2 minutes.
	wire.CmdAdd: 90 * time.Second,
	// DEL is local work (release, remove kernel objects); the runtime
	// retries it, so failing sooner is better than hanging.
	wire.CmdDel: 60 * time.Second,
	// CHECK reads the kernel and compares.
	wire.CmdCheck: 30 * time.Second,
	// GC may release many attachments at once.
	wire.CmdGC: 60 * time.Second,
	// STATUS is polled by the runtime to set the node's NetworkReady; a
	// slow answer is as bad as "not ready".
	wire.CmdStatus: 10 * time.Second,
}

// maxStdin bounds the network config read from stdin.
const maxStdin = wire.MaxMessageBytes

// Conf is the parsed network config of one invocation.
type Conf struct {
	// NetConf is what travels to the agent.
	NetConf wire.NetConf
	// PrevResult is the config's prevResult as written (CHECK and DEL
	// only); the agent converts it to 1.1.0.
	PrevResult json.RawMessage
	// ValidAttachments is "cni.dev/valid-attachments" (GC only); never nil
	// after a successful GC parse.
	ValidAttachments []wire.Attachment
}

// Timeout is the bound on one call to the agent for cmd.
func (c *Conf) Timeout(cmd wire.Command) time.Duration {
	if c.NetConf.Timeout > 0 {
		return time.Duration(c.NetConf.Timeout)
	}
	return DefaultTimeouts[cmd]
}

// rawConf is the part of the stdin document the plugin reads beyond
// wire.NetConf.
type rawConf struct {
	Timeout          json.RawMessage `json:"timeout"`
	PrevResult       json.RawMessage `json:"prevResult"`
	ValidAttachments json.RawMessage `json:"cni.dev/valid-attachments"`
	// LegacyAttachments is the key an earlier text of the spec used; libcni
	// sends both.
	LegacyAttachments json.RawMessage `json:"cni.dev/attachments"`
}

// CheckStdin gives garbage on stdin a precise error before the CNI library
// sees it: not JSON, or not an object → code 6; cniVersion or name missing
// or not strings → code 7 naming the field. (The library alone would call
// a config without cniVersion "incompatible version 0.1.0".) It returns
// the cniVersion whenever it is a string, also with an error about name,
// for the error's own version.
func CheckStdin(data []byte) (version string, e *wire.Error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return "", wire.NewError(wire.ErrDecodingFailure, "terway: no network config on stdin", "stdin is empty")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return "", wire.NewError(wire.ErrDecodingFailure,
			fmt.Sprintf("terway: network config on stdin is not a JSON object: %v", err),
			fmt.Sprintf("stdin begins %q", begin(data)))
	}
	for _, field := range []string{"cniVersion", "name"} {
		raw, ok := obj[field]
		if !ok || string(raw) == "null" {
			return version, wire.NewError(wire.ErrInvalidNetworkConfig,
				fmt.Sprintf("terway network config: field %q is missing", field), "")
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return version, wire.NewError(wire.ErrInvalidNetworkConfig,
				fmt.Sprintf("terway network config: field %q is not a string: %s", field, begin(raw)), "")
		}
		if field == "cniVersion" {
			version = s
		}
	}
	return version, nil
}

// ParseConf reads the network config for cmd and validates it: bad JSON →
// code 6; a version the plugin does not speak or that does not define cmd
// → code 1; a missing or invalid field → code 7 naming it.
//
// prevResult travels as written: the agent converts it to 1.1.0, failing
// CHECK (which depends on it) on a broken one and going on without it for
// DEL. Here CHECK only needs it to be a JSON object. GC needs
// "cni.dev/valid-attachments"; a null list means the runtime has none.
func ParseConf(cmd wire.Command, data []byte) (*Conf, *wire.Error) {
	version, e := CheckStdin(data)
	if e != nil {
		return nil, e
	}
	if e := checkVersion(cmd, version); e != nil {
		return nil, e
	}
	var raw rawConf
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, wire.NewError(wire.ErrDecodingFailure, fmt.Sprintf("terway network config: %v", fieldErr(err)), "")
	}
	if len(raw.Timeout) > 0 {
		// Decoded alone first: a Duration's own error cannot name its field.
		var d wire.Duration
		if err := json.Unmarshal(raw.Timeout, &d); err != nil {
			return nil, wire.NewError(wire.ErrInvalidNetworkConfig,
				fmt.Sprintf("terway network config: field \"timeout\": %v", err), "")
		}
	}
	c := &Conf{}
	if err := json.Unmarshal(data, &c.NetConf); err != nil {
		return nil, wire.NewError(wire.ErrDecodingFailure,
			fmt.Sprintf("terway network config: %v", fieldErr(err)), "")
	}
	c.NetConf.Raw = json.RawMessage(bytes.Clone(data))
	if e := c.NetConf.Validate(); e != nil {
		return nil, e
	}
	if len(raw.PrevResult) > 0 && string(raw.PrevResult) != "null" && (cmd == wire.CmdCheck || cmd == wire.CmdDel) {
		var obj map[string]json.RawMessage
		switch err := json.Unmarshal(raw.PrevResult, &obj); {
		case err == nil:
			c.PrevResult = bytes.Clone(raw.PrevResult)
		case cmd == wire.CmdCheck:
			return nil, wire.NewError(wire.ErrDecodingFailure,
				fmt.Sprintf("terway network config: field \"prevResult\" is not a JSON object: %v", err), "")
		}
	}
	if cmd == wire.CmdGC {
		list, key := raw.ValidAttachments, "cni.dev/valid-attachments"
		if list == nil {
			list, key = raw.LegacyAttachments, "cni.dev/attachments"
		}
		if list == nil {
			return nil, wire.NewError(wire.ErrInvalidNetworkConfig,
				"terway network config: field \"cni.dev/valid-attachments\" is missing; refusing to GC without the runtime's list of valid attachments", "")
		}
		c.ValidAttachments = []wire.Attachment{}
		if string(list) != "null" {
			if err := json.Unmarshal(list, &c.ValidAttachments); err != nil {
				return nil, wire.NewError(wire.ErrDecodingFailure,
					fmt.Sprintf("terway network config: field %q: %v", key, err), "")
			}
		}
		for i, a := range c.ValidAttachments {
			if a.ContainerID == "" || a.IfName == "" {
				return nil, wire.NewError(wire.ErrInvalidNetworkConfig,
					fmt.Sprintf("terway network config: field %q item %d has an empty containerID or ifname", key, i), "")
			}
		}
	}
	return c, nil
}

// fieldErr names the field of a JSON type error ("field "timeout": ...").
func fieldErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("field %q: want %s, got JSON %s: %w", te.Field, te.Type, te.Value, err)
	}
	return err
}

// begin is the start of a byte string for an error message.
func begin(b []byte) string {
	const n = 40
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
