package eni

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"
)

// Actions, as the cloud names them (and as Counters counts them).
const (
	actionDescribeInstance = "DescribeInstanceAttribute"
	actionDescribeTypes    = "DescribeInstanceTypes"
	actionDescribeENIs     = "DescribeNetworkInterfaces"
	actionDescribeVSwitch  = "DescribeVSwitches"
	actionCreate           = "CreateNetworkInterface"
	actionAttach           = "AttachNetworkInterface"
	actionDetach           = "DetachNetworkInterface"
	actionDelete           = "DeleteNetworkInterface"
	actionAssign           = "AssignPrivateIpAddresses"
	actionUnassign         = "UnassignPrivateIpAddresses"
)

// ENI statuses and types, as the cloud spells them.
const (
	statusAvailable = "Available"
	statusAttaching = "Attaching"
	statusInUse     = "InUse"
	statusDetaching = "Detaching"
	statusDeleting  = "Deleting"
	typePrimary     = "Primary"
)

// cloudENI is one ENI as the API describes it.
type cloudENI struct {
	ID          string
	MAC         string
	Type        string
	Status      string
	InstanceID  string
	DeviceIndex int
	VSwitchID   string
	PrimaryIP   string
	// IPs lists every IPv4 address, the primary one first.
	IPs  []string
	Tags map[string]string
}

func fromDescribe(s ecs.NetworkInterfaceSet) cloudENI {
	e := cloudENI{
		ID: s.NetworkInterfaceId, MAC: strings.ToLower(s.MacAddress), Type: s.Type, Status: s.Status,
		InstanceID: s.InstanceId, DeviceIndex: s.Attachment.DeviceIndex, VSwitchID: s.VSwitchId,
		PrimaryIP: s.PrivateIpAddress, Tags: map[string]string{},
	}
	if e.InstanceID == "" {
		e.InstanceID = s.Attachment.InstanceId
	}
	e.IPs = ipList(e.PrimaryIP, s.PrivateIpSets.PrivateIpSet)
	for _, t := range s.Tags.Tag {
		k, v := t.Key, t.Value
		if k == "" {
			k, v = t.TagKey, t.TagValue
		}
		e.Tags[k] = v
	}
	return e
}

func ipList(primary string, set []ecs.PrivateIpSet) []string {
	out := []string{}
	if primary != "" {
		out = append(out, primary)
	}
	for _, p := range set {
		if p.PrivateIpAddress != "" && !slices.Contains(out, p.PrivateIpAddress) {
			out = append(out, p.PrivateIpAddress)
		}
	}
	return out
}

