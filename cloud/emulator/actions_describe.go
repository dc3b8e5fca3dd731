package emulator

import (
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The read-only actions: filters and both paging styles (MaxResults +
// NextToken, and PageNumber + PageSize).

type page struct {
	start, end           int
	nextToken            string
	pageNumber, pageSize int
}

// nextTokenOf makes an opaque token for the offset where the next page starts.
func nextTokenOf(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("emu-offset:" + strconv.Itoa(offset)))
}

// tokenPage pages by MaxResults/NextToken.
func tokenPage(p params, total, def, max int) (page, *apiError) {
	size, aerr := p.integer("MaxResults", def, 1, max)
	if aerr != nil {
		return page{}, aerr
	}
	start := 0
	if t := p.str("NextToken"); t != "" {
		raw, err := base64.RawURLEncoding.DecodeString(t)
		s, ok := strings.CutPrefix(string(raw), "emu-offset:")
		n, cerr := strconv.Atoi(s)
		if err != nil || !ok || cerr != nil || n < 0 {
			return page{}, invalid("NextToken", t, "not a token this API returned")
		}
		start = min(n, total)
	}
	end := min(start+size, total)
	pg := page{start: start, end: end, pageSize: size}
	if end < total {
		pg.nextToken = nextTokenOf(end)
	}
	return pg, nil
}

// numberPage pages by PageNumber/PageSize.
func numberPage(p params, total, def, max int) (page, *apiError) {
	num, aerr := p.integer("PageNumber", 1, 1, 1<<30)
	if aerr != nil {
		return page{}, aerr
	}
	size, aerr := p.integer("PageSize", def, 1, max)
	if aerr != nil {
		return page{}, aerr
	}
	start := min((num-1)*size, total)
	return page{start: start, end: min(start+size, total), pageNumber: num, pageSize: size}, nil
}

// tokenMode: the docs say PageNumber/PageSize apply unless MaxResults or NextToken is given.
func tokenMode(p params) bool { return p.str("MaxResults") != "" || p.str("NextToken") != "" }

type wireENIs struct {
	wireBase
	NextToken            string `json:"NextToken"`
	PageNumber           int    `json:"PageNumber"`
	PageSize             int    `json:"PageSize"`
	TotalCount           int    `json:"TotalCount"`
	NetworkInterfaceSets struct {
		NetworkInterfaceSet []wireENI `json:"NetworkInterfaceSet"`
	} `json:"NetworkInterfaceSets"`
}

// sortedENIs lists ENIs in creation order, so paging is stable.
func (e *Emulator) sortedENIs() []*eniState {
	out := make([]*eniState, 0, len(e.enis))
	for _, n := range e.enis {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *eniState) int { return a.seq - b.seq })
	return out
}

func hasTags(have []tag, want []tag) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Key == w.Key && (w.Value == "" || h.Value == w.Value) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (e *Emulator) describeNetworkInterfaces(c *call) (any, *apiError) {
	p := c.p
	ids, aerr := p.list("NetworkInterfaceId")
	if aerr != nil {
		return nil, aerr
	}
	if len(ids) > 100 {
		return nil, invalid("NetworkInterfaceId.N", strconv.Itoa(len(ids)), "at most 100 ids per call")
	}
	ips, aerr := p.addrs("PrivateIpAddress", 100)
	if aerr != nil {
		return nil, aerr
	}
	tags, aerr := p.tags()
	if aerr != nil {
		return nil, aerr
	}
	if v := p.str("Type"); v != "" && v != typePrimary && v != typeSecondary && v != typeTrunk && v != "Member" {
		return nil, invalid("Type", v, "must be Primary, Secondary, Trunk or Member")
	}
	if v := p.str("Status"); v != "" && !slices.Contains([]string{statusAvailable, statusAttaching, statusInUse, statusDetaching, statusDeleting}, v) {
		return nil, invalid("Status", v, "must be Available, Attaching, InUse, Detaching or Deleting")
	}
	match := func(n *eniState) bool {
		eq := func(name, have string) bool { v := p.str(name); return v == "" || v == have }
		if len(ids) > 0 && !slices.Contains(ids, n.id) {
			return false
		}
		if !eq("InstanceId", n.instanceID) || !eq("VpcId", e.world.VPC.ID) || !eq("VSwitchId", n.vsw.ID) ||
			!eq("Type", n.typ) || !eq("Status", n.status) || !eq("PrimaryIpAddress", n.primaryIP.String()) ||
			!eq("NetworkInterfaceName", n.name) {
			return false
		}
		if sg := p.str("SecurityGroupId"); sg != "" && !slices.Contains(n.securityGroups, sg) {
			return false
		}
		for _, a := range ips {
			if !n.hasIP(a) {
				return false
			}
		}
		return hasTags(n.tags, tags)
	}
	var all []*eniState
	for _, n := range e.sortedENIs() {
		if match(n) {
			all = append(all, n)
		}
	}
	var pg page
	if tokenMode(p) {
		pg, aerr = tokenPage(p, len(all), 500, 500)
	} else {
		pg, aerr = numberPage(p, len(all), 10, 100)
	}
	if aerr != nil {
		return nil, aerr
	}
	resp := wireENIs{wireBase: wireBase{RequestID: c.requestID}, NextToken: pg.nextToken,
		PageNumber: pg.pageNumber, PageSize: pg.pageSize, TotalCount: len(all)}
	resp.NetworkInterfaceSets.NetworkInterfaceSet = []wireENI{}
	for _, n := range all[pg.start:pg.end] {
		resp.NetworkInterfaceSets.NetworkInterfaceSet = append(resp.NetworkInterfaceSets.NetworkInterfaceSet, e.wireENIOf(n))
	}
	return resp, nil
}

