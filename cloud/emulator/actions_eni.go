package emulator

import (
	"net/netip"
	"strconv"
)

// The ENI-changing actions. Each parses and checks its parameters in the
// order the cloud documents them, then calls the state machine in state.go.

// createMaxSecondary is the cloud's limit of secondary IPs at creation.
const createMaxSecondary = 49

// unsupported refuses parameters for features the emulator does not model
// (IPv6, prefixes), loudly rather than by silently ignoring them.
func unsupported(p params, names ...string) *apiError {
	for _, n := range names {
		if v := p.str(n); v != "" && v != "0" {
			return errf("UnsupportedParameter", "The parameter %q (%q) is not supported by the emulator.", n, v)
		}
		if vs, _ := p.list(n); len(vs) > 0 {
			return errf("UnsupportedParameter", "The parameter %q.N is not supported by the emulator.", n)
		}
	}
	return nil
}

func (e *Emulator) createNetworkInterface(c *call) (any, *apiError) {
	if body, aerr, ok := e.replay(c); ok {
		return body, aerr
	}
	p := c.p
	vswID, aerr := p.required("VSwitchId")
	if aerr != nil {
		return nil, aerr
	}
	sgs, aerr := p.list("SecurityGroupIds")
	if aerr != nil {
		return nil, aerr
	}
	switch sg := p.str("SecurityGroupId"); {
	case sg != "" && len(sgs) > 0:
		return nil, invalid("SecurityGroupIds.N", sgs[0], "SecurityGroupId and SecurityGroupIds.N are mutually exclusive")
	case sg == "" && len(sgs) == 0:
		return nil, missing("SecurityGroupId")
	case sg != "":
		sgs = []string{sg}
	}
	for _, sg := range sgs {
		if sg != e.world.SecurityGroupID {
			return nil, errf(codeSGNotFound, "The specified security group %s does not exist in VPC %s.", sg, e.world.VPC.ID)
		}
	}
	typ := p.str("InstanceType")
	switch typ {
	case "":
		typ = typeSecondary
	case typeSecondary, typeTrunk:
	default:
		return nil, invalid("InstanceType", typ, "the ENI type must be Secondary or Trunk")
	}
	mode := p.str("NetworkInterfaceTrafficMode")
	switch mode {
	case "":
		mode = "Standard"
	case "Standard", "HighPerformance":
	default:
		return nil, invalid("NetworkInterfaceTrafficMode", mode, "must be Standard or HighPerformance")
	}
	count, aerr := p.integer("SecondaryPrivateIpAddressCount", 0, 0, createMaxSecondary)
	if aerr != nil {
		return nil, aerr
	}
	explicit, aerr := p.addrs("PrivateIpAddress", createMaxSecondary)
	if aerr != nil {
		return nil, aerr
	}
	if count > 0 && len(explicit) > 0 {
		return nil, invalid("SecondaryPrivateIpAddressCount", strconv.Itoa(count), "SecondaryPrivateIpAddressCount and PrivateIpAddress.N are mutually exclusive")
	}
	var primary netip.Addr
	if s := p.str("PrimaryIpAddress"); s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, invalid("PrimaryIpAddress", s, "not an IPv4 address")
		}
		primary = a
	}
	if aerr := unsupported(p, "Ipv6AddressCount", "Ipv6Address", "Ipv4PrefixCount", "Ipv4Prefix", "Ipv6PrefixCount", "Ipv6Prefix"); aerr != nil {
		return nil, aerr
	}
	tags, aerr := p.tags()
	if aerr != nil {
		return nil, aerr
	}
	vsw, ok := e.vswitches[vswID]
	if !ok {
		return nil, errf(codeVSwitchNotFound, "The specified vSwitch %s does not exist in region %s.", vswID, e.world.RegionID)
	}
	if max := e.maxENIs(); len(e.enis) >= max {
		return nil, errf(codeMaxENICount, "The account already has %d ENIs in region %s, its quota.", len(e.enis), e.world.RegionID)
	}
	n, aerr := e.addENI(vsw, typ, primary, explicit, count, c.now)
	if aerr != nil {
		return nil, aerr
	}
	n.tags, n.securityGroups, n.trafficMode = tags, sgs, mode
	n.name, n.desc = p.str("NetworkInterfaceName"), p.str("Description")
	e.log.Debug("ENI created", "eni", n.id, "vswitch", vsw.ID, "ips", len(n.ips()))
	return e.remember(c, wireCreatedENI{
		wireBase:           wireBase{RequestID: c.requestID},
		NetworkInterfaceID: n.id, Status: n.status, Type: n.typ, VpcID: e.world.VPC.ID,
		VSwitchID: vsw.ID, ZoneID: vsw.ZoneID, MacAddress: n.mac, PrivateIPAddress: n.primaryIP.String(),
		NetworkInterfaceName: n.name, Description: n.desc, OwnerID: emulatorOwnerID, SourceDestCheck: false,
		SecurityGroupIDs: wireSecurityGroupIDs{SecurityGroupID: append([]string{}, sgs...)},
		PrivateIPSets:    privateIPsOf(n), IPv6Sets: wireIPv6Sets{IPv6Set: []struct{}{}},
		IPv4PrefixSets: wireIPv4PrefixSets{IPv4PrefixSet: []struct{}{}}, Tags: tagsOf(n.tags),
	})
}

func (e *Emulator) maxENIs() int {
	if e.world.MaxENIs > 0 {
		return e.world.MaxENIs
	}
	return defaultMaxENIs
}

