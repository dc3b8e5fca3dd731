package emulator

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"
)

// Every test here talks to the emulator through the real SDK, so a wrong
// field name or nesting fails to decode exactly as it would in the client.

func TestDescribeWorld(t *testing.T) {
	v := start(t, nil)
	w := DefaultWorld()

	vreq := vpc.CreateDescribeVSwitchesRequest()
	vreq.VSwitchId = w.VSwitches[0].ID
	vresp, err := v.vpc.DescribeVSwitches(vreq)
	must(t, err)
	if len(vresp.VSwitches.VSwitch) != 1 {
		t.Fatalf("DescribeVSwitches %s: got %d vSwitches", vreq.VSwitchId, len(vresp.VSwitches.VSwitch))
	}
	vs := vresp.VSwitches.VSwitch[0]
	// A /20 has 4096 addresses; network, gateway and broadcast are not
	// usable and the instance's primary ENI holds one.
	if vs.CidrBlock != "198.18.64.0/20" || vs.ZoneId != "cn-hangzhou-h" || vs.AvailableIpAddressCount != 4092 || vs.VpcId != w.VPC.ID {
		t.Errorf("DescribeVSwitches: got %+v", vs)
	}

	areq := ecs.CreateDescribeInstanceAttributeRequest()
	areq.InstanceId = v.info.InstanceID
	attr, err := v.ecs.DescribeInstanceAttribute(areq)
	must(t, err)
	if attr.Status != "Running" || attr.InstanceType != "ecs.emu.xlarge" || attr.ZoneId != "cn-hangzhou-h" ||
		attr.VpcAttributes.VSwitchId != w.VSwitches[0].ID || len(attr.VpcAttributes.PrivateIpAddress.IpAddress) != 1 {
		t.Errorf("DescribeInstanceAttribute: got %+v", attr)
	}
	primaryIP := attr.VpcAttributes.PrivateIpAddress.IpAddress[0]
	if primaryIP != "198.18.64.2" {
		t.Errorf("primary IP: want the first usable address 198.18.64.2 (.1 is the gateway), got %s", primaryIP)
	}
	areq.InstanceId = "i-nope"
	_, err = v.ecs.DescribeInstanceAttribute(areq)
	wantCode(t, err, "InvalidInstanceId.NotFound", 404)

	treq := ecs.CreateDescribeInstanceTypesRequest()
	treq.InstanceTypes = &[]string{"ecs.emu.xlarge"}
	types, err := v.ecs.DescribeInstanceTypes(treq)
	must(t, err)
	if got := types.InstanceTypes.InstanceType; len(got) != 1 || got[0].InstanceTypeId != "ecs.emu.xlarge" ||
		got[0].EniQuantity != 4 || got[0].EniPrivateIpAddressQuantity != 10 {
		t.Errorf("DescribeInstanceTypes: got %+v", got)
	}

	ireq := ecs.CreateDescribeInstancesRequest()
	ireq.InstanceIds = fmt.Sprintf("[%q]", v.info.InstanceID)
	insts, err := v.ecs.DescribeInstances(ireq)
	must(t, err)
	if insts.TotalCount != 1 || len(insts.Instances.Instance) != 1 {
		t.Fatalf("DescribeInstances: got %+v", insts)
	}
	in := insts.Instances.Instance[0]
	if in.InstanceId != v.info.InstanceID || len(in.NetworkInterfaces.NetworkInterface) != 1 {
		t.Fatalf("DescribeInstances: got %+v", in)
	}
	if ni := in.NetworkInterfaces.NetworkInterface[0]; ni.Type != "Primary" || ni.PrimaryIpAddress != primaryIP || !strings.HasPrefix(ni.MacAddress, "00:16:3e:") {
		t.Errorf("DescribeInstances primary ENI: got %+v", ni)
	}
	ireq.InstanceIds = "i-1,i-2"
	_, err = v.ecs.DescribeInstances(ireq)
	wantCode(t, err, "InvalidParameter", 400)

	// The primary ENI is InUse at device index 0.
	dreq := ecs.CreateDescribeNetworkInterfacesRequest()
	dreq.InstanceId = v.info.InstanceID
	dreq.Type = "Primary"
	enis, err := v.ecs.DescribeNetworkInterfaces(dreq)
	must(t, err)
	if got := enis.NetworkInterfaceSets.NetworkInterfaceSet; len(got) != 1 || got[0].Status != "InUse" ||
		got[0].Attachment.DeviceIndex != 0 || got[0].InstanceId != v.info.InstanceID || got[0].PrivateIpAddress != primaryIP {
		t.Errorf("primary ENI: got %+v", got)
	}
}