// newToken returns a ClientToken: random, so that two intended operations
// never share one, and kept by the caller across retries of one operation,
// so that a repeat after a lost answer returns the first result.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// instanceType asks the cloud for the instance's type.
func (a *api) instanceType(ctx context.Context, instanceID string) (string, error) {
	var typ string
	err := a.callECS(ctx, actionDescribeInstance, func(c *ecs.Client) error {
		req := ecs.CreateDescribeInstanceAttributeRequest()
		req.InstanceId = instanceID
		resp, err := c.DescribeInstanceAttribute(req)
		if err == nil {
			typ = resp.InstanceType
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("instance %s: read its type: %w", instanceID, err)
	}
	if typ == "" {
		return "", fmt.Errorf("instance %s: InstanceType: empty in DescribeInstanceAttribute", instanceID)
	}
	return typ, nil
}

// limits reads the ENI quotas of an instance type.
func (a *api) limits(ctx context.Context, typ string) (Limits, error) {
	var found []ecs.InstanceType
	err := a.callECS(ctx, actionDescribeTypes, func(c *ecs.Client) error {
		req := ecs.CreateDescribeInstanceTypesRequest()
		req.InstanceTypes = &[]string{typ}
		resp, err := c.DescribeInstanceTypes(req)
		if err == nil {
			found = resp.InstanceTypes.InstanceType
		}
		return err
	})
	if err != nil {
		return Limits{}, fmt.Errorf("instance type %s: read its ENI limits: %w", typ, err)
	}
	for _, t := range found {
		if t.InstanceTypeId != typ {
			continue
		}
		l := Limits{MaxENIs: t.EniQuantity, IPsPerENI: t.EniPrivateIpAddressQuantity}
		if l.MaxENIs < 1 || l.IPsPerENI < 1 {
			return Limits{}, fmt.Errorf("instance type %s: EniQuantity %d / EniPrivateIpAddressQuantity %d: both must be at least 1", typ, l.MaxENIs, l.IPsPerENI)
		}
		return l, nil
	}
	return Limits{}, fmt.Errorf("instance type %s: not in DescribeInstanceTypes", typ)
}

// eniQuery filters DescribeNetworkInterfaces; empty fields do not filter.
type eniQuery struct {
	InstanceID string
	IDs        []string
	Tags       map[string]string
	Status     string
}

// describePage is the page size asked for; 100 is the documented maximum.
const describePage = 100

// describeENIs lists the ENIs matching q, every page. The cloud simply
// omits unknown ids.
func (a *api) describeENIs(ctx context.Context, q eniQuery) ([]cloudENI, error) {
	if len(q.IDs) > describePage {
		var out []cloudENI
		for ids := range slices.Chunk(q.IDs, describePage) {
			sub := q
			sub.IDs = ids
			part, err := a.describeENIs(ctx, sub)
			if err != nil {
				return nil, err
			}
			out = append(out, part...)
		}
		return out, nil
	}
	var out []cloudENI
	token := ""
	for page := 1; ; page++ {
		var resp *ecs.DescribeNetworkInterfacesResponse
		err := a.callECS(ctx, actionDescribeENIs, func(c *ecs.Client) error {
			req := ecs.CreateDescribeNetworkInterfacesRequest()
			req.InstanceId, req.Status, req.NextToken = q.InstanceID, q.Status, token
			req.MaxResults = requests.NewInteger(describePage)
			if len(q.IDs) > 0 {
				ids := slices.Clone(q.IDs)
				req.NetworkInterfaceId = &ids
			}
			if len(q.Tags) > 0 {
				tags := make([]ecs.DescribeNetworkInterfacesTag, 0, len(q.Tags))
				for _, k := range sortedKeys(q.Tags) {
					tags = append(tags, ecs.DescribeNetworkInterfacesTag{Key: k, Value: q.Tags[k]})
				}
				req.Tag = &tags
			}
			var err error
			resp, err = c.DescribeNetworkInterfaces(req)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("describe ENIs (%s): %w", q, err)
		}
		for _, s := range resp.NetworkInterfaceSets.NetworkInterfaceSet {
			out = append(out, fromDescribe(s))
		}
		if resp.NextToken == "" || resp.NextToken == token || len(resp.NetworkInterfaceSets.NetworkInterfaceSet) == 0 {
			return out, nil
		}
		if page > 1000 {
			return nil, fmt.Errorf("describe ENIs (%s): more than 1000 pages; the cloud keeps answering NextToken", q)
		}
		token = resp.NextToken
	}
}

func (q eniQuery) String() string {
	var parts []string
	if q.InstanceID != "" {
		parts = append(parts, "instance "+q.InstanceID)
	}
	if len(q.IDs) > 0 {
		parts = append(parts, "ids "+strings.Join(q.IDs, ","))
	}
	if len(q.Tags) > 0 {
		parts = append(parts, fmt.Sprintf("%d tags", len(q.Tags)))
	}
	if q.Status != "" {
		parts = append(parts, "status "+q.Status)
	}
	return strings.Join(parts, ", ")
}

// createRequest is one ENI to create.
type createRequest struct {
	VSwitchID       string
	SecurityGroupID string
	// IPs counts the addresses, the ENI's primary one included.
	IPs   int
	Tags  map[string]string
	Token string
	Name  string
}

// create makes an ENI; a repeat with the same token returns the same ENI.
func (a *api) create(ctx context.Context, r createRequest) (cloudENI, error) {
	var out cloudENI
	err := a.callECS(ctx, actionCreate, func(c *ecs.Client) error {
		req := ecs.CreateCreateNetworkInterfaceRequest()
		req.VSwitchId, req.SecurityGroupId, req.ClientToken = r.VSwitchID, r.SecurityGroupID, r.Token
		req.NetworkInterfaceName, req.Description = r.Name, "created by "+OwnerValue
		req.InstanceType = "Secondary"
		if r.IPs > 1 {
			req.SecondaryPrivateIpAddressCount = requests.NewInteger(r.IPs - 1)
		}
		tags := make([]ecs.CreateNetworkInterfaceTag, 0, len(r.Tags))
		for _, k := range sortedKeys(r.Tags) {
			tags = append(tags, ecs.CreateNetworkInterfaceTag{Key: k, Value: r.Tags[k]})
		}
		req.Tag = &tags
		resp, err := c.CreateNetworkInterface(req)
		if err != nil {
			return err
		}
		out = cloudENI{
			ID: resp.NetworkInterfaceId, MAC: strings.ToLower(resp.MacAddress), Type: resp.Type, Status: resp.Status,
			VSwitchID: resp.VSwitchId, PrimaryIP: resp.PrivateIpAddress, Tags: map[string]string{},
		}
		out.IPs = ipList(out.PrimaryIP, resp.PrivateIpSets.PrivateIpSet)
		for k, v := range r.Tags {
			out.Tags[k] = v
		}
		return nil
	})
	if err != nil {
		return cloudENI{}, err
	}
	if out.ID == "" {
		return cloudENI{}, fmt.Errorf("%s in vswitch %s: the answer has no NetworkInterfaceId", actionCreate, r.VSwitchID)
	}
	return out, nil
}

func (a *api) attach(ctx context.Context, eniID, instanceID string) error {
	return a.callECS(ctx, actionAttach, func(c *ecs.Client) error {
		req := ecs.CreateAttachNetworkInterfaceRequest()
		req.NetworkInterfaceId, req.InstanceId = eniID, instanceID
		_, err := c.AttachNetworkInterface(req)
		return err
	})
}

func (a *api) detach(ctx context.Context, eniID, instanceID string) error {
	return a.callECS(ctx, actionDetach, func(c *ecs.Client) error {
		req := ecs.CreateDetachNetworkInterfaceRequest()
		req.NetworkInterfaceId, req.InstanceId = eniID, instanceID
		_, err := c.DetachNetworkInterface(req)
		return err
	})
}

func (a *api) delete(ctx context.Context, eniID string) error {
	return a.callECS(ctx, actionDelete, func(c *ecs.Client) error {
		req := ecs.CreateDeleteNetworkInterfaceRequest()
		req.NetworkInterfaceId = eniID
		_, err := c.DeleteNetworkInterface(req)
		return err
	})
}

// assign adds n secondary IPs; a repeat with the same token returns the
// same IPs.
func (a *api) assign(ctx context.Context, eniID string, n int, token string) ([]string, error) {
	var ips []string
	err := a.callECS(ctx, actionAssign, func(c *ecs.Client) error {
		req := ecs.CreateAssignPrivateIpAddressesRequest()
		req.NetworkInterfaceId, req.ClientToken = eniID, token
		req.SecondaryPrivateIpAddressCount = requests.NewInteger(n)
		resp, err := c.AssignPrivateIpAddresses(req)
		if err == nil {
			ips = resp.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress
		}
		return err
	})
	return ips, err
}

func (a *api) unassign(ctx context.Context, eniID string, ips []string) error {
	return a.callECS(ctx, actionUnassign, func(c *ecs.Client) error {
		req := ecs.CreateUnassignPrivateIpAddressesRequest()
		list := slices.Clone(ips)
		req.NetworkInterfaceId, req.PrivateIpAddress = eniID, &list
		_, err := c.UnassignPrivateIpAddresses(req)
		return err
	})
}

// vswitchInfo is what DescribeVSwitches says about one vswitch.
type vswitchInfo struct {
	ID, ZoneID, CIDR string
	Available        int64
}

// describeVSwitch reads one vswitch; found is false when the cloud does
// not know it.
func (a *api) describeVSwitch(ctx context.Context, id string) (v vswitchInfo, found bool, err error) {
	err = a.callVPC(ctx, actionDescribeVSwitch, func(c *vpc.Client) error {
		req := vpc.CreateDescribeVSwitchesRequest()
		req.VSwitchId = id
		resp, err := c.DescribeVSwitches(req)
		if err != nil {
			return err
		}
		for _, s := range resp.VSwitches.VSwitch {
			if s.VSwitchId == id {
				v, found = vswitchInfo{ID: id, ZoneID: s.ZoneId, CIDR: s.CidrBlock, Available: s.AvailableIpAddressCount}, true
			}
		}
		return nil
	})
	return v, found, err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
