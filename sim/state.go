// Package sim is a whole node on one machine, made only of network
// namespaces and the project's real binaries: a node namespace with no
// uplink, a vpc namespace playing the vswitch, the real terwayd in
// standalone mode on a folder of Kubernetes YAML, and every Pod of that
// folder as a network namespace attached through the real terway CNI binary
// via libcni, serving its containerPorts.
//
// Everything a sim makes is named after it, so that several sims run side
// by side and `down` finds leftovers of a crashed run: namespaces are
// "tws.NAME.*", files live under Root()/NAME, and every process it starts
// carries that folder on its command line.
package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
)

// DefaultName is the sim's name when none is given.
const DefaultName = "sim"

// State is what a running sim is made of; `up` writes it, every other
// command reads it. It lives in Dir/state.json.
type State struct {
	Name      string `json:"name"`
	Mode      string `json:"mode"`
	Node      string `json:"node"`      // the Node object's name
	NodeIP    string `json:"nodeIP"`    // its InternalIP
	NodeNetns string `json:"nodeNetns"` // path of the node namespace
	VPCNetns  string `json:"vpcNetns"`
	Dir       string `json:"dir"`
	BinDir    string `json:"binDir"`
	// AgentPID is the agent's first process; the supervisor restarts it
	// when it dies: Agent() reads the one running now.
	AgentPID int `json:"agentPID"`
	// SupervisorPID is the process that restarts the agent.
	SupervisorPID int `json:"supervisorPID"`
	// EmulatorPID is the cloud emulator's process in ENI mode.
	EmulatorPID int    `json:"emulatorPID,omitempty"`
	Pods        []*Pod `json:"pods"`
}

// Pod is one simulated pod: a network namespace with the address the CNI
// gave it and a server process for its containerPorts.
type Pod struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	UID         string `json:"uid"`
	Netns       string `json:"netns"`
	IP          string `json:"ip"`
	Node        string `json:"node"`
	ContainerID string `json:"containerID"`
	ServerPID   int    `json:"serverPID,omitempty"`
	TCP         []int  `json:"tcp,omitempty"`
	UDP         []int  `json:"udp,omitempty"`
}

// Key is "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// Root is the folder holding every sim's files: $TERWAY_SIM_ROOT, or
// /run/terway-sim (tmpfs: a reboot leaves nothing behind).
func Root() string {
	if r := os.Getenv("TERWAY_SIM_ROOT"); r != "" {
		return r
	}
	return "/run/terway-sim"
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// checkName refuses names that could collide with another sim's objects
// (the dot separates the name in namespace names, so names have none).
func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("sim name %q: want 1-20 characters of a-z, 0-9 and '-', starting with a letter or digit", name)
	}
	return nil
}

// Dir is the folder of the sim called name.
func Dir(name string) string { return filepath.Join(Root(), name) }

// netnsPrefix starts the name of every namespace of the sim.
func netnsPrefix(name string) string { return "tws." + name + "." }

func stateFile(dir string) string { return filepath.Join(dir, "state.json") }

// ErrNotUp means no sim of that name is running.
var ErrNotUp = errors.New("not up")

// Load reads the state of the sim called name.
func Load(name string) (*State, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(stateFile(Dir(name)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sim %s: %w (run terwayctl sim up)", name, ErrNotUp)
	}
	if err != nil {
		return nil, fmt.Errorf("sim %s: %w", name, err)
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("sim %s: state file %s is corrupt: %w (run terwayctl sim down --name %s)", name, stateFile(Dir(name)), err, name)
	}
	return &st, nil
}

// save writes the state atomically.
func (st *State) save() error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := stateFile(st.Dir) + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("sim %s: write state: %w", st.Name, err)
	}
	return os.Rename(tmp, stateFile(st.Dir))
}

// Pod returns the pod "namespace/name", or nil.
func (st *State) Pod(key string) *Pod {
	for _, p := range st.Pods {
		if p.Key() == key {
			return p
		}
	}
	return nil
}

// lock serialises commands on one sim (an `apply` racing a `delete`).
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}