type wireInstanceAttribute struct {
	wireBase
	wireInstanceCommon
	InnerIPAddress  wireIPAddresses `json:"InnerIpAddress"`
	PublicIPAddress wireIPAddresses `json:"PublicIpAddress"`
	IoOptimized     string          `json:"IoOptimized"`
}

func (e *Emulator) describeInstanceAttribute(c *call) (any, *apiError) {
	id, aerr := c.p.required("InstanceId")
	if aerr != nil {
		return nil, aerr
	}
	in, aerr := e.instance(id)
	if aerr != nil {
		return nil, aerr
	}
	return wireInstanceAttribute{
		wireBase: wireBase{RequestID: c.requestID}, wireInstanceCommon: e.wireInstanceCommonOf(in),
		InnerIPAddress: wireIPAddresses{IPAddress: []string{}}, PublicIPAddress: wireIPAddresses{IPAddress: []string{}},
		IoOptimized: "optimized",
	}, nil
}

type wireInstance struct {
	wireInstanceCommon
	InstanceTypeFamily string   `json:"InstanceTypeFamily"`
	Tags               wireTags `json:"Tags"`
	NetworkInterfaces  struct {
		NetworkInterface []wireInstanceENI `json:"NetworkInterface"`
	} `json:"NetworkInterfaces"`
	MetadataOptions struct {
		HTTPEndpoint string `json:"HttpEndpoint"`
		HTTPTokens   string `json:"HttpTokens"`
	} `json:"MetadataOptions"`
}

type wireInstances struct {
	wireBase
	NextToken  string `json:"NextToken"`
	PageNumber int    `json:"PageNumber"`
	PageSize   int    `json:"PageSize"`
	TotalCount int    `json:"TotalCount"`
	Instances  struct {
		Instance []wireInstance `json:"Instance"`
	} `json:"Instances"`
}

// jsonList reads a parameter that is a JSON array in one string
// (DescribeInstances' InstanceIds, PrivateIpAddresses).
func jsonList(p params, name string) ([]string, *apiError) {
	v := p.str(name)
	if v == "" {
		return nil, nil
	}
	var out []string
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return nil, invalid(name, v, "must be a JSON array of strings, e.g. [\"a\",\"b\"]")
	}
	if len(out) > 100 {
		return nil, invalid(name, v, "at most 100 values")
	}
	return out, nil
}

