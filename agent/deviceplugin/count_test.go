package deviceplugin_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/cloud/metadata"
	"github.com/terway-reconciler/terway/internal/devicemanager"
)

// startReconciler runs the emulator with one instance of type typ and
// starts an ENI reconciler for it, as the agent does: the limits come from
// DescribeInstanceTypes through the real SDK.
func startReconciler(t *testing.T, typ string) *eni.Reconciler {
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
		Logger:   quiet(), CallTimeout: 3 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	return r
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
			r := startReconciler(t, c.typ)
			n, err := deviceplugin.ENISlots(r, c.reserved)
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
