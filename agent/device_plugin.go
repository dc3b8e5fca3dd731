package agent

import (
	"context"
	"time"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
)

// devicePluginRefresh is how often the advertised count and health are
// brought up to date: health follows Ready, which changes at start and
// when the inputs lose their sync; a few seconds of delay only delays
// scheduling.
const devicePluginRefresh = 5 * time.Second

// runDevicePlugin serves the aliyun/eni device plugin until ctx ends. A
// plugin that cannot serve is logged, not fatal: pods that do not ask for
// a whole ENI still get their network.
func (a *Agent) runDevicePlugin(ctx context.Context) {
	dp := deviceplugin.New(deviceplugin.Config{Dir: a.cfg.DevicePluginDir, Logger: a.log})
	a.refreshDevicePlugin(dp)
	go func() {
		t := time.NewTicker(devicePluginRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				a.refreshDevicePlugin(dp)
			}
		}
	}()
	if err := dp.Run(ctx); err != nil {
		a.log.Error("device plugin: not serving; pods requesting aliyun/eni will not be scheduled here", "err", err)
	}
}

// refreshDevicePlugin sets the count (exclusiveSlots) and the health: the
// slots are unhealthy, so not allocatable, while the agent is not ready to
// serve pods.
func (a *Agent) refreshDevicePlugin(dp *deviceplugin.Plugin) {
	n, err := a.exclusiveSlots()
	if err != nil {
		a.log.Warn("device plugin: count unknown; advertising none", "err", err)
		n = 0
	}
	dp.Set(n, a.Ready())
}

// exclusiveSlots is the number of aliyun/eni devices: with an ENI
// reconciler, the instance type's ENI quota less the primary ENI, the ENIs
// attached by others and the ENIs kept for multi-IP pods, which is the
// bound the reconciler's pool honours (eni.SplitSlots). In VPC mode
// without cloud configuration the agent cannot hand out an ENI and
// advertises none, saying why once: the resource still shows on the node,
// as 0, and a pod asking for it waits with "Insufficient aliyun/eni"
// instead of failing at its CNI ADD.
func (a *Agent) exclusiveSlots() (int, error) {
	if a.cfg.ENI == nil {
		a.noCloudOnce.Do(func() {
			a.log.Info("device plugin: advertising 0 aliyun/eni: VPC mode without cloud configuration (--cloud-config or --eni-conf), so no ENI can be created for a pod")
		})
		return 0, nil
	}
	return deviceplugin.ENISlots(a.cfg.ENI)
}