func (e *Emulator) describeInstances(c *call) (any, *apiError) {
	p := c.p
	ids, aerr := jsonList(p, "InstanceIds")
	if aerr != nil {
		return nil, aerr
	}
	ips, aerr := jsonList(p, "PrivateIpAddresses")
	if aerr != nil {
		return nil, aerr
	}
	var all []*instanceState
	for _, id := range e.instOrder {
		in := e.instances[id]
		eq := func(name, have string) bool { v := p.str(name); return v == "" || v == have }
		if (len(ids) > 0 && !slices.Contains(ids, in.ID)) || (len(ips) > 0 && !slices.Contains(ips, in.PrimaryIP)) {
			continue
		}
		if eq("VpcId", e.world.VPC.ID) && eq("VSwitchId", in.VSwitchID) && eq("ZoneId", in.ZoneID) &&
			eq("InstanceType", in.typ.ID) && eq("Status", in.Status) {
			all = append(all, in)
		}
	}
	var pg page
	if tokenMode(p) {
		pg, aerr = tokenPage(p, len(all), 10, 100)
	} else {
		pg, aerr = numberPage(p, len(all), 10, 100)
	}
	if aerr != nil {
		return nil, aerr
	}
	resp := wireInstances{wireBase: wireBase{RequestID: c.requestID}, NextToken: pg.nextToken,
		PageNumber: pg.pageNumber, PageSize: pg.pageSize, TotalCount: len(all)}
	resp.Instances.Instance = []wireInstance{}
	for _, in := range all[pg.start:pg.end] {
		w := wireInstance{wireInstanceCommon: e.wireInstanceCommonOf(in), InstanceTypeFamily: in.typ.Family, Tags: tagsOf(nil)}
		w.MetadataOptions.HTTPEndpoint = "enabled"
		w.MetadataOptions.HTTPTokens = in.HTTPTokens
		if w.MetadataOptions.HTTPTokens == "" {
			w.MetadataOptions.HTTPTokens = "optional"
		}
		w.NetworkInterfaces.NetworkInterface = []wireInstanceENI{}
		for _, n := range e.sortedENIs() {
			if n.instanceID != in.ID || (n.status != statusInUse && n.status != statusDetaching) {
				continue
			}
			w.NetworkInterfaces.NetworkInterface = append(w.NetworkInterfaces.NetworkInterface, wireInstanceENI{
				NetworkInterfaceID: n.id, Type: n.typ, MacAddress: n.mac, PrimaryIPAddress: n.primaryIP.String(),
				VSwitchID: n.vsw.ID, SecurityGroupIDs: wireSecurityGroupIDs{SecurityGroupID: append([]string{}, n.securityGroups...)},
				PrivateIPSets: privateIPsOf(n), IPv6Sets: wireIPv6Sets{IPv6Set: []struct{}{}},
				IPv4PrefixSets: wireIPv4PrefixSets{IPv4PrefixSet: []struct{}{}},
			})
		}
		resp.Instances.Instance = append(resp.Instances.Instance, w)
	}
	return resp, nil
}

type wireInstanceType struct {
	InstanceTypeID              string  `json:"InstanceTypeId"`
	InstanceTypeFamily          string  `json:"InstanceTypeFamily"`
	CPUCoreCount                int     `json:"CpuCoreCount"`
	MemorySize                  float64 `json:"MemorySize"`
	EniQuantity                 int     `json:"EniQuantity"`
	EniPrivateIPAddressQuantity int     `json:"EniPrivateIpAddressQuantity"`
	EniIPv6AddressQuantity      int     `json:"EniIpv6AddressQuantity"`
	EniTotalQuantity            int     `json:"EniTotalQuantity"`
	EniTrunkSupported           bool    `json:"EniTrunkSupported"`
	NetworkCardQuantity         int     `json:"NetworkCardQuantity"`
	CPUArchitecture             string  `json:"CpuArchitecture"`
}

type wireInstanceTypes struct {
	wireBase
	NextToken     string `json:"NextToken"`
	InstanceTypes struct {
		InstanceType []wireInstanceType `json:"InstanceType"`
	} `json:"InstanceTypes"`
}

