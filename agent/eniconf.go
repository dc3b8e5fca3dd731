package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/render"
)

// ENIConf is Terway's cloud configuration, the JSON document under key
// eni_conf of its ConfigMap kube-system/eni-config, read so that a Terway
// user's cluster keeps its settings. Only the fields that mean the same
// here are applied (see ENIConf.Native); the others are reported in
// NotApplied.
type ENIConf struct {
	Version        string
	AccessKey      string
	AccessSecret   eni.Secret
	CredentialPath string
	// ServiceCIDR is the IPv4 part of Terway's service_cidr ("v4[,v6]").
	ServiceCIDR string
	// VSwitches maps a zone to the vswitches tried, in order, for new ENIs
	// of nodes in that zone.
	VSwitches map[string][]string
	// SecurityGroup is security_group, or the one group of security_groups.
	SecurityGroup string
	// MinPoolSize and MaxPoolSize are nil when absent.
	MinPoolSize, MaxPoolSize *int
	ENITags                  map[string]string
	VSwitchSelectionPolicy   string
	// NotApplied lists the fields present that this agent ignores, with
	// why, sorted by field.
	NotApplied []NotApplied
}

// NotApplied is an eni_conf field the agent reads past.
type NotApplied struct{ Field, Reason string }

// eniConfFields are the eni_conf fields this agent applies, with the JSON
// type each must have (for the error).
var eniConfFields = map[string]string{
	"version": "a string", "access_key": "a string", "access_secret": "a string",
	"credential_path": "a string", "service_cidr": "a string",
	"vswitches": "an object of zone to list of vswitch ids", "security_group": "a string",
	"security_groups": "a list of strings", "min_pool_size": "an integer", "max_pool_size": "an integer",
	"eni_tags": "an object of string to string", "vswitch_selection_policy": "a string",
}

// Reasons for fields Terway knows and this agent does not apply.
const (
	reasonCredentialPath = "ACK's managed token file is not read; credentials come from access_key/access_secret, the environment or the instance's RAM role"
	reasonRandom         = "vswitches are tried in the order listed (a full one is skipped for a while), as with ordered"
	reasonIPv6           = "pods get IPv4 only; the IPv6 service range is not routed"
	reasonOther          = "not applicable to this agent"
)

// LoadENIConf reads and checks an eni_conf file (the mounted ConfigMap key).
func LoadENIConf(path string) (*ENIConf, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eni.conf: %w", err)
	}
	c, err := ParseENIConf(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseENIConf decodes an eni_conf document field by field, so that a
// malformed value is an error naming its field, and checks each value.
func ParseENIConf(data []byte) (*ENIConf, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(data), &raw); err != nil {
		return nil, fmt.Errorf("eni_conf: not a JSON object: %w", err)
	}
	var (
		c                     ENIConf
		secret                string
		sg                    string
		sgs                   []string
		serviceCIDR, selector string
	)
	dst := map[string]any{
		"version": &c.Version, "access_key": &c.AccessKey, "access_secret": &secret,
		"credential_path": &c.CredentialPath, "service_cidr": &serviceCIDR, "vswitches": &c.VSwitches,
		"security_group": &sg, "security_groups": &sgs, "min_pool_size": &c.MinPoolSize,
		"max_pool_size": &c.MaxPoolSize, "eni_tags": &c.ENITags, "vswitch_selection_policy": &selector,
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		p, ok := dst[k]
		if !ok {
			c.NotApplied = append(c.NotApplied, NotApplied{k, reasonOther})
			continue
		}
		if err := json.Unmarshal(raw[k], p); err != nil {
			got := string(raw[k])
			if k == "access_secret" {
				got = "[redacted]" // never print a secret, even a malformed one
			}
			return nil, fmt.Errorf("eni_conf: %s: want %s, got %s", k, eniConfFields[k], got)
		}
	}
	c.AccessSecret = eni.Secret(secret)
	c.VSwitchSelectionPolicy = selector
	if err := c.check(sg, sgs, serviceCIDR); err != nil {
		return nil, fmt.Errorf("eni_conf: %w", err)
	}
	slices.SortFunc(c.NotApplied, func(a, b NotApplied) int { return strings.Compare(a.Field, b.Field) })
	return &c, nil
}

