package emulator

import (
	"net/netip"
)

// Response documents, with the cloud's field names and nesting (lists are
// wrapped: "Xs": {"X": [...]}). The SDK decodes them case-sensitively, so
// the names here are the contract; tests decode them with the real SDK.

const cloudTime = "2006-01-02T15:04:05Z"

// emulatorOwnerID is the account id the emulated resources belong to.
const emulatorOwnerID = "1000000000000001"

type wireBase struct {
	RequestID string `json:"RequestId"`
}

type wireTag struct {
	Key      string `json:"Key"`
	Value    string `json:"Value"`
	TagKey   string `json:"TagKey"`
	TagValue string `json:"TagValue"`
}

type wireTags struct {
	Tag []wireTag `json:"Tag"`
}

type wireSecurityGroupIDs struct {
	SecurityGroupID []string `json:"SecurityGroupId"`
}

type wirePrivateIP struct {
	PrivateIPAddress string `json:"PrivateIpAddress"`
	Primary          bool   `json:"Primary"`
}

type wirePrivateIPSets struct {
	PrivateIPSet []wirePrivateIP `json:"PrivateIpSet"`
}

type wireIPv6Sets struct {
	IPv6Set []struct{} `json:"Ipv6Set"`
}

type wireIPv4PrefixSets struct {
	IPv4PrefixSet []struct{} `json:"Ipv4PrefixSet"`
}

type wireAttachment struct {
	InstanceID       string `json:"InstanceId,omitempty"`
	DeviceIndex      int    `json:"DeviceIndex"`
	NetworkCardIndex int    `json:"NetworkCardIndex"`
	AttachedTime     string `json:"AttachedTime,omitempty"`
}

func tagsOf(ts []tag) wireTags {
	out := wireTags{Tag: []wireTag{}}
	for _, t := range ts {
		out.Tag = append(out.Tag, wireTag{Key: t.Key, Value: t.Value, TagKey: t.Key, TagValue: t.Value})
	}
	return out
}