func TestENILifecycle(t *testing.T) {
	v := start(t, nil)
	created := v.create(t, 2, ecs.CreateNetworkInterfaceTag{Key: "creator", Value: "terway"})
	if created.Status != "Available" || created.Type != "Secondary" || !strings.HasPrefix(created.MacAddress, "00:16:3e:") ||
		created.VSwitchId != DefaultWorld().VSwitches[0].ID || created.ZoneId != "cn-hangzhou-h" {
		t.Errorf("CreateNetworkInterface: got %+v", created)
	}
	if sets := created.PrivateIpSets.PrivateIpSet; len(sets) != 3 || !sets[0].Primary || sets[0].PrivateIpAddress != created.PrivateIpAddress || sets[1].Primary {
		t.Errorf("CreateNetworkInterface IPs: got %+v", sets)
	}
	if tags := created.Tags.Tag; len(tags) != 1 || tags[0].Key != "creator" || tags[0].Value != "terway" {
		t.Errorf("CreateNetworkInterface tags: got %+v", tags)
	}
	id := created.NetworkInterfaceId
	if n := v.describe(t, id); n == nil || n.Status != "Available" || n.MacAddress != created.MacAddress || len(n.PrivateIpSets.PrivateIpSet) != 3 {
		t.Fatalf("Describe after create: got %+v", n)
	}

	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = id, v.info.InstanceID
	_, err := v.ecs.AttachNetworkInterface(att)
	must(t, err)
	if n := v.describe(t, id); n.Status != "Attaching" {
		t.Fatalf("right after AttachNetworkInterface: want Attaching, got %s", n.Status)
	}
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "InvalidOperation.InvalidEniState", 400)
	n := v.waitStatus(t, id, "InUse")
	if n.InstanceId != v.info.InstanceID || n.Attachment.DeviceIndex != 1 || n.Attachment.InstanceId != v.info.InstanceID {
		t.Errorf("attached ENI: got instance %q, attachment %+v", n.InstanceId, n.Attachment)
	}

	del := ecs.CreateDeleteNetworkInterfaceRequest()
	del.NetworkInterfaceId = id
	_, err = v.ecs.DeleteNetworkInterface(del)
	wantCode(t, err, "InvalidOperation.InvalidEniState", 400)

	det := ecs.CreateDetachNetworkInterfaceRequest()
	det.NetworkInterfaceId, det.InstanceId = id, v.info.InstanceID
	_, err = v.ecs.DetachNetworkInterface(det)
	must(t, err)
	if n := v.describe(t, id); n.Status != "Detaching" {
		t.Fatalf("right after DetachNetworkInterface: want Detaching, got %s", n.Status)
	}
	_, err = v.ecs.DetachNetworkInterface(det) // a retry while detaching is fine
	must(t, err)
	n = v.waitStatus(t, id, "Available")
	if n.InstanceId != "" {
		t.Errorf("detached ENI still names instance %q", n.InstanceId)
	}
	_, err = v.ecs.DetachNetworkInterface(det)
	wantCode(t, err, "InvalidOperation.InvalidEniState", 400)

	_, err = v.ecs.DeleteNetworkInterface(del)
	must(t, err)
	if n := v.describe(t, id); n == nil || n.Status != "Deleting" {
		t.Fatalf("right after DeleteNetworkInterface: want Deleting, got %+v", n)
	}
	v.waitStatus(t, id, "")
	_, err = v.ecs.DeleteNetworkInterface(del)
	wantCode(t, err, "InvalidEniId.NotFound", 404)
	_, err = v.ecs.DetachNetworkInterface(det)
	wantCode(t, err, "InvalidEniId.NotFound", 404)

	// Its three addresses went back to the vSwitch.
	if got := v.e.Dump().VSwitches[0].Available; got != 4092 {
		t.Errorf("vSwitch available after delete: want 4092, got %d", got)
	}

	primary := v.e.Dump().Instances[0].ENIs[0]
	det.NetworkInterfaceId = primary
	_, err = v.ecs.DetachNetworkInterface(det)
	wantCode(t, err, "InvalidOperation.DetachPrimaryEniNotAllowed", 400)
}

