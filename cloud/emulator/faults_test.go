package emulator

import (
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"
)

func TestFaultErrors(t *testing.T) {
	v := start(t, nil)
	id := v.create(t, 0).NetworkInterfaceId

	for _, tc := range []struct {
		fault  Fault
		code   string
		status int
	}{
		{Fault{Code: "Throttling", Rate: 1}, "Throttling", 400},
		{Fault{Code: "Throttling.User", Rate: 1}, "Throttling.User", 429},
		{Fault{Code: "InternalError", Rate: 1}, "InternalError", 500},
		{Fault{Code: "ServiceUnavailable", Rate: 1}, "ServiceUnavailable", 503},
		{Fault{Code: "IpNotEnough", Rate: 1}, "InvalidVSwitchId.IpNotEnough", 403},
		{Fault{Code: "Operation.Conflict", Rate: 1, HTTPStatus: 400}, "Operation.Conflict", 400},
	} {
		v.e.SetFault("AssignPrivateIpAddresses", tc.fault)
		_, err := v.assign(id, 1)
		wantCode(t, err, tc.code, tc.status)
	}
	// A failed call changed nothing.
	if n := len(v.describe(t, id).PrivateIpSets.PrivateIpSet); n != 1 {
		t.Errorf("faulted assigns added IPs: the ENI has %d", n)
	}
	if got := v.e.Dump().Faults["AssignPrivateIpAddresses"]; got != 6 {
		t.Errorf("Dump faults: want 6, got %d", got)
	}

	// A fault for one action leaves the others alone; "*" covers them all.
	v.describe(t, id)
	v.e.SetFault("AssignPrivateIpAddresses", Fault{})
	v.e.SetFault("*", Fault{Code: "Throttling", Rate: 1, Times: 2})
	_, err := v.assign(id, 1)
	wantCode(t, err, "Throttling", 400)
	req := ecs.CreateDescribeNetworkInterfacesRequest()
	_, err = v.ecs.DescribeNetworkInterfaces(req)
	wantCode(t, err, "Throttling", 400)
	// Times: spent after two.
	_, err = v.assign(id, 1)
	must(t, err)
}

func TestFaultLatency(t *testing.T) {
	v := start(t, nil)
	v.e.SetFault("DescribeVSwitches", Fault{Latency: 150 * time.Millisecond})
	begin := time.Now()
	_, err := v.vpc.DescribeVSwitches(vpc.CreateDescribeVSwitchesRequest())
	must(t, err)
	if d := time.Since(begin); d < 150*time.Millisecond {
		t.Errorf("latency fault: call took %s", d)
	}
}

// A dropped response: the call took effect but the client only sees a
// broken connection. Retrying with the same ClientToken returns the ENI
// the first call made, and no second one exists.
func TestFaultDroppedResponse(t *testing.T) {
	v := start(t, nil)
	v.e.SetFault("CreateNetworkInterface", Fault{DropRate: 1, Times: 1})
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId, req.SecurityGroupId = DefaultWorld().VSwitches[0].ID, DefaultWorld().SecurityGroupID
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(1)
	req.ClientToken = "dropped-1"
	_, err := v.ecs.CreateNetworkInterface(req)
	if err == nil {
		t.Fatal("dropped response: the call succeeded")
	}
	var ue *url.Error
	if code(err) != "" || !errors.As(err, &ue) {
		t.Logf("dropped response surfaced as %T: %v", err, err)
	}
	d := v.e.Dump()
	if len(d.ENIs) != 2 || d.Faults["CreateNetworkInterface"] != 1 {
		t.Fatalf("after a dropped create: want the ENI made (2 ENIs) and 1 fault, got %d ENIs, faults %v", len(d.ENIs), d.Faults)
	}
	made := d.ENIs[1]
	resp, err := v.ecs.CreateNetworkInterface(req)
	must(t, err)
	if resp.NetworkInterfaceId != made.ID || len(v.e.Dump().ENIs) != 2 {
		t.Errorf("retry with the same ClientToken: got %s, want %s and no new ENI", resp.NetworkInterfaceId, made.ID)
	}

	// The same for an attach: dropped, yet the ENI attaches.
	v.e.SetFault("AttachNetworkInterface", Fault{DropRate: 1, Times: 1})
	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = made.ID, v.info.InstanceID
	if _, err := v.ecs.AttachNetworkInterface(att); err == nil {
		t.Fatal("dropped attach: the call succeeded")
	}
	v.waitStatus(t, made.ID, "InUse")
}

// TestFaultsConcurrent runs calls in parallel with faults on, for the race
// detector and to see that state stays consistent.
func TestFaultsConcurrent(t *testing.T) {
	v := start(t, nil)
	id := v.create(t, 0).NetworkInterfaceId
	v.attach(t, id)
	v.e.SetFault("*", Fault{Code: "Throttling", Rate: 0.3, DropRate: 0.2})
	// One SDK client per goroutine: the SDK's client is not safe for
	// concurrent use (it sets its http.Client's timeout per request).
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		c := ecsClient(t, v.info, v.info.AccessKeyID, v.info.AccessKeySecret)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				req := ecs.CreateAssignPrivateIpAddressesRequest()
				req.NetworkInterfaceId, req.SecondaryPrivateIpAddressCount = id, requests.NewInteger(1)
				_, _ = c.AssignPrivateIpAddresses(req)
				_, _ = c.DescribeNetworkInterfaces(ecs.CreateDescribeNetworkInterfacesRequest())
			}
		}()
	}
	wg.Wait()
	v.e.ClearFaults()
	n := v.describe(t, id)
	if got := len(n.PrivateIpSets.PrivateIpSet); got > 10 {
		t.Errorf("ENI holds %d IPs, more than its type allows", got)
	}
	d := v.e.Dump()
	if d.Calls["AssignPrivateIpAddresses"] != 20 {
		t.Errorf("Calls: want 20 assigns, got %d", d.Calls["AssignPrivateIpAddresses"])
	}
}
