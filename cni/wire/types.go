package wire

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultSocketPath is where the agent listens and the plugin dials unless
// the network config's "socket" field says otherwise.
const DefaultSocketPath = "/var/run/terway/terway.sock"

// SocketDirMode is the mode of the socket's directory: only root may talk to
// the agent, because whoever can send ADD can take IPs and wire namespaces.
const SocketDirMode = 0o700

// ResultVersion is the CNI spec version of Response.Result and of
// Request.PrevResult as the agent's handler sees it.
const ResultVersion = "1.1.0"

// PathPrefix is the URL path under which the commands are served; the
// command's lower-case name follows it ("/v1/cni/add").
const PathPrefix = "/v1/cni/"

// MaxMessageBytes bounds a request or response body. A netconf with a
// prevResult is a few KiB; the bound only stops a runaway peer.
const MaxMessageBytes = 4 << 20

// Command is a CNI operation, spelled as in CNI_COMMAND.
type Command string

// The CNI commands the agent serves. VERSION is answered by the plugin alone.
const (
	CmdAdd    Command = "ADD"
	CmdDel    Command = "DEL"
	CmdCheck  Command = "CHECK"
	CmdGC     Command = "GC"
	CmdStatus Command = "STATUS"
)

// Commands lists every command the agent serves, in spec order.
var Commands = []Command{CmdAdd, CmdDel, CmdCheck, CmdGC, CmdStatus}

// Path is the URL path that serves the command.
func (c Command) Path() string { return PathPrefix + strings.ToLower(string(c)) }

// Valid reports whether c is one of Commands.
func (c Command) Valid() bool {
	for _, k := range Commands {
		if c == k {
			return true
		}
	}
	return false
}

// Request is one CNI invocation as the agent sees it: the runtime's
// environment variables, already parsed, and the network config from stdin.
type Request struct {
	// Command is the operation (CNI_COMMAND). The URL path names it too.
	Command Command `json:"command"`
	// CNIVersion is the spec version the runtime speaks (the netconf's
	// cniVersion). The agent answers in ResultVersion regardless; the
	// plugin converts. It matters to the agent only for logs and for
	// commands that newer versions define (GC, STATUS need 1.1.0).
	CNIVersion string `json:"cniVersion"`
	// ContainerID is CNI_CONTAINERID: the sandbox's id, the key of an
	// attachment together with IfName. Set for ADD, DEL and CHECK.
	ContainerID string `json:"containerID,omitempty"`
	// Netns is CNI_NETNS: the path of the pod's network namespace, e.g.
	// /var/run/netns/cni-1234. Required for ADD and CHECK; DEL may come
	// without it when the namespace is already gone.
	Netns string `json:"netns,omitempty"`
	// IfName is CNI_IFNAME: the interface to create inside Netns ("eth0").
	// Set for ADD, DEL and CHECK.
	IfName string `json:"ifName,omitempty"`
	// Args is CNI_ARGS, parsed: the Kubernetes pod this sandbox belongs to.
	Args PodArgs `json:"args,omitzero"`
	// NetConf is the network config from stdin: its well-known fields
	// parsed, and the whole document verbatim in NetConf.Raw.
	NetConf NetConf `json:"netconf"`
	// PrevResult is the result of the attachment's last ADD: as the
	// runtime wrote it (in CNIVersion) when the plugin sends it, converted
	// to ResultVersion by the agent's decoder before a handler sees it
	// (cni/server). Always set for CHECK; set for DEL when the runtime
	// cached it (spec 0.4.0 and later) and it is usable; empty otherwise.
	PrevResult json.RawMessage `json:"prevResult,omitempty"`
	// ValidAttachments is the netconf's "cni.dev/valid-attachments" for GC:
	// every (containerID, ifname) the runtime still uses. The agent
	// releases whatever it holds that is not listed. Never nil for GC (an
	// empty list means the runtime has no attachment on this network, and
	// travels as [], while a nil list is omitted and refused).
	ValidAttachments []Attachment `json:"validAttachments,omitzero"`
}

