package emulator

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// World is the static part of the emulated cloud: one region with one VPC,
// its vSwitches, the instance types and instances that exist, and who may
// call the API. Everything dynamic (ENIs, IPs) starts from it. It is plain
// data so that a test, a config file and terwayctl all describe it the same way.
type World struct {
	RegionID  string    `json:"regionId"`
	ZoneIDs   []string  `json:"zoneIds"`
	VPC       VPC       `json:"vpc"`
	VSwitches []VSwitch `json:"vswitches"`
	// InstanceTypes are the types DescribeInstanceTypes knows; the ENI and IP
	// quotas of an instance come from its type.
	InstanceTypes []InstanceType `json:"instanceTypes"`
	Instances     []Instance     `json:"instances"`
	// AccessKeys may sign API calls. The first one is handed out by Info.
	AccessKeys []AccessKey `json:"accessKeys"`
	// RAMRole is the role whose STS credentials the metadata service hands
	// out (ram/security-credentials/<role>); empty means no role attached.
	RAMRole         string `json:"ramRole,omitempty"`
	SecurityGroupID string `json:"securityGroupId"`
	// MaxENIs is the account's ENI quota in the region (default 100, as the
	// cloud's default); reaching it fails CreateNetworkInterface with
	// MaxEniCountExceeded.
	MaxENIs int `json:"maxENIs,omitempty"`
}

// VPC is the one virtual network every vSwitch belongs to.
type VPC struct {
	ID   string `json:"id"`
	CIDR string `json:"cidr"`
}

// VSwitch is a subnet in one zone. IPs are allocated from CIDR skipping the
// network address, the gateway (network+1) and the broadcast address.
type VSwitch struct {
	ID     string `json:"id"`
	ZoneID string `json:"zoneId"`
	CIDR   string `json:"cidr"`
	// Available caps the free IPs at start, as if other tenants held the
	// rest; 0 means only the CIDR limits it. SetVSwitchAvailable changes it
	// at run time (also to 0, to exhaust the vSwitch).
	Available int `json:"available,omitempty"`
}

// InstanceType carries the quotas the cloud enforces per instance.
type InstanceType struct {
	ID string `json:"id"`
	// ENIQuantity counts ENIs per instance including the primary one.
	ENIQuantity int `json:"eniQuantity"`
	// ENIPrivateIPAddressQuantity counts IPv4 addresses per ENI including
	// the ENI's own primary address.
	ENIPrivateIPAddressQuantity int     `json:"eniPrivateIpAddressQuantity"`
	ENIIPv6AddressQuantity      int     `json:"eniIpv6AddressQuantity,omitempty"`
	Family                      string  `json:"family,omitempty"`
	CPU                         int     `json:"cpu,omitempty"`
	MemoryGiB                   float64 `json:"memoryGiB,omitempty"`
}

