package render

import (
	"fmt"
	"net/netip"

	"github.com/terway-reconciler/terway/spec"
)

// Config is the agent configuration render needs. Every field has a default
// (Defaults) so that a cluster with no configuration renders in VPC mode.
type Config struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	// Mode is "vpc" (pod IPs from the node's podCIDR) or "eni-multi-ip"
	// (pod IPs are secondary IPs of ENIs).
	Mode string `json:"mode,omitempty"`
	// ServiceCIDR is routed through the host veth of exclusive-ENI pods, whose
	// own eth0 leads straight into the VPC and would bypass kube-proxy.
	ServiceCIDR string `json:"serviceCIDR,omitempty"`
	// MTU of pod interfaces. 1500 is the ECS ENI MTU.
	MTU int `json:"mtu,omitempty"`
	// MinPoolSize and MaxPoolSize bound the warm pool of idle ENI IPs: a
	// minimum keeps pod start fast, a maximum returns IPs to the vswitch.
	MinPoolSize int `json:"minPoolSize,omitempty"`
	MaxPoolSize int `json:"maxPoolSize,omitempty"`
	// MaxENIs (including the instance's primary ENI) and IPsPerENI (including
	// each ENI's primary IP) are the instance type's limits
	// (DescribeInstanceTypes EniQuantity and EniPrivateIpAddressQuantity).
	MaxENIs   int `json:"maxENIs,omitempty"`
	IPsPerENI int `json:"ipsPerENI,omitempty"`
}

// Defaults. The pool and limit defaults are those of ecs.g7.xlarge, a common
// node type (4 ENIs, 15 IPs each), so an unconfigured ENI node is plausible.
const (
	DefaultMode        = spec.PodModeVPC
	DefaultServiceCIDR = "10.96.0.0/12" // the Kubernetes default
	DefaultMTU         = 1500
	DefaultMinPoolSize = 0
	DefaultMaxPoolSize = 5
	DefaultMaxENIs     = 4
	DefaultIPsPerENI   = 15
)

// WithDefaults returns the configuration with every unset field defaulted.
func (c Config) WithDefaults() Config {
	if c.Mode == "" {
		c.Mode = DefaultMode
	}
	if c.ServiceCIDR == "" {
		c.ServiceCIDR = DefaultServiceCIDR
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.MaxPoolSize == 0 {
		c.MaxPoolSize = max(DefaultMaxPoolSize, c.MinPoolSize)
	}
	if c.MaxENIs == 0 {
		c.MaxENIs = DefaultMaxENIs
	}
	if c.IPsPerENI == 0 {
		c.IPsPerENI = DefaultIPsPerENI
	}
	return c
}

// Validate reports a configuration that cannot be rendered, naming the field.
func (c Config) Validate() error {
	switch {
	case c.Mode != spec.PodModeVPC && c.Mode != spec.PodModeENIMultiIP:
		return fmt.Errorf("config: mode: %q is not %q or %q", c.Mode, spec.PodModeVPC, spec.PodModeENIMultiIP)
	case c.MTU < 576 || c.MTU > 9000:
		return fmt.Errorf("config: mtu: %d is outside 576-9000", c.MTU)
	case c.MinPoolSize < 0 || c.MaxPoolSize < c.MinPoolSize:
		return fmt.Errorf("config: minPoolSize/maxPoolSize: need 0 <= min (%d) <= max (%d)", c.MinPoolSize, c.MaxPoolSize)
	case c.MaxENIs < 1 || c.MaxENIs > spec.ENITableMax-spec.ENITableBase:
		return fmt.Errorf("config: maxENIs: %d is outside 1-%d", c.MaxENIs, spec.ENITableMax-spec.ENITableBase)
	case c.IPsPerENI < 1:
		return fmt.Errorf("config: ipsPerENI: %d must be at least 1", c.IPsPerENI)
	}
	if p, err := netip.ParsePrefix(c.ServiceCIDR); err != nil || !p.Addr().Is4() {
		return fmt.Errorf("config: serviceCIDR: %q is not an IPv4 CIDR", c.ServiceCIDR)
	}
	return nil
}