// Attachment names one attachment of a network: a sandbox's container id
// and the interface inside it (the spec's GC list entry).
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// PodArgs are the Kubernetes keys of CNI_ARGS that kubelet's runtimes
// (containerd, CRI-O) set on every sandbox. JSON names are the CNI_ARGS keys,
// so a request reads like the environment it came from.
type PodArgs struct {
	// Namespace is K8S_POD_NAMESPACE.
	Namespace string `json:"K8S_POD_NAMESPACE,omitempty"`
	// Name is K8S_POD_NAME.
	Name string `json:"K8S_POD_NAME,omitempty"`
	// UID is K8S_POD_UID: tells a recreated pod of the same name from the
	// one it replaces.
	UID string `json:"K8S_POD_UID,omitempty"`
	// InfraContainerID is K8S_POD_INFRA_CONTAINER_ID, normally equal to
	// the request's ContainerID.
	InfraContainerID string `json:"K8S_POD_INFRA_CONTAINER_ID,omitempty"`
	// Other holds every other key of CNI_ARGS except IgnoreUnknown, for
	// the agent to use or ignore.
	Other map[string]string `json:"other,omitempty"`
}

// Key is "namespace/name", the pod's identity in the agent's store, or ""
// when CNI_ARGS did not name the pod.
func (a PodArgs) Key() string {
	if a.Namespace == "" || a.Name == "" {
		return ""
	}
	return a.Namespace + "/" + a.Name
}

// NetConf is the plugin's network config: the fields of the CNI spec the
// agent needs, the terway plugin's own fields, and the whole document.
type NetConf struct {
	// CNIVersion is the config's spec version: 0.4.0, 1.0.0 or 1.1.0.
	CNIVersion string `json:"cniVersion"`
	// Name is the network's name; attachments are per network.
	Name string `json:"name"`
	// Type is the plugin's binary name, normally "terway".
	Type string `json:"type"`
	// Socket is the agent's unix socket path; empty means DefaultSocketPath.
	Socket string `json:"socket,omitempty"`
	// Timeout bounds one call to the agent, overriding the plugin's
	// per-command default; zero means the default. JSON: a Go duration
	// string such as "90s".
	Timeout Duration `json:"timeout,omitempty"`
	// Capabilities are the capabilities the config declares (for example
	// "bandwidth"); the runtime fills RuntimeConfig only for these.
	Capabilities map[string]bool `json:"capabilities,omitempty"`
	// RuntimeConfig is the runtime's per-call data for those capabilities,
	// verbatim.
	RuntimeConfig json.RawMessage `json:"runtimeConfig,omitempty"`
	// Raw is the config exactly as the runtime wrote it on stdin, for
	// fields this struct does not name.
	Raw json.RawMessage `json:"raw,omitempty"`
}

// SocketPath is the socket to dial: Socket, or DefaultSocketPath.
func (n NetConf) SocketPath() string {
	if n.Socket == "" {
		return DefaultSocketPath
	}
	return n.Socket
}

// Validate checks the fields every command needs. Its errors are CNI errors
// with code 7 (invalid network config) naming the field.
func (n NetConf) Validate() *Error {
	switch {
	case n.CNIVersion == "":
		return confErr("cniVersion", "is missing")
	case n.Name == "":
		return confErr("name", "is missing")
	case n.Type == "":
		return confErr("type", "is missing")
	case n.Socket != "" && !filepath.IsAbs(n.Socket):
		return confErr("socket", fmt.Sprintf("%q is not an absolute path", n.Socket))
	case n.Timeout < 0:
		return confErr("timeout", fmt.Sprintf("%s is negative", time.Duration(n.Timeout)))
	}
	if why := checkName(n.Name); why != "" {
		return confErr("name", fmt.Sprintf("%q %s", n.Name, why))
	}
	return nil
}

func confErr(field, reason string) *Error {
	return NewError(ErrInvalidNetworkConfig,
		fmt.Sprintf("terway network config: field %q %s", field, reason), "")
}

func envErr(cmd Command, field, env, reason string) *Error {
	return NewError(ErrInvalidEnvironmentVariables,
		fmt.Sprintf("terway %s: %s (%s) %s", cmd, field, env, reason), "")
}