func privateIPsOf(n *eniState) wirePrivateIPSets {
	out := wirePrivateIPSets{PrivateIPSet: []wirePrivateIP{{PrivateIPAddress: n.primaryIP.String(), Primary: true}}}
	for _, a := range n.secondary {
		out.PrivateIPSet = append(out.PrivateIPSet, wirePrivateIP{PrivateIPAddress: a.String()})
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// wireCreatedENI is CreateNetworkInterface's response.
type wireCreatedENI struct {
	wireBase
	NetworkInterfaceID   string               `json:"NetworkInterfaceId"`
	Status               string               `json:"Status"`
	Type                 string               `json:"Type"`
	VpcID                string               `json:"VpcId"`
	VSwitchID            string               `json:"VSwitchId"`
	ZoneID               string               `json:"ZoneId"`
	MacAddress           string               `json:"MacAddress"`
	PrivateIPAddress     string               `json:"PrivateIpAddress"`
	NetworkInterfaceName string               `json:"NetworkInterfaceName"`
	Description          string               `json:"Description"`
	OwnerID              string               `json:"OwnerId"`
	SourceDestCheck      bool                 `json:"SourceDestCheck"`
	SecurityGroupIDs     wireSecurityGroupIDs `json:"SecurityGroupIds"`
	PrivateIPSets        wirePrivateIPSets    `json:"PrivateIpSets"`
	IPv6Sets             wireIPv6Sets         `json:"Ipv6Sets"`
	IPv4PrefixSets       wireIPv4PrefixSets   `json:"Ipv4PrefixSets"`
	Tags                 wireTags             `json:"Tags"`
}

// wireENI is one NetworkInterfaceSet of DescribeNetworkInterfaces.
type wireENI struct {
	NetworkInterfaceID          string               `json:"NetworkInterfaceId"`
	Status                      string               `json:"Status"`
	Type                        string               `json:"Type"`
	InstanceID                  string               `json:"InstanceId"`
	VpcID                       string               `json:"VpcId"`
	VSwitchID                   string               `json:"VSwitchId"`
	ZoneID                      string               `json:"ZoneId"`
	MacAddress                  string               `json:"MacAddress"`
	PrivateIPAddress            string               `json:"PrivateIpAddress"`
	CreationTime                string               `json:"CreationTime"`
	Description                 string               `json:"Description"`
	NetworkInterfaceName        string               `json:"NetworkInterfaceName"`
	NetworkInterfaceTrafficMode string               `json:"NetworkInterfaceTrafficMode"`
	OwnerID                     string               `json:"OwnerId"`
	DeleteOnRelease             bool                 `json:"DeleteOnRelease"`
	SecurityGroupIDs            wireSecurityGroupIDs `json:"SecurityGroupIds"`
	Attachment                  wireAttachment       `json:"Attachment"`
	PrivateIPSets               wirePrivateIPSets    `json:"PrivateIpSets"`
	IPv6Sets                    wireIPv6Sets         `json:"Ipv6Sets"`
	IPv4PrefixSets              wireIPv4PrefixSets   `json:"Ipv4PrefixSets"`
	Tags                        wireTags             `json:"Tags"`
}

func (e *Emulator) wireENIOf(n *eniState) wireENI {
	w := wireENI{
		NetworkInterfaceID: n.id, Status: n.status, Type: n.typ, InstanceID: n.instanceID,
		VpcID: e.world.VPC.ID, VSwitchID: n.vsw.ID, ZoneID: n.vsw.ZoneID, MacAddress: n.mac,
		PrivateIPAddress: n.primaryIP.String(), CreationTime: n.created.UTC().Format(cloudTime),
		Description: n.desc, NetworkInterfaceName: n.name, NetworkInterfaceTrafficMode: n.trafficMode,
		OwnerID: emulatorOwnerID, DeleteOnRelease: n.typ == typePrimary,
		SecurityGroupIDs: wireSecurityGroupIDs{SecurityGroupID: append([]string{}, n.securityGroups...)},
		PrivateIPSets:    privateIPsOf(n), IPv6Sets: wireIPv6Sets{IPv6Set: []struct{}{}},
		IPv4PrefixSets: wireIPv4PrefixSets{IPv4PrefixSet: []struct{}{}}, Tags: tagsOf(n.tags),
	}
	if n.instanceID != "" {
		w.Attachment = wireAttachment{InstanceID: n.instanceID, DeviceIndex: n.deviceIndex}
		if !n.attachedAt.IsZero() {
			w.Attachment.AttachedTime = n.attachedAt.UTC().Format(cloudTime)
		}
	}
	return w
}

// wireInstanceENI is one NetworkInterface of DescribeInstances.
type wireInstanceENI struct {
	NetworkInterfaceID string               `json:"NetworkInterfaceId"`
	Type               string               `json:"Type"`
	MacAddress         string               `json:"MacAddress"`
	PrimaryIPAddress   string               `json:"PrimaryIpAddress"`
	VSwitchID          string               `json:"VSwitchId"`
	SecurityGroupIDs   wireSecurityGroupIDs `json:"SecurityGroupIds"`
	PrivateIPSets      wirePrivateIPSets    `json:"PrivateIpSets"`
	IPv6Sets           wireIPv6Sets         `json:"Ipv6Sets"`
	IPv4PrefixSets     wireIPv4PrefixSets   `json:"Ipv4PrefixSets"`
}

type wireIPAddresses struct {
	IPAddress []string `json:"IpAddress"`
}

type wireVpcAttributes struct {
	VpcID            string          `json:"VpcId"`
	VSwitchID        string          `json:"VSwitchId"`
	NatIPAddress     string          `json:"NatIpAddress"`
	PrivateIPAddress wireIPAddresses `json:"PrivateIpAddress"`
}

// wireInstanceCommon are the fields DescribeInstanceAttribute and
// DescribeInstances share.
type wireInstanceCommon struct {
	InstanceID          string               `json:"InstanceId"`
	InstanceName        string               `json:"InstanceName"`
	InstanceType        string               `json:"InstanceType"`
	Status              string               `json:"Status"`
	RegionID            string               `json:"RegionId"`
	ZoneID              string               `json:"ZoneId"`
	CPU                 int                  `json:"Cpu"`
	Memory              int                  `json:"Memory"`
	HostName            string               `json:"HostName"`
	InstanceNetworkType string               `json:"InstanceNetworkType"`
	CreationTime        string               `json:"CreationTime"`
	SecurityGroupIDs    wireSecurityGroupIDs `json:"SecurityGroupIds"`
	VpcAttributes       wireVpcAttributes    `json:"VpcAttributes"`
}

func (e *Emulator) wireInstanceCommonOf(in *instanceState) wireInstanceCommon {
	host := in.Hostname
	if host == "" {
		host = in.ID
	}
	return wireInstanceCommon{
		InstanceID: in.ID, InstanceName: host, InstanceType: in.typ.ID, Status: in.Status,
		RegionID: e.world.RegionID, ZoneID: in.ZoneID, CPU: in.typ.CPU, Memory: int(in.typ.MemoryGiB * 1024),
		HostName: host, InstanceNetworkType: "vpc", CreationTime: in.created.UTC().Format(cloudTime),
		SecurityGroupIDs: wireSecurityGroupIDs{SecurityGroupID: []string{e.world.SecurityGroupID}},
		VpcAttributes: wireVpcAttributes{
			VpcID: e.world.VPC.ID, VSwitchID: in.VSwitchID,
			PrivateIPAddress: wireIPAddresses{IPAddress: []string{in.PrimaryIP}},
		},
	}
}