func TestAssignUnassign(t *testing.T) {
	v := start(t, nil)
	id := v.create(t, 0).NetworkInterfaceId
	v.attach(t, id)

	resp, err := v.assign(id, 3)
	must(t, err)
	set := resp.AssignedPrivateIpAddressesSet
	if set.NetworkInterfaceId != id || len(set.PrivateIpSet.PrivateIpAddress) != 3 {
		t.Fatalf("AssignPrivateIpAddresses: got %+v", set)
	}
	got := v.describe(t, id).PrivateIpSets.PrivateIpSet
	if len(got) != 4 {
		t.Fatalf("Describe after assign: want 4 IPs, got %+v", got)
	}
	for _, a := range set.PrivateIpSet.PrivateIpAddress {
		p := netip.MustParseAddr(a)
		if !netip.MustParsePrefix("198.18.64.0/20").Contains(p) || a == "198.18.64.1" {
			t.Errorf("assigned %s: not a usable address of the vSwitch", a)
		}
	}

	un := ecs.CreateUnassignPrivateIpAddressesRequest()
	un.NetworkInterfaceId = id
	un.PrivateIpAddress = &[]string{set.PrivateIpSet.PrivateIpAddress[0]}
	_, err = v.ecs.UnassignPrivateIpAddresses(un)
	must(t, err)
	left := v.describe(t, id).PrivateIpSets.PrivateIpSet
	if len(left) != 3 || slices.ContainsFunc(left, func(s ecs.PrivateIpSet) bool { return s.PrivateIpAddress == set.PrivateIpSet.PrivateIpAddress[0] }) {
		t.Errorf("Describe after unassign: got %+v", left)
	}
	_, err = v.ecs.UnassignPrivateIpAddresses(un) // not on the ENI any more
	wantCode(t, err, "InvalidIp.IpUnassigned", 403)
	un.PrivateIpAddress = &[]string{left[0].PrivateIpAddress} // the primary
	_, err = v.ecs.UnassignPrivateIpAddresses(un)
	wantCode(t, err, "InvalidIp.IpUnassigned", 403)

	// Explicit addresses: a free one works, a taken one does not.
	req := ecs.CreateAssignPrivateIpAddressesRequest()
	req.NetworkInterfaceId = id
	req.PrivateIpAddress = &[]string{"198.18.70.7"}
	_, err = v.ecs.AssignPrivateIpAddresses(req)
	must(t, err)
	_, err = v.ecs.AssignPrivateIpAddresses(req)
	wantCode(t, err, "InvalidIp.IpAssigned", 403)
	req.PrivateIpAddress = &[]string{"198.18.64.1"} // the gateway
	_, err = v.ecs.AssignPrivateIpAddresses(req)
	wantCode(t, err, "InvalidVSwitchId.IpInvalid", 403)

	// (A reused SDK request keeps its old parameters: make a new one.)
	req = ecs.CreateAssignPrivateIpAddressesRequest()
	req.NetworkInterfaceId = id
	_, err = v.ecs.AssignPrivateIpAddresses(req)
	wantCode(t, err, "MissingParameter", 400)
	_, err = v.assign("eni-nope", 1)
	wantCode(t, err, "InvalidEniId.NotFound", 404)
}

