package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/internal/traffic"
)

// In ENI multi-IP mode the node's addresses come from the cloud (in VPC
// mode with Options.Cloud, those of pods requesting aliyun/eni): `up`
// starts the ECS/VPC emulator (the real SDK talks to it over HTTP), which
// plugs every ENI it attaches into the node namespace as a link whose
// other end sits on a bridge in the vpc namespace (the vswitch, with its
// gateway address). The emulator runs inside the node namespace, so the
// agent reaches its API and metadata service on the node's 127.0.0.1, as
// a real node reaches 100.100.100.200.

// Emulator is how to reach a sim's emulator.
type Emulator struct {
	emulator.Info
	PID int `json:"pid"`
}

func (st *State) emulatorInfoFile() string { return filepath.Join(st.Dir, "emulator.json") }

// startEmulator starts the emulator with the default world and writes the
// agent's cloud configuration for it, with reserved as its
// reservedENIsForMultiIP when set.
func (st *State) startEmulator(extraArgs []string, reserved *int) error {
	args := append([]string{"ip", "netns", "exec", filepath.Base(st.NodeNetns), st.ctl(), "emulator",
		"--listen", "127.0.0.1:0", "--metadata-listen", "127.0.0.1:0",
		"--sim-node", st.NodeNetns, "--sim-vpc", st.VPCNetns, "--sim-dir", st.Dir}, extraArgs...)
	pid, line, err := startFirstLine(st.Dir, "emulator.log", args, 15*time.Second, func(l string) bool { return strings.HasPrefix(l, "{") })
	if err != nil {
		return err
	}
	st.EmulatorPID = pid
	var info emulator.Info
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		return fmt.Errorf("emulator's first line %q: %w", line, err)
	}
	data, _ := json.MarshalIndent(Emulator{Info: info, PID: pid}, "", "  ")
	if err := os.WriteFile(st.emulatorInfoFile(), data, 0o600); err != nil {
		return err
	}
	w := emulator.DefaultWorld()
	var vswitches []string
	for _, v := range w.VSwitches {
		if v.ZoneID == w.Instances[0].ZoneID { // ENIs attach only within the zone
			vswitches = append(vswitches, v.ID)
		}
	}
	cc := agent.CloudConfig{
		APIVersion: "terway/v1", Kind: "CloudConfig", Metadata: info.Metadata,
		ECSEndpoint: info.Endpoint, VPCEndpoint: info.Endpoint,
		AccessKeyID: info.AccessKeyID, AccessKeySecret: info.AccessKeySecret,
		VSwitchIDs: vswitches, SecurityGroupID: w.SecurityGroupID, ReservedENIsForMultiIP: reserved,
	}
	out, err := yaml.Marshal(cc)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(st.Dir, "cloud.yaml"), out, 0o600)
}

// EmulatorInfo returns how to reach the sim's emulator (ENI mode).
func (st *State) EmulatorInfo() (*Emulator, error) {
	data, err := os.ReadFile(st.emulatorInfoFile())
	if err != nil {
		return nil, fmt.Errorf("sim %s has no emulator (mode %s): %w", st.Name, st.Mode, err)
	}
	var e Emulator
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("sim %s: %s: %w", st.Name, st.emulatorInfoFile(), err)
	}
	return &e, nil
}

// EmulatorDump reads the emulator's state (its admin path, on the node's
// loopback where it listens).
func (st *State) EmulatorDump(ctx context.Context) (*emulator.Dump, error) {
	info, err := st.EmulatorInfo()
	if err != nil {
		return nil, err
	}
	code, body, err := traffic.Get(ctx, st.NodeNetns, "http://"+info.Endpoint+"/__emulator/dump", 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("emulator dump: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("emulator dump: HTTP %d", code)
	}
	var d emulator.Dump
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		return nil, fmt.Errorf("emulator dump: %w", err)
	}
	return &d, nil
}

// EmulatorPost calls an admin endpoint of the sim's emulator ("vswitch?id=
// ...&available=0", "fault?action=...&code=...&rate=...").
func (st *State) EmulatorPost(ctx context.Context, pathAndQuery string) error {
	info, err := st.EmulatorInfo()
	if err != nil {
		return err
	}
	client := st.nodeClient()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+info.Endpoint+"/__emulator/"+pathAndQuery, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("emulator %s: %w", pathAndQuery, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("emulator %s: HTTP %d", pathAndQuery, resp.StatusCode)
	}
	return nil
}