// Instance is an ECS instance (a node). Its primary ENI is created by New.
type Instance struct {
	ID           string `json:"id"`
	InstanceType string `json:"instanceType"`
	ZoneID       string `json:"zoneId"`
	VSwitchID    string `json:"vswitchId"`
	// PrimaryIP of the primary ENI; allocated from the vSwitch when empty.
	PrimaryIP string `json:"primaryIp,omitempty"`
	// Status is Running, Stopped, Pending, Starting or Stopping; default Running.
	Status   string `json:"status,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// HTTPTokens "required" makes the metadata service refuse calls without
	// an IMDSv2 token (the instance's security hardening mode).
	HTTPTokens string `json:"httpTokens,omitempty"`
}

// AccessKey is a static credential allowed to sign requests.
type AccessKey struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// defaultMaxENIs is the cloud's default ENI quota per account and region.
const defaultMaxENIs = 100

// DefaultWorld is a small, complete world: cn-hangzhou, one VPC in
// 198.18.0.0/15 (reserved for benchmarking, so it never collides with a
// real network), two vSwitches in two zones, one Running instance whose
// type allows 4 ENIs x 10 IPs (30 secondary-ENI IPs for pods), one access
// key and a RAM role.
func DefaultWorld() *World {
	return &World{
		RegionID: "cn-hangzhou",
		ZoneIDs:  []string{"cn-hangzhou-h", "cn-hangzhou-i"},
		VPC:      VPC{ID: "vpc-emu0000000000000001", CIDR: "198.18.0.0/15"},
		VSwitches: []VSwitch{
			{ID: "vsw-emu000000000000000h", ZoneID: "cn-hangzhou-h", CIDR: "198.18.64.0/20"},
			{ID: "vsw-emu000000000000000i", ZoneID: "cn-hangzhou-i", CIDR: "198.18.80.0/20"},
		},
		InstanceTypes: []InstanceType{
			// The emulator's own type: round numbers make quota tests easy to read.
			{ID: "ecs.emu.xlarge", Family: "ecs.emu", CPU: 4, MemoryGiB: 16, ENIQuantity: 4, ENIPrivateIPAddressQuantity: 10, ENIIPv6AddressQuantity: 10},
			// Real quotas from the cloud's 2021 documentation, for variety.
			{ID: "ecs.g6.large", Family: "ecs.g6", CPU: 2, MemoryGiB: 8, ENIQuantity: 2, ENIPrivateIPAddressQuantity: 6, ENIIPv6AddressQuantity: 1},
			{ID: "ecs.g6.xlarge", Family: "ecs.g6", CPU: 4, MemoryGiB: 16, ENIQuantity: 3, ENIPrivateIPAddressQuantity: 10, ENIIPv6AddressQuantity: 10},
			{ID: "ecs.g6.4xlarge", Family: "ecs.g6", CPU: 16, MemoryGiB: 64, ENIQuantity: 8, ENIPrivateIPAddressQuantity: 20, ENIIPv6AddressQuantity: 20},
			{ID: "ecs.g7.large", Family: "ecs.g7", CPU: 2, MemoryGiB: 8, ENIQuantity: 3, ENIPrivateIPAddressQuantity: 6, ENIIPv6AddressQuantity: 6},
			{ID: "ecs.g7.xlarge", Family: "ecs.g7", CPU: 4, MemoryGiB: 16, ENIQuantity: 4, ENIPrivateIPAddressQuantity: 15, ENIIPv6AddressQuantity: 15},
			{ID: "ecs.c7.large", Family: "ecs.c7", CPU: 2, MemoryGiB: 4, ENIQuantity: 3, ENIPrivateIPAddressQuantity: 6, ENIIPv6AddressQuantity: 6},
		},
		Instances: []Instance{
			{ID: "i-emu00000000000000001", InstanceType: "ecs.emu.xlarge", ZoneID: "cn-hangzhou-h", VSwitchID: "vsw-emu000000000000000h", Status: "Running", Hostname: "emu-node-1"},
		},
		AccessKeys:      []AccessKey{{ID: "LTAIemulator00000001", Secret: "emulator-secret-00000001"}},
		RAMRole:         "TerwayEmulatorRole",
		SecurityGroupID: "sg-emu00000000000000001",
	}
}

// LoadWorld reads a World from a JSON or YAML file, rejecting unknown
// fields, and validates it.
func LoadWorld(path string) (*World, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load world: %w", err)
	}
	var w World
	if err := yaml.UnmarshalStrict(data, &w); err != nil {
		return nil, fmt.Errorf("load world %s: %w", path, err)
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("load world %s: %w", path, err)
	}
	return &w, nil
}

var instanceStatuses = map[string]bool{"Running": true, "Stopped": true, "Pending": true, "Starting": true, "Stopping": true}

// Validate checks the world for what would make the emulator lie: unknown
// references, overlapping or out-of-VPC CIDRs, duplicate ids, impossible quotas.
func (w *World) Validate() error {
	if w.RegionID == "" {
		return fmt.Errorf("world: regionId: must not be empty")
	}
	zones := map[string]bool{}
	for i, z := range w.ZoneIDs {
		if z == "" || zones[z] {
			return fmt.Errorf("world: zoneIds[%d]: %q is empty or a duplicate", i, z)
		}
		zones[z] = true
	}
	if w.VPC.ID == "" {
		return fmt.Errorf("world: vpc.id: must not be empty")
	}
	vpcNet, err := netip.ParsePrefix(w.VPC.CIDR)
	if err != nil || !vpcNet.Addr().Is4() || vpcNet.Masked() != vpcNet {
		return fmt.Errorf("world: vpc.cidr: %q is not an IPv4 network prefix", w.VPC.CIDR)
	}
	if w.SecurityGroupID == "" {
		return fmt.Errorf("world: securityGroupId: must not be empty")
	}
	if w.MaxENIs < 0 {
		return fmt.Errorf("world: maxENIs: %d is negative", w.MaxENIs)
	}
	vsw := map[string]netip.Prefix{}
	for i, s := range w.VSwitches {
		field := fmt.Sprintf("world: vswitches[%d]", i)
		if s.ID == "" {
			return fmt.Errorf("%s.id: must not be empty", field)
		}
		if _, dup := vsw[s.ID]; dup {
			return fmt.Errorf("%s.id: %q is a duplicate", field, s.ID)
		}
		if !zones[s.ZoneID] {
			return fmt.Errorf("%s.zoneId: %q of vSwitch %s is not in zoneIds", field, s.ZoneID, s.ID)
		}
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil || !p.Addr().Is4() || p.Masked() != p {
			return fmt.Errorf("%s.cidr: %q of vSwitch %s is not an IPv4 network prefix", field, s.CIDR, s.ID)
		}
		if p.Bits() > 29 || p.Bits() < vpcNet.Bits() || !vpcNet.Contains(p.Addr()) {
			return fmt.Errorf("%s.cidr: %s of vSwitch %s must be a /16../29 inside the VPC's %s", field, s.CIDR, s.ID, w.VPC.CIDR)
		}
		for id, other := range vsw {
			if other.Overlaps(p) {
				return fmt.Errorf("%s.cidr: %s of vSwitch %s overlaps vSwitch %s (%s)", field, s.CIDR, s.ID, id, other)
			}
		}
		if s.Available < 0 {
			return fmt.Errorf("%s.available: %d of vSwitch %s is negative", field, s.Available, s.ID)
		}
		vsw[s.ID] = p
	}
	types := map[string]bool{}
	for i, t := range w.InstanceTypes {
		field := fmt.Sprintf("world: instanceTypes[%d]", i)
		if t.ID == "" || types[t.ID] {
			return fmt.Errorf("%s.id: %q is empty or a duplicate", field, t.ID)
		}
		if t.ENIQuantity < 1 {
			return fmt.Errorf("%s.eniQuantity: %d of type %s must be at least 1 (the primary ENI)", field, t.ENIQuantity, t.ID)
		}
		if t.ENIPrivateIPAddressQuantity < 1 {
			return fmt.Errorf("%s.eniPrivateIpAddressQuantity: %d of type %s must be at least 1 (the ENI's primary IP)", field, t.ENIPrivateIPAddressQuantity, t.ID)
		}
		types[t.ID] = true
	}
	if len(w.Instances) == 0 {
		return fmt.Errorf("world: instances: at least one instance is needed (the metadata service describes the first)")
	}
	insts := map[string]bool{}
	primaries := map[netip.Addr]string{}
	for i, in := range w.Instances {
		field := fmt.Sprintf("world: instances[%d]", i)
		if in.ID == "" || insts[in.ID] {
			return fmt.Errorf("%s.id: %q is empty or a duplicate", field, in.ID)
		}
		insts[in.ID] = true
		if !types[in.InstanceType] {
			return fmt.Errorf("%s.instanceType: %q of instance %s is not in instanceTypes", field, in.InstanceType, in.ID)
		}
		if in.Status != "" && !instanceStatuses[in.Status] {
			return fmt.Errorf("%s.status: %q of instance %s is not one of Running, Stopped, Pending, Starting, Stopping", field, in.Status, in.ID)
		}
		if in.HTTPTokens != "" && in.HTTPTokens != "optional" && in.HTTPTokens != "required" {
			return fmt.Errorf("%s.httpTokens: %q of instance %s is not optional or required", field, in.HTTPTokens, in.ID)
		}
		p, ok := vsw[in.VSwitchID]
		if !ok {
			return fmt.Errorf("%s.vswitchId: %q of instance %s is not in vswitches", field, in.VSwitchID, in.ID)
		}
		if z := w.vswitchZone(in.VSwitchID); z != in.ZoneID {
			return fmt.Errorf("%s.zoneId: instance %s is in %q but its vSwitch %s is in %q", field, in.ID, in.ZoneID, in.VSwitchID, z)
		}
		if in.PrimaryIP != "" {
			a, err := netip.ParseAddr(in.PrimaryIP)
			if err != nil || !usable(p, a) {
				return fmt.Errorf("%s.primaryIp: %q of instance %s is not a usable address of %s", field, in.PrimaryIP, in.ID, p)
			}
			if other, dup := primaries[a]; dup {
				return fmt.Errorf("%s.primaryIp: %s of instance %s is also the primary IP of %s", field, a, in.ID, other)
			}
			primaries[a] = in.ID
		}
	}
	if len(w.AccessKeys) == 0 {
		return fmt.Errorf("world: accessKeys: at least one key is needed to call the API")
	}
	for i, k := range w.AccessKeys {
		if k.ID == "" || k.Secret == "" {
			return fmt.Errorf("world: accessKeys[%d]: id and secret must not be empty", i)
		}
		if strings.HasPrefix(k.ID, stsPrefix) {
			return fmt.Errorf("world: accessKeys[%d].id: %q must not start with %q (reserved for STS credentials)", i, k.ID, stsPrefix)
		}
	}
	if strings.ContainsAny(w.RAMRole, "/\n") {
		return fmt.Errorf("world: ramRole: %q must not contain / or a newline (it is a metadata path element)", w.RAMRole)
	}
	return nil
}

func (w *World) vswitchZone(id string) string {
	for _, s := range w.VSwitches {
		if s.ID == id {
			return s.ZoneID
		}
	}
	return ""
}

// clone returns a deep copy of the world.
func (w *World) clone() *World {
	data, err := json.Marshal(w)
	if err != nil {
		panic(fmt.Sprintf("emulator: a World is always serialisable: %v", err))
	}
	var c World
	if err := json.Unmarshal(data, &c); err != nil {
		panic(fmt.Sprintf("emulator: a World always round-trips: %v", err))
	}
	return &c
}