// The default type allows 4 ENIs of 10 IPs: the primary ENI is the node's,
// so 3 secondary ENIs x 10 IPs = 30 addresses for pods, and not one more.
func TestQuotas(t *testing.T) {
	v := start(t, nil)
	var ids []string
	for i := 0; i < 3; i++ {
		id := v.create(t, 0).NetworkInterfaceId
		v.attach(t, id)
		_, err := v.assign(id, 9)
		must(t, err)
		ids = append(ids, id)
	}
	total := 0
	for _, id := range ids {
		total += len(v.describe(t, id).PrivateIpSets.PrivateIpSet)
	}
	if total != 30 {
		t.Fatalf("want 30 addresses on the secondary ENIs, got %d", total)
	}
	_, err := v.assign(ids[0], 1)
	wantCode(t, err, "InvalidOperation.Ipv4CountExceeded", 403)

	fourth := v.create(t, 0).NetworkInterfaceId
	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = fourth, v.info.InstanceID
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "EniPerInstanceLimitExceeded", 403)

	// Unattached, an ENI may hold up to 50 addresses, but not attach with
	// more than its instance type allows.
	_, err = v.assign(fourth, 10)
	must(t, err)
	_, err = v.assign(fourth, 40)
	wantCode(t, err, "InvalidOperation.Ipv4CountExceeded", 403)
	det := ecs.CreateDetachNetworkInterfaceRequest()
	det.NetworkInterfaceId, det.InstanceId = ids[2], v.info.InstanceID
	_, err = v.ecs.DetachNetworkInterface(det)
	must(t, err)
	v.waitStatus(t, ids[2], "Available")
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "InvalidOperation.Ipv4CountExceeded", 403)

	// Creation allows at most 49 secondaries.
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = DefaultWorld().VSwitches[0].ID, DefaultWorld().SecurityGroupID
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(50)
	_, err = v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "InvalidParameter", 400)
}

func TestAccountENIQuota(t *testing.T) {
	w := DefaultWorld()
	w.MaxENIs = 3
	v := start(t, w)
	v.create(t, 0)
	v.create(t, 0)
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = w.VSwitches[0].ID, w.SecurityGroupID
	_, err := v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "MaxEniCountExceeded", 403)
}

func TestIdempotency(t *testing.T) {
	v := start(t, nil)
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = DefaultWorld().VSwitches[0].ID, DefaultWorld().SecurityGroupID
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(2)
	req.ClientToken = "create-token-1"
	first, err := v.ecs.CreateNetworkInterface(req)
	must(t, err)
	second, err := v.ecs.CreateNetworkInterface(req)
	must(t, err)
	if first.NetworkInterfaceId != second.NetworkInterfaceId || first.MacAddress != second.MacAddress ||
		len(second.PrivateIpSets.PrivateIpSet) != 3 {
		t.Errorf("same ClientToken: first %s, second %+v", first.NetworkInterfaceId, second)
	}
	if n := len(v.e.Dump().ENIs); n != 2 {
		t.Errorf("same ClientToken twice: want 2 ENIs (primary + one), got %d", n)
	}
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(3)
	_, err = v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "IdempotentParameterMismatch", 400)

	id := first.NetworkInterfaceId
	a := ecs.CreateAssignPrivateIpAddressesRequest()
	a.NetworkInterfaceId, a.SecondaryPrivateIpAddressCount, a.ClientToken = id, requests.NewInteger(2), "assign-token-1"
	r1, err := v.ecs.AssignPrivateIpAddresses(a)
	must(t, err)
	r2, err := v.ecs.AssignPrivateIpAddresses(a)
	must(t, err)
	if !slices.Equal(r1.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress, r2.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress) {
		t.Errorf("same ClientToken: assigned %v then %v", r1.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress, r2.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress)
	}
	if n := len(v.describe(t, id).PrivateIpSets.PrivateIpSet); n != 5 {
		t.Errorf("after two assigns with one token: want 5 IPs, got %d", n)
	}
	// A failed call is not remembered: with the vSwitch refilled, a retry
	// with the same token runs.
	v.e.SetVSwitchAvailable(DefaultWorld().VSwitches[0].ID, 0)
	a.ClientToken = "assign-token-2"
	_, err = v.ecs.AssignPrivateIpAddresses(a)
	wantCode(t, err, "InvalidVSwitchId.IpNotEnough", 403)
	v.e.SetVSwitchAvailable(DefaultWorld().VSwitches[0].ID, 100)
	_, err = v.ecs.AssignPrivateIpAddresses(a)
	must(t, err)
}