// eniAndInstance reads and resolves NetworkInterfaceId and InstanceId.
func (e *Emulator) eniAndInstance(p params) (*eniState, *instanceState, *apiError) {
	eniID, aerr := p.required("NetworkInterfaceId")
	if aerr != nil {
		return nil, nil, aerr
	}
	instID, aerr := p.required("InstanceId")
	if aerr != nil {
		return nil, nil, aerr
	}
	n, aerr := e.eni(eniID)
	if aerr != nil {
		return nil, nil, aerr
	}
	in, aerr := e.instance(instID)
	if aerr != nil {
		return nil, nil, aerr
	}
	return n, in, nil
}

func (e *Emulator) attachNetworkInterface(c *call) (any, *apiError) {
	if aerr := unsupported(c.p, "TrunkNetworkInstanceId"); aerr != nil {
		return nil, aerr
	}
	if _, aerr := c.p.integer("NetworkCardIndex", 0, 0, 0); aerr != nil {
		return nil, aerr
	}
	n, in, aerr := e.eniAndInstance(c.p)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := e.attach(n, in); aerr != nil {
		return nil, aerr
	}
	e.log.Debug("ENI attaching", "eni", n.id, "instance", in.ID, "deviceIndex", n.deviceIndex)
	return wireBase{RequestID: c.requestID}, nil
}

func (e *Emulator) detachNetworkInterface(c *call) (any, *apiError) {
	if aerr := unsupported(c.p, "TrunkNetworkInstanceId"); aerr != nil {
		return nil, aerr
	}
	n, in, aerr := e.eniAndInstance(c.p)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := e.detach(n, in.ID); aerr != nil {
		return nil, aerr
	}
	e.log.Debug("ENI detaching", "eni", n.id, "instance", in.ID)
	return wireBase{RequestID: c.requestID}, nil
}

func (e *Emulator) deleteNetworkInterface(c *call) (any, *apiError) {
	id, aerr := c.p.required("NetworkInterfaceId")
	if aerr != nil {
		return nil, aerr
	}
	n, aerr := e.eni(id)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := e.remove(n); aerr != nil {
		return nil, aerr
	}
	e.log.Debug("ENI deleting", "eni", n.id)
	return wireBase{RequestID: c.requestID}, nil
}

type wireAssignedSet struct {
	NetworkInterfaceID string `json:"NetworkInterfaceId"`
	PrivateIPSet       struct {
		PrivateIPAddress []string `json:"PrivateIpAddress"`
	} `json:"PrivateIpSet"`
	IPv4PrefixSet struct {
		IPv4Prefixes []string `json:"Ipv4Prefixes"`
	} `json:"Ipv4PrefixSet"`
}

type wireAssigned struct {
	wireBase
	AssignedPrivateIPAddressesSet wireAssignedSet `json:"AssignedPrivateIpAddressesSet"`
}

// maxAssignPerCall bounds one AssignPrivateIpAddresses call; the ENI's
// quota is the real limit, this only rejects absurd input.
const maxAssignPerCall = 1000

func (e *Emulator) assignPrivateIPAddresses(c *call) (any, *apiError) {
	if body, aerr, ok := e.replay(c); ok {
		return body, aerr
	}
	id, aerr := c.p.required("NetworkInterfaceId")
	if aerr != nil {
		return nil, aerr
	}
	count, aerr := c.p.integer("SecondaryPrivateIpAddressCount", 0, 1, maxAssignPerCall)
	if aerr != nil {
		return nil, aerr
	}
	explicit, aerr := c.p.addrs("PrivateIpAddress", maxAssignPerCall)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := unsupported(c.p, "Ipv4PrefixCount", "Ipv4Prefix"); aerr != nil {
		return nil, aerr
	}
	switch {
	case count > 0 && len(explicit) > 0:
		return nil, invalid("SecondaryPrivateIpAddressCount", strconv.Itoa(count), "SecondaryPrivateIpAddressCount and PrivateIpAddress.N are mutually exclusive")
	case count == 0 && len(explicit) == 0:
		return nil, missing("SecondaryPrivateIpAddressCount")
	}
	n, aerr := e.eni(id)
	if aerr != nil {
		return nil, aerr
	}
	added, aerr := e.assign(n, count, explicit, c.now)
	if aerr != nil {
		return nil, aerr
	}
	e.log.Debug("IPs assigned", "eni", n.id, "count", len(added))
	e.notifyIPs(c, n)
	resp := wireAssigned{wireBase: wireBase{RequestID: c.requestID}}
	resp.AssignedPrivateIPAddressesSet.NetworkInterfaceID = n.id
	resp.AssignedPrivateIPAddressesSet.PrivateIPSet.PrivateIPAddress = addrStrings(added)
	resp.AssignedPrivateIPAddressesSet.IPv4PrefixSet.IPv4Prefixes = []string{}
	return e.remember(c, resp)
}

// maxUnassignPerCall is the cloud's limit of PrivateIpAddress.N.
const maxUnassignPerCall = 32

func (e *Emulator) unassignPrivateIPAddresses(c *call) (any, *apiError) {
	id, aerr := c.p.required("NetworkInterfaceId")
	if aerr != nil {
		return nil, aerr
	}
	ips, aerr := c.p.addrs("PrivateIpAddress", maxUnassignPerCall)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := unsupported(c.p, "Ipv4Prefix"); aerr != nil {
		return nil, aerr
	}
	if len(ips) == 0 {
		return nil, missing("PrivateIpAddress.1")
	}
	n, aerr := e.eni(id)
	if aerr != nil {
		return nil, aerr
	}
	if aerr := e.unassign(n, ips); aerr != nil {
		return nil, aerr
	}
	e.log.Debug("IPs unassigned", "eni", n.id, "count", len(ips))
	e.notifyIPs(c, n)
	return wireBase{RequestID: c.requestID}, nil
}
