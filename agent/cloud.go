package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/cloud/metadata"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// CloudConfig is the cloud part of terwayd's configuration (a terway/v1
// CloudConfig document): where the APIs and the metadata service are, how
// to sign, and which vswitches and security group new ENIs get. Everything
// about the instance itself (id, region, zone, type, primary ENI) comes
// from the metadata service, as on a real node.
type CloudConfig struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Metadata is the metadata service's base URL (default
	// http://100.100.100.200; the emulator's for a simulated node).
	Metadata string `json:"metadata,omitempty"`
	// ECSEndpoint and VPCEndpoint override the SDK's endpoints (also from
	// $ECS_ENDPOINT and $VPC_ENDPOINT).
	ECSEndpoint string `json:"ecsEndpoint,omitempty"`
	VPCEndpoint string `json:"vpcEndpoint,omitempty"`
	// AccessKeyID and AccessKeySecret sign API calls; without them the
	// environment (ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET) or the instance's RAM
	// role (RAMRole, discovered when empty) is used.
	AccessKeyID     string `json:"accessKeyID,omitempty"`
	AccessKeySecret string `json:"accessKeySecret,omitempty"`
	RAMRole         string `json:"ramRole,omitempty"`
	// VSwitchIDs are tried in order for new ENIs (default: the primary
	// ENI's vswitch).
	VSwitchIDs []string `json:"vswitchIDs,omitempty"`
	// ZoneVSwitchIDs lists vswitches per zone, for a configuration shared
	// by nodes in several zones (Terway's eni_conf vswitches): when
	// VSwitchIDs is empty, the instance's zone's list is used.
	ZoneVSwitchIDs  map[string][]string `json:"zoneVSwitchIDs,omitempty"`
	SecurityGroupID string              `json:"securityGroupID"`
	Tags            map[string]string   `json:"tags,omitempty"`
	// ReservedENIsForMultiIP is how many secondary ENIs the node keeps for
	// multi-IP pods; the others (the instance type's quota less the
	// primary ENI, ENIs attached by others and these) are advertised as
	// aliyun/eni for pods that take a whole ENI, and the ENI pool keeps
	// the two apart: multi-IP pods never use more ENIs than these, and
	// exclusive pods never take them. Unset: in eni-multi-ip mode every
	// secondary ENI is kept for multi-IP pods (aliyun/eni advertises 0),
	// in VPC mode none (VPC pods take their addresses from the podCIDR).
	ReservedENIsForMultiIP *int `json:"reservedENIsForMultiIP,omitempty"`
}

// DefaultMetadata is the instance metadata service of every ECS instance.
const DefaultMetadata = "http://100.100.100.200"

// LoadCloudConfig reads a CloudConfig file strictly: an unknown field is
// an error naming it, so a typo never silently drops a setting.
func LoadCloudConfig(path string) (*CloudConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cloud config: %w", err)
	}
	var c CloudConfig
	if err := yaml.UnmarshalStrict(bytes.TrimSpace(data), &c); err != nil {
		return nil, fmt.Errorf("cloud config %s: %w", path, err)
	}
	if c.Kind != "CloudConfig" {
		return nil, fmt.Errorf("cloud config %s: kind: %q, want CloudConfig", path, c.Kind)
	}
	if c.SecurityGroupID == "" {
		return nil, fmt.Errorf("cloud config %s: securityGroupID: empty (every ENI needs one)", path)
	}
	if c.ReservedENIsForMultiIP != nil && *c.ReservedENIsForMultiIP < 0 {
		return nil, fmt.Errorf("cloud config %s: reservedENIsForMultiIP: %d is negative", path, *c.ReservedENIsForMultiIP)
	}
	return &c, nil
}