func TestPagingAndFilters(t *testing.T) {
	v := start(t, nil)
	tagged := map[string]bool{}
	for i := 0; i < 25; i++ {
		var tags []ecs.CreateNetworkInterfaceTag
		if i%5 == 0 {
			tags = append(tags, ecs.CreateNetworkInterfaceTag{Key: "owner", Value: "terway"})
		}
		id := v.create(t, 0, tags...).NetworkInterfaceId
		if len(tags) > 0 {
			tagged[id] = true
		}
	}

	seen := map[string]bool{}
	token, pages := "", 0
	for {
		req := ecs.CreateDescribeNetworkInterfacesRequest()
		req.MaxResults = requests.NewInteger(10)
		req.NextToken = token
		resp, err := v.ecs.DescribeNetworkInterfaces(req)
		must(t, err)
		pages++
		for _, n := range resp.NetworkInterfaceSets.NetworkInterfaceSet {
			if seen[n.NetworkInterfaceId] {
				t.Fatalf("page %d repeats %s", pages, n.NetworkInterfaceId)
			}
			seen[n.NetworkInterfaceId] = true
		}
		if token = resp.NextToken; token == "" {
			break
		}
	}
	if len(seen) != 26 || pages != 3 {
		t.Errorf("MaxResults=10: want 26 ENIs in 3 pages, got %d in %d", len(seen), pages)
	}

	seen = map[string]bool{}
	for page := 1; page <= 3; page++ {
		req := ecs.CreateDescribeNetworkInterfacesRequest()
		req.PageNumber, req.PageSize = requests.NewInteger(page), requests.NewInteger(10)
		resp, err := v.ecs.DescribeNetworkInterfaces(req)
		must(t, err)
		if resp.TotalCount != 26 || resp.PageNumber != page {
			t.Errorf("page %d: TotalCount %d PageNumber %d", page, resp.TotalCount, resp.PageNumber)
		}
		for _, n := range resp.NetworkInterfaceSets.NetworkInterfaceSet {
			seen[n.NetworkInterfaceId] = true
		}
	}
	if len(seen) != 26 {
		t.Errorf("PageNumber/PageSize: want 26 ENIs, got %d", len(seen))
	}

	req := ecs.CreateDescribeNetworkInterfacesRequest()
	req.Tag = &[]ecs.DescribeNetworkInterfacesTag{{Key: "owner", Value: "terway"}}
	req.MaxResults = requests.NewInteger(500)
	resp, err := v.ecs.DescribeNetworkInterfaces(req)
	must(t, err)
	if got := resp.NetworkInterfaceSets.NetworkInterfaceSet; len(got) != len(tagged) {
		t.Errorf("Tag filter: want %d ENIs, got %d", len(tagged), len(got))
	} else {
		for _, n := range got {
			if !tagged[n.NetworkInterfaceId] {
				t.Errorf("Tag filter returned untagged %s", n.NetworkInterfaceId)
			}
		}
	}
	req = ecs.CreateDescribeNetworkInterfacesRequest()
	req.Status = "Available"
	req.Type = "Secondary"
	req.MaxResults = requests.NewInteger(500)
	resp, err = v.ecs.DescribeNetworkInterfaces(req)
	must(t, err)
	if n := len(resp.NetworkInterfaceSets.NetworkInterfaceSet); n != 25 {
		t.Errorf("Status=Available Type=Secondary: want 25, got %d", n)
	}
	req.NextToken = "not-a-token"
	_, err = v.ecs.DescribeNetworkInterfaces(req)
	wantCode(t, err, "InvalidParameter", 400)

	var types []string
	token = ""
	for {
		treq := ecs.CreateDescribeInstanceTypesRequest()
		treq.MaxResults = requests.NewInteger(3)
		treq.NextToken = token
		tresp, err := v.ecs.DescribeInstanceTypes(treq)
		must(t, err)
		for _, it := range tresp.InstanceTypes.InstanceType {
			types = append(types, it.InstanceTypeId)
		}
		if token = tresp.NextToken; token == "" {
			break
		}
	}
	if len(types) != len(DefaultWorld().InstanceTypes) {
		t.Errorf("DescribeInstanceTypes paging: got %v", types)
	}

	vreq := vpc.CreateDescribeVSwitchesRequest()
	vreq.PageSize, vreq.PageNumber = requests.NewInteger(1), requests.NewInteger(2)
	vresp, err := v.vpc.DescribeVSwitches(vreq)
	must(t, err)
	if vresp.TotalCount != 2 || len(vresp.VSwitches.VSwitch) != 1 || vresp.VSwitches.VSwitch[0].VSwitchId != DefaultWorld().VSwitches[1].ID {
		t.Errorf("DescribeVSwitches page 2 of 1: got %+v", vresp)
	}
}

