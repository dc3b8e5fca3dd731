package deviceplugin_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/cloud/metadata"
	"github.com/terway-reconciler/terway/internal/devicemanager"
)

// cloud is an emulated cloud with one instance.
type cloud struct {
	info emulator.Info
	self metadata.Instance
	sg   string
}

// startReconciler runs the emulator with one instance of type typ and
// starts an ENI reconciler for it, as the agent does: the limits come from
// DescribeInstanceTypes through the real SDK. reserved is the number of
// ENIs kept for multi-IP pods (reservedENIsForMultiIP).
func startReconciler(t *testing.T, typ string, reserved int) (*eni.Reconciler, *cloud) {
	t.Helper()
	w := emulator.DefaultWorld()
	w.Instances[0].InstanceType = typ
	e, err := emulator.New(w)
	if err != nil {
		t.Fatal(err)
	}
	e.SetLogger(quiet())
	if err := e.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	info := e.Info()
	md := metadata.New(info.Metadata)
	ctx, cancel := context.WithTimeout(context.Background(), devicemanager.Wait)
	defer cancel()
	self, err := md.Instance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if self.Type != typ {
		t.Fatalf("metadata says instance type %q, want %q", self.Type, typ)
	}
	r, err := eni.New(eni.Config{
		RegionID: self.RegionID, ECSEndpoint: info.Endpoint, VPCEndpoint: info.Endpoint,
		Credentials: eni.Credentials{AccessKeyID: info.AccessKeyID, AccessKeySecret: eni.Secret(info.AccessKeySecret)},
		InstanceID:  self.ID, InstanceType: self.Type, ZoneID: self.ZoneID, PrimaryENIID: self.PrimaryENIID,
		VSwitchIDs: []string{self.VSwitchID}, SecurityGroupID: w.SecurityGroupID, Metadata: md,
		WaitLink: func(context.Context, string) error { return nil },
		Logger:   quiet(), CallTimeout: 3 * time.Second, ReservedShared: &reserved,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return r, &cloud{info: info, self: self, sg: w.SecurityGroupID}
}

// attachForeign attaches an ENI that is not ours to the instance, as
// another tool would, and waits until the reconciler counts it.
func (c *cloud) attachForeign(t *testing.T, r *eni.Reconciler) {
	t.Helper()
	client, err := ecs.NewClientWithAccessKey(c.info.RegionID, c.info.AccessKeyID, c.info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	client.Domain = c.info.Endpoint
	create := ecs.CreateCreateNetworkInterfaceRequest()
	create.VSwitchId, create.SecurityGroupId = c.self.VSwitchID, c.sg
	created, err := client.CreateNetworkInterface(create)
	if err != nil {
		t.Fatal(err)
	}
	attach := ecs.CreateAttachNetworkInterfaceRequest()
	attach.NetworkInterfaceId, attach.InstanceId = created.NetworkInterfaceId, c.self.ID
	if _, err := client.AttachNetworkInterface(attach); err != nil {
		t.Fatal(err)
	}
	want := r.Status().ForeignENIs + 1
	deadline := time.Now().Add(devicemanager.Wait)
	for r.Status().ForeignENIs < want {
		if time.Now().After(deadline) {
			t.Fatalf("the reconciler counts %d foreign ENIs, want %d", r.Status().ForeignENIs, want)
		}
		if err := r.Resync(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Each instance type advertises its own ENI quota, less the primary ENI and
// the ENIs kept for multi-IP pods.
func TestListAndWatchCountsPerInstanceType(t *testing.T) {
	for _, c := range []struct {
		typ      string
		reserved int
		want     int
	}{
		{"ecs.g6.xlarge", 0, 2},  // EniQuantity 3
		{"ecs.g6.xlarge", 1, 1},  // one kept for multi-IP pods
		{"ecs.g6.4xlarge", 0, 7}, // EniQuantity 8
		{"ecs.g6.4xlarge", 2, 5},
		{"ecs.g6.large", 1, 0}, // EniQuantity 2: nothing left for exclusive pods
	} {
		t.Run(fmt.Sprintf("%s/reserved=%d", c.typ, c.reserved), func(t *testing.T) {
			r, _ := startReconciler(t, c.typ, c.reserved)
			n, err := deviceplugin.ENISlots(r)
			if err != nil {
				t.Fatal(err)
			}
			dir := devicemanager.ShortDir(t)
			k := devicemanager.Start(t, dir)
			runPlugin(t, dir, n)
			k.Registration(t)
			k.ListOf(t, "the instance type's count", devicemanager.Count(c.want, pluginapi.Healthy))
		})
	}
}

// An ENI attached by someone else takes a slot: the count drops and the
// kubelet gets the shorter list.
func TestForeignENITakesASlot(t *testing.T) {
	r, c := startReconciler(t, "ecs.g6.4xlarge", 1) // EniQuantity 8
	n, err := deviceplugin.ENISlots(r)
	if err != nil || n != 6 {
		t.Fatalf("ENISlots = %d, %v; want 6", n, err)
	}
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	p := runPlugin(t, dir, n)
	k.Registration(t)
	k.ListOf(t, "6 devices", devicemanager.Count(6, pluginapi.Healthy))

	c.attachForeign(t, r)
	if n, err = deviceplugin.ENISlots(r); err != nil || n != 5 {
		t.Fatalf("ENISlots with a foreign ENI = %d, %v; want 5", n, err)
	}
	p.Set(n, true)
	k.ListOf(t, "5 devices", devicemanager.Count(5, pluginapi.Healthy))
}
