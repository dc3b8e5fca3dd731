package emulator

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"
)

// Short async delays keep the tests fast while still making clients wait.
const (
	testAttach = 60 * time.Millisecond
	testDetach = 60 * time.Millisecond
	testDelete = 30 * time.Millisecond
)

type env struct {
	e    *Emulator
	info Info
	ecs  *ecs.Client
	vpc  *vpc.Client
}

// start runs an emulator of the world (DefaultWorld if nil) on loopback
// ports and returns SDK clients pointed at it.
func start(t *testing.T, w *World) *env {
	t.Helper()
	if w == nil {
		w = DefaultWorld()
	}
	e, err := New(w)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	e.SetAsyncDelay(testAttach, testDetach, testDelete)
	if err := e.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	info := e.Info()
	return &env{e: e, info: info, ecs: ecsClient(t, info, info.AccessKeyID, info.AccessKeySecret), vpc: vpcClient(t, info)}
}

func ecsClient(t *testing.T, info Info, ak, sk string) *ecs.Client {
	t.Helper()
	c, err := ecs.NewClientWithAccessKey(info.RegionID, ak, sk)
	if err != nil {
		t.Fatalf("ecs client: %v", err)
	}
	return pointAt(c, info)
}

// pointAt aims an SDK client at the emulator and never at a proxy.
func pointAt(c *ecs.Client, info Info) *ecs.Client {
	c.Domain = info.Endpoint
	c.SetNoProxy("127.0.0.1")
	c.SetReadTimeout(5 * time.Second)
	return c
}

func vpcClient(t *testing.T, info Info) *vpc.Client {
	t.Helper()
	c, err := vpc.NewClientWithAccessKey(info.RegionID, info.AccessKeyID, info.AccessKeySecret)
	if err != nil {
		t.Fatalf("vpc client: %v", err)
	}
	c.Domain = info.Endpoint
	c.SetNoProxy("127.0.0.1")
	return c
}

// code returns the cloud error code of an SDK error ("" if none).
func code(err error) string {
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		return se.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var se *sdkerrors.ServerError
	if errors.As(err, &se) {
		return se.HttpStatus()
	}
	return 0
}

func wantCode(t *testing.T, err error, want string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %s, got success", want)
	}
	if got := code(err); got != want {
		t.Fatalf("want error code %s, got %q: %v", want, got, err)
	}
	if got := httpStatus(err); status != 0 && got != status {
		t.Fatalf("%s: want HTTP %d, got %d", want, status, got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// create makes an ENI in the instance's vSwitch with n secondary IPs.
func (v *env) create(t *testing.T, n int, tags ...ecs.CreateNetworkInterfaceTag) *ecs.CreateNetworkInterfaceResponse {
	t.Helper()
	req := ecs.CreateCreateNetworkInterfaceRequest()
	req.VSwitchId = DefaultWorld().VSwitches[0].ID
	req.SecurityGroupId = DefaultWorld().SecurityGroupID
	req.InstanceType = "Secondary"
	if n > 0 {
		req.SecondaryPrivateIpAddressCount = requests.NewInteger(n)
	}
	if len(tags) > 0 {
		req.Tag = &tags
	}
	resp, err := v.ecs.CreateNetworkInterface(req)
	if err != nil {
		t.Fatalf("CreateNetworkInterface: %v", err)
	}
	return resp
}

// describe returns one ENI as DescribeNetworkInterfaces shows it (nil if gone).
func (v *env) describe(t *testing.T, id string) *ecs.NetworkInterfaceSet {
	t.Helper()
	req := ecs.CreateDescribeNetworkInterfacesRequest()
	req.NetworkInterfaceId = &[]string{id}
	resp, err := v.ecs.DescribeNetworkInterfaces(req)
	if err != nil {
		t.Fatalf("DescribeNetworkInterfaces %s: %v", id, err)
	}
	if len(resp.NetworkInterfaceSets.NetworkInterfaceSet) == 0 {
		return nil
	}
	return &resp.NetworkInterfaceSets.NetworkInterfaceSet[0]
}

// waitStatus polls Describe until the ENI has the status ("" = gone).
func (v *env) waitStatus(t *testing.T, id, status string) *ecs.NetworkInterfaceSet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := v.describe(t, id)
		if (n == nil && status == "") || (n != nil && n.Status == status) {
			return n
		}
		if time.Now().After(deadline) {
			got := "gone"
			if n != nil {
				got = n.Status
			}
			t.Fatalf("ENI %s: want status %q, still %s", id, status, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (v *env) attach(t *testing.T, id string) {
	t.Helper()
	req := ecs.CreateAttachNetworkInterfaceRequest()
	req.NetworkInterfaceId, req.InstanceId = id, v.info.InstanceID
	if _, err := v.ecs.AttachNetworkInterface(req); err != nil {
		t.Fatalf("AttachNetworkInterface %s: %v", id, err)
	}
	v.waitStatus(t, id, "InUse")
}

func (v *env) assign(id string, n int) (*ecs.AssignPrivateIpAddressesResponse, error) {
	req := ecs.CreateAssignPrivateIpAddressesRequest()
	req.NetworkInterfaceId = id
	req.SecondaryPrivateIpAddressCount = requests.NewInteger(n)
	return v.ecs.AssignPrivateIpAddresses(req)
}