// Validate checks that the request carries what its command needs, so both
// sides reject a malformed call before acting on it, and fills CNIVersion
// from the netconf when it is empty. Errors are CNI errors naming the field:
// code 4 for the runtime's environment, 7 for the config.
func (r *Request) Validate() *Error {
	if !r.Command.Valid() {
		return NewError(ErrInvalidEnvironmentVariables,
			fmt.Sprintf("terway: command (CNI_COMMAND) %q is not one of %v", r.Command, Commands), "")
	}
	if e := r.NetConf.Validate(); e != nil {
		return e
	}
	if r.CNIVersion == "" {
		r.CNIVersion = r.NetConf.CNIVersion
	}
	cmd := r.Command
	if e := r.validUTF8(); e != nil {
		return e
	}
	needsAttachment := cmd == CmdAdd || cmd == CmdDel || cmd == CmdCheck
	if needsAttachment {
		if r.ContainerID == "" {
			return envErr(cmd, "containerID", "CNI_CONTAINERID", "is empty")
		}
		if why := checkName(r.ContainerID); why != "" {
			return envErr(cmd, "containerID", "CNI_CONTAINERID", fmt.Sprintf("%q %s", r.ContainerID, why))
		}
		if r.IfName == "" {
			return envErr(cmd, "ifName", "CNI_IFNAME", "is empty")
		}
		if why := checkIfName(r.IfName); why != "" {
			return envErr(cmd, "ifName", "CNI_IFNAME", fmt.Sprintf("%q %s", r.IfName, why))
		}
	}
	if (cmd == CmdAdd || cmd == CmdCheck) && r.Netns == "" {
		return envErr(cmd, "netns", "CNI_NETNS", "is empty")
	}
	if cmd == CmdAdd && r.Args.Key() == "" {
		return envErr(cmd, "args", "CNI_ARGS",
			"does not name the pod: K8S_POD_NAMESPACE and K8S_POD_NAME are required")
	}
	if cmd == CmdCheck && !hasValue(r.PrevResult) {
		return confErr("prevResult", "is missing; CHECK needs the result of the last ADD")
	}
	if cmd == CmdGC && r.ValidAttachments == nil {
		return confErr("cni.dev/valid-attachments", "is missing; GC needs the runtime's list of valid attachments")
	}
	return nil
}

// validUTF8 refuses environment values that are not valid UTF-8. JSON
// carries only UTF-8: encoding/json would replace each bad byte with U+FFFD,
// and the agent would act on another namespace path, interface name (three
// bytes longer per bad byte, past the kernel's 15) or pod than the runtime
// gave.
func (r *Request) validUTF8() *Error {
	for _, f := range []struct{ field, env, value string }{
		{"containerID", "CNI_CONTAINERID", r.ContainerID}, {"netns", "CNI_NETNS", r.Netns}, {"ifName", "CNI_IFNAME", r.IfName},
		{"args", "CNI_ARGS", r.Args.Namespace}, {"args", "CNI_ARGS", r.Args.Name},
		{"args", "CNI_ARGS", r.Args.UID}, {"args", "CNI_ARGS", r.Args.InfraContainerID},
	} {
		if !utf8.ValidString(f.value) {
			return envErr(r.Command, f.field, f.env, fmt.Sprintf("%q is not valid UTF-8", f.value))
		}
	}
	// In key order, so that the same request always names the same pair.
	for _, k := range slices.Sorted(maps.Keys(r.Args.Other)) {
		if v := r.Args.Other[k]; !utf8.ValidString(k) || !utf8.ValidString(v) {
			return envErr(r.Command, "args", "CNI_ARGS", fmt.Sprintf("%q=%q is not valid UTF-8", k, v))
		}
	}
	return nil
}

// hasValue reports whether a raw JSON field was given and is not null.
func hasValue(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null"
}

// Response is the body of every answer: Result and Output (successful ADD)
// or Error, or none of them for any other success.
type Response struct {
	// Result is the ADD result in ResultVersion: the pod's interfaces,
	// IPs, routes and DNS.
	Result json.RawMessage `json:"result,omitempty"`
	// Output is the same result in the request's CNIVersion, as the plugin
	// prints it (compact: the plugin indents it). The agent converts, so
	// that the plugin needs no CNI library.
	Output json.RawMessage `json:"output,omitempty"`
	// Error is the CNI error to hand to the runtime unchanged: code (see
	// the CNI spec; 11 asks the runtime to retry later, 50/51 answer a
	// STATUS that is not ready), msg, and details.
	Error *Error `json:"error,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("90s", "1m30s"), the form people write in a conflist.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string; a bare number is refused because
// its unit would be a guess.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration %s: want a string such as \"30s\": %w", b, err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}