func (e *Emulator) describeInstanceTypes(c *call) (any, *apiError) {
	p := c.p
	ids, aerr := p.list("InstanceTypes")
	if aerr != nil {
		return nil, aerr
	}
	minimum := map[string]int{}
	for _, name := range []string{"MinimumEniQuantity", "MinimumEniPrivateIpAddressQuantity", "MinimumEniIpv6AddressQuantity"} {
		if minimum[name], aerr = p.integer(name, 0, 0, 1<<20); aerr != nil {
			return nil, aerr
		}
	}
	var all []InstanceType
	for _, t := range e.world.InstanceTypes {
		if len(ids) > 0 && !slices.Contains(ids, t.ID) {
			continue
		}
		if f := p.str("InstanceTypeFamily"); f != "" && f != t.Family {
			continue
		}
		if t.ENIQuantity < minimum["MinimumEniQuantity"] || t.ENIPrivateIPAddressQuantity < minimum["MinimumEniPrivateIpAddressQuantity"] ||
			t.ENIIPv6AddressQuantity < minimum["MinimumEniIpv6AddressQuantity"] {
			continue
		}
		all = append(all, t)
	}
	pg, aerr := tokenPage(p, len(all), 1600, 1600)
	if aerr != nil {
		return nil, aerr
	}
	resp := wireInstanceTypes{wireBase: wireBase{RequestID: c.requestID}, NextToken: pg.nextToken}
	resp.InstanceTypes.InstanceType = []wireInstanceType{}
	for _, t := range all[pg.start:pg.end] {
		resp.InstanceTypes.InstanceType = append(resp.InstanceTypes.InstanceType, wireInstanceType{
			InstanceTypeID: t.ID, InstanceTypeFamily: t.Family, CPUCoreCount: t.CPU, MemorySize: t.MemoryGiB,
			EniQuantity: t.ENIQuantity, EniPrivateIPAddressQuantity: t.ENIPrivateIPAddressQuantity,
			EniIPv6AddressQuantity: t.ENIIPv6AddressQuantity, EniTotalQuantity: t.ENIQuantity,
			NetworkCardQuantity: 1, CPUArchitecture: "X86",
		})
	}
	return resp, nil
}

type wireVSwitch struct {
	VSwitchID               string   `json:"VSwitchId"`
	VpcID                   string   `json:"VpcId"`
	ZoneID                  string   `json:"ZoneId"`
	CidrBlock               string   `json:"CidrBlock"`
	AvailableIPAddressCount int64    `json:"AvailableIpAddressCount"`
	Status                  string   `json:"Status"`
	VSwitchName             string   `json:"VSwitchName"`
	IsDefault               bool     `json:"IsDefault"`
	CreationTime            string   `json:"CreationTime"`
	OwnerID                 int64    `json:"OwnerId"`
	EnabledIPv6             bool     `json:"EnabledIpv6"`
	Tags                    wireTags `json:"Tags"`
}

type wireVSwitches struct {
	wireBase
	PageNumber int `json:"PageNumber"`
	PageSize   int `json:"PageSize"`
	TotalCount int `json:"TotalCount"`
	VSwitches  struct {
		VSwitch []wireVSwitch `json:"VSwitch"`
	} `json:"VSwitches"`
}

func (e *Emulator) describeVSwitches(c *call) (any, *apiError) {
	p := c.p
	var all []*vswitchState
	for _, id := range e.vswOrder {
		vs := e.vswitches[id]
		eq := func(name, have string) bool { v := p.str(name); return v == "" || v == have }
		if eq("VSwitchId", vs.ID) && eq("VpcId", e.world.VPC.ID) && eq("ZoneId", vs.ZoneID) {
			all = append(all, vs)
		}
	}
	pg, aerr := numberPage(p, len(all), 10, 50)
	if aerr != nil {
		return nil, aerr
	}
	owner, _ := strconv.ParseInt(emulatorOwnerID, 10, 64)
	resp := wireVSwitches{wireBase: wireBase{RequestID: c.requestID}, PageNumber: pg.pageNumber, PageSize: pg.pageSize, TotalCount: len(all)}
	resp.VSwitches.VSwitch = []wireVSwitch{}
	for _, vs := range all[pg.start:pg.end] {
		resp.VSwitches.VSwitch = append(resp.VSwitches.VSwitch, wireVSwitch{
			VSwitchID: vs.ID, VpcID: e.world.VPC.ID, ZoneID: vs.ZoneID, CidrBlock: vs.CIDR,
			AvailableIPAddressCount: int64(vs.pool.available()), Status: "Available", VSwitchName: vs.ID,
			CreationTime: "2024-01-01T00:00:00Z", OwnerID: owner, Tags: tagsOf(nil),
		})
	}
	return resp, nil
}

// prefixOf is the vSwitch's network as a prefix.
func prefixOf(vs *vswitchState) netip.Prefix { return vs.pool.prefix }