// check validates the decoded values and settles security groups, service
// CIDR and the fields read but not applied.
func (c *ENIConf) check(sg string, sgs []string, serviceCIDR string) error {
	if c.Version != "" && c.Version != "1" {
		return fmt.Errorf("version: %q, want \"1\"", c.Version)
	}
	if (c.AccessKey == "") != (c.AccessSecret == "") {
		return fmt.Errorf("access_key/access_secret: set both or neither")
	}
	if c.CredentialPath != "" {
		c.NotApplied = append(c.NotApplied, NotApplied{"credential_path", reasonCredentialPath})
	}
	for _, part := range strings.Split(serviceCIDR, ",") {
		part = strings.TrimSpace(part)
		if part == "" && serviceCIDR == "" {
			break
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return fmt.Errorf("service_cidr: %q is not a CIDR", part)
		}
		switch {
		case p.Addr().Is6():
			c.NotApplied = append(c.NotApplied, NotApplied{"service_cidr", "IPv6 range " + part + ": " + reasonIPv6})
		case c.ServiceCIDR != "":
			return fmt.Errorf("service_cidr: two IPv4 ranges (%s, %s)", c.ServiceCIDR, part)
		default:
			c.ServiceCIDR = p.String()
		}
	}
	for _, zone := range slices.Sorted(maps.Keys(c.VSwitches)) {
		if strings.TrimSpace(zone) == "" {
			return fmt.Errorf("vswitches: empty zone name")
		}
		seen := map[string]bool{}
		for i, id := range c.VSwitches[zone] {
			if strings.TrimSpace(id) == "" || seen[id] {
				return fmt.Errorf("vswitches[%s][%d]: %q is empty or a duplicate", zone, i, id)
			}
			seen[id] = true
		}
	}
	// Terway gives new ENIs security_groups plus security_group; this
	// agent's ENIs carry one group, so more than one is refused rather
	// than silently narrowed (a missing group can block traffic).
	var groups []string
	for i, g := range sgs {
		if strings.TrimSpace(g) == "" {
			return fmt.Errorf("security_groups[%d]: empty", i)
		}
		if !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	if sg != "" && !slices.Contains(groups, sg) {
		groups = append(groups, sg)
	}
	if len(groups) > 1 {
		return fmt.Errorf("security_group/security_groups: %d groups (%s); this agent gives each ENI one security group: keep one", len(groups), strings.Join(groups, ", "))
	}
	if len(groups) == 1 {
		c.SecurityGroup = groups[0]
	}
	for _, f := range []struct {
		name string
		v    *int
	}{{"min_pool_size", c.MinPoolSize}, {"max_pool_size", c.MaxPoolSize}} {
		if f.v != nil && *f.v < 0 {
			return fmt.Errorf("%s: %d is negative", f.name, *f.v)
		}
	}
	if c.MinPoolSize != nil && c.MaxPoolSize != nil && *c.MinPoolSize > *c.MaxPoolSize {
		return fmt.Errorf("min_pool_size/max_pool_size: min %d is above max %d", *c.MinPoolSize, *c.MaxPoolSize)
	}
	for _, k := range slices.Sorted(maps.Keys(c.ENITags)) {
		if strings.TrimSpace(k) == "" || k == eni.TagOwner || k == eni.TagInstance || k == eni.TagExclusive {
			return fmt.Errorf("eni_tags: key %q is empty or reserved for ownership", k)
		}
	}
	switch c.VSwitchSelectionPolicy {
	case "", "ordered":
	case "random":
		c.NotApplied = append(c.NotApplied, NotApplied{"vswitch_selection_policy", "random: " + reasonRandom})
	default:
		return fmt.Errorf("vswitch_selection_policy: %q, want ordered or random", c.VSwitchSelectionPolicy)
	}
	return nil
}

// Native is the same configuration in this agent's terms: the CloudConfig
// and the render settings (service CIDR, pool sizes) it carries.
func (c *ENIConf) Native() (CloudConfig, render.Config) {
	cc := CloudConfig{
		APIVersion: "terway/v1", Kind: "CloudConfig",
		AccessKeyID: c.AccessKey, AccessKeySecret: string(c.AccessSecret),
		SecurityGroupID: c.SecurityGroup,
	}
	if len(c.VSwitches) > 0 {
		cc.ZoneVSwitchIDs = map[string][]string{}
		for z, ids := range c.VSwitches {
			cc.ZoneVSwitchIDs[z] = slices.Clone(ids)
		}
	}
	if len(c.ENITags) > 0 {
		cc.Tags = maps.Clone(c.ENITags)
	}
	var rc render.Config
	rc.ServiceCIDR = c.ServiceCIDR
	if c.MinPoolSize != nil {
		rc.MinPoolSize = *c.MinPoolSize
	}
	if c.MaxPoolSize != nil {
		rc.MaxPoolSize = *c.MaxPoolSize
	}
	return cc, rc
}

// MergeENIConf combines terwayd's own configuration (native, nil when no
// --cloud-config; rc from --config) with Terway's eni_conf (nil when not
// given). Our own wins field by field, with a log line for each eni_conf
// value it overrides; each field not applied is logged once. The result's
// security group must be set.
func MergeENIConf(native *CloudConfig, rc render.Config, ec *ENIConf, log *slog.Logger) (*CloudConfig, render.Config, error) {
	if ec == nil {
		return native, rc, nil
	}
	for _, n := range ec.NotApplied {
		log.Warn("eni.conf: field not applied", "field", n.Field, "reason", n.Reason)
	}
	cc, erc := ec.Native()
	if native == nil {
		if cc.SecurityGroupID == "" {
			return nil, rc, fmt.Errorf("eni.conf: security_group: empty (every ENI needs one)")
		}
		native = &cc
	} else {
		merged := *native
		overridden := func(field, ours string) {
			log.Info("eni.conf: our own configuration wins", "eniConfField", field, "cloudConfigField", ours)
		}
		if merged.AccessKeyID == "" && merged.AccessKeySecret == "" {
			merged.AccessKeyID, merged.AccessKeySecret = cc.AccessKeyID, cc.AccessKeySecret
		} else if cc.AccessKeyID != "" {
			overridden("access_key/access_secret", "accessKeyID/accessKeySecret")
		}
		if len(merged.VSwitchIDs) == 0 && len(merged.ZoneVSwitchIDs) == 0 {
			merged.ZoneVSwitchIDs = cc.ZoneVSwitchIDs
		} else if len(cc.ZoneVSwitchIDs) > 0 {
			overridden("vswitches", "vswitchIDs/zoneVSwitchIDs")
		}
		if cc.SecurityGroupID != "" && cc.SecurityGroupID != merged.SecurityGroupID {
			overridden("security_group", "securityGroupID")
		}
		if len(merged.Tags) == 0 {
			merged.Tags = cc.Tags
		} else if len(cc.Tags) > 0 {
			overridden("eni_tags", "tags")
		}
		native = &merged
	}
	for _, f := range []struct {
		eniConf, ours string
		dst           *int
		v             *int
	}{
		{"min_pool_size", "minPoolSize", &rc.MinPoolSize, ec.MinPoolSize},
		{"max_pool_size", "maxPoolSize", &rc.MaxPoolSize, ec.MaxPoolSize},
	} {
		switch {
		case f.v == nil:
		case *f.dst == 0:
			*f.dst = *f.v
		case *f.dst != *f.v:
			log.Info("eni.conf: our own configuration wins", "eniConfField", f.eniConf, "configField", f.ours)
		}
	}
	switch {
	case erc.ServiceCIDR == "":
	case rc.ServiceCIDR == "":
		rc.ServiceCIDR = erc.ServiceCIDR
	case rc.ServiceCIDR != erc.ServiceCIDR:
		log.Info("eni.conf: our own configuration wins", "eniConfField", "service_cidr", "configField", "serviceCIDR")
	}
	return native, rc, nil
}

// LoadCloudSources reads terwayd's cloud configuration from its own file
// (cloudPath) and Terway's eni_conf (eniConfPath), either or both ("" for
// absent), and merges them into rc as MergeENIConf does. It returns nil
// when neither is given.
func LoadCloudSources(cloudPath, eniConfPath string, rc render.Config, log *slog.Logger) (*CloudConfig, render.Config, error) {
	var native *CloudConfig
	if cloudPath != "" {
		c, err := LoadCloudConfig(cloudPath)
		if err != nil {
			return nil, rc, err
		}
		native = c
	}
	if eniConfPath == "" {
		return native, rc, nil
	}
	ec, err := LoadENIConf(eniConfPath)
	if err != nil {
		return nil, rc, err
	}
	if native != nil {
		log.Info("eni.conf: both --cloud-config and --eni-conf given; --cloud-config wins where both set a field", "cloudConfig", cloudPath, "eniConf", eniConfPath)
	}
	return MergeENIConf(native, rc, ec, log)
}