// ENIConfig discovers the instance through the metadata service and builds
// the ENI reconciler's configuration: pool sizes from the render config,
// the split of ENI slots between multi-IP and exclusive pods for the mode,
// and a WaitLink that waits for the ENI's link in the namespace the agent
// runs in (the node). In VPC mode the reconciler serves exclusive ENIs
// only: no warm pool, and no ENI kept for multi-IP pods unless configured.
func (c *CloudConfig) ENIConfig(ctx context.Context, rc render.Config, log *slog.Logger) (eni.Config, error) {
	base := c.Metadata
	if base == "" {
		base = DefaultMetadata
	}
	md := metadata.New(base)
	in, err := md.Instance(ctx)
	if err != nil {
		return eni.Config{}, fmt.Errorf("cloud: %w", err)
	}
	vsw := c.VSwitchIDs
	if len(vsw) == 0 {
		vsw = c.ZoneVSwitchIDs[in.ZoneID]
		if len(vsw) == 0 && len(c.ZoneVSwitchIDs) > 0 {
			log.Warn("cloud config: no vswitch listed for this zone; new ENIs use the primary ENI's vswitch", "zone", in.ZoneID, "vswitch", in.VSwitchID)
		}
	}
	if len(vsw) == 0 {
		vsw = []string{in.VSwitchID}
	}
	// Limits set in the configuration win over DescribeInstanceTypes; the
	// render defaults do not (they are a guess for display only).
	var limits eni.Limits
	if rc.MaxENIs > 0 && rc.IPsPerENI > 0 {
		limits = eni.Limits{MaxENIs: rc.MaxENIs, IPsPerENI: rc.IPsPerENI}
	}
	rc = rc.WithDefaults()
	minIdle, maxIdle := rc.MinPoolSize, rc.MaxPoolSize
	if rc.Mode != spec.PodModeENIMultiIP {
		minIdle, maxIdle = 0, 0
	}
	cfg := eni.Config{
		RegionID: in.RegionID, ECSEndpoint: c.ECSEndpoint, VPCEndpoint: c.VPCEndpoint,
		Credentials: eni.Credentials{AccessKeyID: c.AccessKeyID, AccessKeySecret: eni.Secret(c.AccessKeySecret), RAMRole: c.RAMRole},
		InstanceID:  in.ID, InstanceType: in.Type, ZoneID: in.ZoneID, PrimaryENIID: in.PrimaryENIID,
		VSwitchIDs: vsw, SecurityGroupID: c.SecurityGroupID, Tags: c.Tags,
		MinIdle: minIdle, MaxIdle: maxIdle, Limits: limits, ReservedShared: c.reservedShared(rc.Mode, log),
		Metadata: md, WaitLink: waitLinkByMAC, Logger: log,
	}
	return cfg, nil
}

// reservedShared is the ENI pool's reservation for shared ENIs: the
// configured reservedENIsForMultiIP, else every slot in eni-multi-ip mode
// (its pods must not lose their ENIs to pods nobody promised them to) and
// none in VPC mode (no pod there takes a shared IP).
func (c *CloudConfig) reservedShared(mode string, log *slog.Logger) *int {
	n := 0
	switch {
	case c.ReservedENIsForMultiIP != nil:
		n = *c.ReservedENIsForMultiIP
	case mode == spec.PodModeENIMultiIP:
		n = eni.AllSlots
		log.Info("cloud config: reservedENIsForMultiIP unset: every secondary ENI is kept for multi-IP pods, aliyun/eni advertises 0; set it to offer ENIs to pods that take a whole one")
	}
	return &n
}

// waitLinkByMAC returns once a link with the MAC exists in the agent's
// namespace: the cloud says InUse before the guest has the device.
func waitLinkByMAC(ctx context.Context, mac string) error {
	want, err := net.ParseMAC(mac)
	if err != nil {
		return fmt.Errorf("ENI MAC %q: %w", mac, err)
	}
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("list links: %w", err)
		}
		for _, l := range links {
			if strings.EqualFold(l.Attrs().HardwareAddr.String(), want.String()) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no link with MAC %s appeared: %w", mac, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
