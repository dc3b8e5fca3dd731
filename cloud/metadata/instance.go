package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Instance is what the node learns about itself at start: enough to build
// the ENI reconciler's configuration and to know which ENI is the primary
// one (never touched).
type Instance struct {
	ID       string
	Type     string
	RegionID string
	ZoneID   string
	VPCID    string
	VPCCIDR  string
	// VSwitchID and VSwitchCIDR are the primary ENI's vswitch.
	VSwitchID   string
	VSwitchCIDR string
	// PrimaryMAC, PrimaryENIID and PrimaryIP describe the primary ENI (eth0).
	PrimaryMAC   string
	PrimaryENIID string
	PrimaryIP    string
}

// Instance reads the node's identity. The instance id, region, zone, MAC of
// the primary ENI, its vswitch and its ENI id are required; the rest is
// filled when the service has it.
func (c *Client) Instance(ctx context.Context) (Instance, error) {
	var in Instance
	fields := []struct {
		path     string
		dst      *string
		required bool
	}{
		{"instance-id", &in.ID, true},
		{"region-id", &in.RegionID, true},
		{"zone-id", &in.ZoneID, true},
		{"mac", &in.PrimaryMAC, true},
		{"vswitch-id", &in.VSwitchID, true},
		{"instance/instance-type", &in.Type, false},
		{"vpc-id", &in.VPCID, false},
		{"vpc-cidr-block", &in.VPCCIDR, false},
		{"vswitch-cidr-block", &in.VSwitchCIDR, false},
		{"private-ipv4", &in.PrimaryIP, false},
	}
	for _, f := range fields {
		v, err := c.Get(ctx, f.path)
		if err != nil {
			if !f.required && errors.Is(err, ErrNotFound) {
				continue
			}
			return Instance{}, fmt.Errorf("discover instance: %s: %w", f.path, err)
		}
		*f.dst = v
	}
	in.PrimaryMAC = strings.ToLower(in.PrimaryMAC)
	id, err := c.Get(ctx, macPath(in.PrimaryMAC, "network-interface-id"))
	if err != nil {
		return Instance{}, fmt.Errorf("discover instance %s: primary ENI of MAC %s: %w", in.ID, in.PrimaryMAC, err)
	}
	in.PrimaryENIID = id
	return in, nil
}

// ENI is what the metadata service says about one attached ENI.
type ENI struct {
	MAC         string
	ID          string
	PrimaryIP   string
	Gateway     string
	VSwitchID   string
	VSwitchCIDR string
	// IPv4s lists every IPv4 address of the ENI, the primary one included.
	IPv4s []string
}

// MACs lists the MACs of the ENIs attached to the instance (lower case).
// An ENI appears here once its attachment is done.
func (c *Client) MACs(ctx context.Context) ([]string, error) {
	macs, err := c.List(ctx, "network/interfaces/macs/")
	if err != nil {
		return nil, err
	}
	for i := range macs {
		macs[i] = strings.ToLower(macs[i])
	}
	return macs, nil
}

// ENI reads one attached ENI by MAC. The error wraps ErrNotFound while the
// ENI is not (yet) attached.
func (c *Client) ENI(ctx context.Context, mac string) (ENI, error) {
	mac = strings.ToLower(mac)
	e := ENI{MAC: mac}
	fields := []struct {
		name string
		dst  *string
	}{
		{"network-interface-id", &e.ID},
		{"gateway", &e.Gateway},
		{"vswitch-cidr-block", &e.VSwitchCIDR},
		{"vswitch-id", &e.VSwitchID},
		{"primary-ip-address", &e.PrimaryIP},
	}
	for _, f := range fields {
		v, err := c.Get(ctx, macPath(mac, f.name))
		if err != nil {
			return ENI{}, fmt.Errorf("ENI with MAC %s: %w", mac, err)
		}
		*f.dst = v
	}
	if a, err := netip.ParseAddr(e.Gateway); err != nil || !a.Is4() {
		return ENI{}, fmt.Errorf("ENI with MAC %s: gateway: %q is not an IPv4 address", mac, e.Gateway)
	}
	if p, err := netip.ParsePrefix(e.VSwitchCIDR); err != nil || !p.Addr().Is4() {
		return ENI{}, fmt.Errorf("ENI with MAC %s: vswitch-cidr-block: %q is not an IPv4 CIDR", mac, e.VSwitchCIDR)
	}
	raw, err := c.Get(ctx, macPath(mac, "private-ipv4s"))
	if err != nil {
		return ENI{}, fmt.Errorf("ENI with MAC %s: %w", mac, err)
	}
	// The service answers a JSON array of quoted addresses.
	if err := json.Unmarshal([]byte(raw), &e.IPv4s); err != nil {
		return ENI{}, fmt.Errorf("ENI with MAC %s: private-ipv4s: %q is not a JSON list of addresses: %w", mac, firstLine(raw), err)
	}
	return e, nil
}

func macPath(mac, leaf string) string {
	return "network/interfaces/macs/" + mac + "/" + leaf
}