func TestInvalidRequests(t *testing.T) {
	v := start(t, nil)
	w := DefaultWorld()
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.SecurityGroupId = w.SecurityGroupID
	_, err := v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "MissingParameter", 400)
	req.VSwitchId = "vsw-nope"
	_, err = v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "InvalidVSwitchId.NotFound", 404)
	req.VSwitchId, req.SecurityGroupId = w.VSwitches[0].ID, "sg-nope"
	_, err = v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "InvalidSecurityGroupId.NotFound", 404)

	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = "eni-nope", v.info.InstanceID
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "InvalidEniId.NotFound", 404)
	att.NetworkInterfaceId, att.InstanceId = v.create(t, 0).NetworkInterfaceId, "i-nope"
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "InvalidInstanceId.NotFound", 404)
	att = ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId = "eni-nope"
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "MissingParameter", 400)

	// An ENI in zone i cannot attach to the instance in zone h.
	req.VSwitchId, req.SecurityGroupId = w.VSwitches[1].ID, w.SecurityGroupID
	other, err := v.ecs.CreateNetworkInterface(req)
	must(t, err)
	att.NetworkInterfaceId, att.InstanceId = other.NetworkInterfaceId, v.info.InstanceID
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "InvalidOperation.AvailabilityZoneMismatch", 403)

	// A stopping instance takes no ENI.
	must(t, v.e.SetInstanceStatus(v.info.InstanceID, "Stopping"))
	att.NetworkInterfaceId = v.create(t, 0).NetworkInterfaceId
	_, err = v.ecs.AttachNetworkInterface(att)
	wantCode(t, err, "IncorrectInstanceStatus", 403)
}

func TestExhaustedVSwitch(t *testing.T) {
	v := start(t, nil)
	vsw := DefaultWorld().VSwitches[0].ID
	id := v.create(t, 0).NetworkInterfaceId

	v.e.SetVSwitchAvailable(vsw, 0)
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = vsw, DefaultWorld().SecurityGroupID
	_, err := v.ecs.CreateNetworkInterface(req)
	wantCode(t, err, "InvalidVSwitchId.IpNotEnough", 403)
	_, err = v.assign(id, 1)
	wantCode(t, err, "InvalidVSwitchId.IpNotEnough", 403)

	vreq := vpc.CreateDescribeVSwitchesRequest()
	vreq.VSwitchId = vsw
	vresp, err := v.vpc.DescribeVSwitches(vreq)
	must(t, err)
	if got := vresp.VSwitches.VSwitch[0].AvailableIpAddressCount; got != 0 {
		t.Errorf("exhausted vSwitch: AvailableIpAddressCount %d", got)
	}

	// Two more: an ENI with one secondary fits, then nothing does.
	v.e.SetVSwitchAvailable(vsw, 2)
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(1)
	_, err = v.ecs.CreateNetworkInterface(req)
	must(t, err)
	_, err = v.assign(id, 1)
	wantCode(t, err, "InvalidVSwitchId.IpNotEnough", 403)

	// Releasing an address makes one available again.
	del := ecs.CreateDeleteNetworkInterfaceRequest()
	del.NetworkInterfaceId = id
	_, err = v.ecs.DeleteNetworkInterface(del)
	must(t, err)
	v.waitStatus(t, id, "")
	if got := v.e.Dump().VSwitches[0].Available; got != 1 {
		t.Errorf("after deleting an ENI of the exhausted vSwitch: want 1 available, got %d", got)
	}

	// The other vSwitch is unaffected.
	req.VSwitchId = DefaultWorld().VSwitches[1].ID
	_, err = v.ecs.CreateNetworkInterface(req)
	must(t, err)
}
