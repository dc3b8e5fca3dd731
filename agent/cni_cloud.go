package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/cni/wire"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// In eni-multi-ip mode the cloud hands out pod addresses: a secondary IP
// of a shared ENI, or a whole ENI for a pod that requests aliyun/eni
// (exclusive). In VPC mode with cloud configuration it hands out only the
// whole ENIs; other pods keep their podCIDR addresses. The ENI reconciler owns the cloud side; the
// allocation store records which attachment holds which IP on which ENI,
// and on restart the reconciler gets those holdings back before it may
// release anything.

// cloudOwner is the reconciler's key for an attachment: exclusive ENIs are
// owned by the pod (the document's ENIWant.Pod), shared IPs by the
// attachment, so a replaced sandbox never steals its predecessor's IP.
func cloudOwner(a spec.Allocation, exclusive bool) string {
	if exclusive {
		return a.Metadata.Namespace + "/" + a.Metadata.Name
	}
	return a.Spec.ContainerID + "/" + ifNameOr(a.Spec.IfName)
}

func ifNameOr(s string) string {
	if s == "" {
		return "eth0"
	}
	return s
}

// startCloud gives the reconciler the holdings of the store and starts its
// loop once the first full reconcile has written its nftables part
// (firstResync). Nothing is released before the holdings are known, nor
// before that: an address a DEL freed before a restart may still be in
// other pods' peer sets (which pods were departing lived in the old
// process's memory, withdrawal.go), and the store no longer holds it. That
// reconcile withdraws it; a pool pass before it could unassign the address
// as idle, and the cloud give it to a pod elsewhere that this node's
// policies would still admit. ADDs wait for the first reconcile too
// (Ready), and allocate without the loop (the reconciler's Allocate grows
// the pool itself), so no pass is needed earlier.
func (a *Agent) startCloud(ctx context.Context) error {
	allocs, err := a.store.List()
	if err != nil {
		return err
	}
	var holdings []eni.Holding
	for _, al := range allocs {
		if al.Spec.ENI == "" {
			continue
		}
		// Whether the ENI is exclusive is the cloud's to say (its tag):
		// the pod object may be gone already, its DEL still to come.
		holdings = append(holdings, eni.Holding{Owner: cloudOwner(*al, false), ExclusiveOwner: cloudOwner(*al, true), IP: al.Spec.IP, ENI: al.Spec.ENI})
	}
	if err := a.cfg.ENI.Start(ctx, holdings); err != nil {
		return fmt.Errorf("ENI reconciler: %w", err)
	}
	a.cloudReady.Store(true)
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-a.firstResync:
		}
		a.log.Info("ENI pool passes start after the first full reconcile")
		a.cfg.ENI.Run(ctx)
	}()
	a.log.Info("ENI reconciler started", "holdings", len(holdings))
	return nil
}

// isExclusiveENI reports whether the allocation is a whole ENI: the pod
// asks for aliyun/eni, or the reconciler knows the ENI as exclusive.
func (a *Agent) isExclusiveENI(eniID string, al spec.Allocation) bool {
	for _, e := range a.cfg.ENI.ENIs() {
		if e.Metadata.Name == eniID {
			return e.Spec.Exclusive
		}
	}
	pod, ok := a.lookupPod(al.Metadata.Namespace + "/" + al.Metadata.Name)
	return ok && render.WantsExclusiveENI(pod)
}

// fromCloud reports whether the pod's address comes from the cloud: every
// pod's in eni-multi-ip mode; in VPC mode only a pod that takes a whole
// ENI (aliyun/eni), the others keep their podCIDR addresses.
func (a *Agent) fromCloud(key string) bool {
	if a.cfg.Render.Mode == spec.PodModeENIMultiIP {
		return true
	}
	pod, _ := a.lookupPod(key)
	return render.WantsExclusiveENI(pod)
}

// refuseExclusiveWithoutCloud refuses the ADD of a pod requesting
// aliyun/eni on a node without cloud access (VPC mode without cloud
// configuration): no ENI can be made for it, and a podCIDR address would
// not be what it asked for. The kubelet does not place such a pod here
// (the node advertises 0); this is the answer when something else does.
func (a *Agent) refuseExclusiveWithoutCloud(key string) *types.Error {
	if pod, _ := a.lookupPod(key); !render.WantsExclusiveENI(pod) {
		return nil
	}
	return cniErr(codeNotAvailable, "pod "+key+" requests "+render.ExclusiveENIResource,
		"node "+a.cfg.NodeName+" has no cloud access (VPC mode without --cloud-config or --eni-conf), so it has no ENI to give and advertises 0 "+render.ExclusiveENIResource)
}

// cloudAllocate gets the attachment's address from the cloud. It runs
// before the agent's lock: growing the pool can take seconds (create,
// attach, wait for the link), and other pods' ADDs and the resync must not
// wait behind it. A retried ADD gets the address it already holds.
func (a *Agent) cloudAllocate(ctx context.Context, req *wire.Request, key string) (*spec.Allocation, *types.Error) {
	if !a.cloudReady.Load() {
		return nil, cniErr(codeTryAgainLater, "the ENI reconciler has not started yet", "its ENIs and held IPs are not known")
	}
	if have, found, err := a.store.Get(req.ContainerID, req.IfName); err != nil {
		return nil, cniErr(codeTryAgainLater, "read attachment", err.Error())
	} else if found {
		return &have, nil
	}
	ns, name, _ := strings.Cut(key, "/")
	al := spec.Allocation{
		APIVersion: spec.APIVersion, Kind: "Allocation", Metadata: spec.ObjectMeta{Namespace: ns, Name: name},
		Spec: spec.AllocationSpec{Netns: req.Netns, ContainerID: req.ContainerID, IfName: req.IfName, UID: req.Args.UID},
	}
	pod, _ := a.lookupPod(key)
	var err error
	what := "address"
	if render.WantsExclusiveENI(pod) {
		what = "ENI (" + render.ExclusiveENIResource + ")"
		var e eni.ENIAllocation
		e, err = a.cfg.ENI.AllocateENI(ctx, cloudOwner(al, true))
		al.Spec.IP, al.Spec.ENI = e.IP, e.ENI
	} else {
		var ip eni.IPAllocation
		ip, err = a.cfg.ENI.AllocateIP(ctx, cloudOwner(al, false))
		al.Spec.IP, al.Spec.ENI = ip.IP, ip.ENI
	}
	switch {
	case errors.Is(err, eni.ErrVSwitchExhausted), errors.Is(err, eni.ErrNoCapacity):
		if held := a.departing.heldFromCloud(); held > 0 {
			// Deleted pods' addresses go back to the pool once withdrawn
			// from the peer sets (withdrawal.go).
			return nil, a.quarantineErr(what, key, err, held)
		}
		return nil, cniErr(codeExhausted, "no "+what+" for pod "+key, err.Error())
	case err != nil:
		return nil, cniErr(codeTryAgainLater, "get an "+what+" for pod "+key+" from the cloud", err.Error())
	}
	return &al, nil
}

// recordCloud persists a cloud allocation (under the agent's lock). An
// older attachment of the same pod (a replaced sandbox) is released first.
// If the record cannot be written the address goes back to the cloud.
func (a *Agent) recordCloud(al spec.Allocation) error {
	key := store.PodKey(al.Metadata)
	if old, found, err := a.store.ByPod(key); err == nil && found && store.AttachmentOf(old) != store.AttachmentOf(al) {
		if _, _, err := a.store.Release(old.Spec.ContainerID, ifNameOr(old.Spec.IfName)); err == nil {
			a.pending.released(attachmentID(old))
			a.log.Info("sandbox replaced; old attachment released", "pod", key, "old", old.Spec.ContainerID, "new", al.Spec.ContainerID)
			// An exclusive ENI is owned by the pod, not the sandbox: the new
			// sandbox got the same ENI back, which must stay held.
			if old.Spec.ENI != al.Spec.ENI || old.Spec.IP != al.Spec.IP {
				a.cloudRelease(old)
			}
		}
	}
	if have, found, err := a.store.Get(al.Spec.ContainerID, ifNameOr(al.Spec.IfName)); err == nil && found && have.Spec.IP == al.Spec.IP {
		return nil // a retried ADD: already recorded
	}
	if err := a.store.Put(al); err != nil {
		a.cloudRelease(al)
		return err
	}
	return nil
}

// cloudRelease gives an allocation's address back to the cloud; the
// reconciler unassigns IPs above the pool's maximum and detaches and
// deletes ENIs nobody needs.
func (a *Agent) cloudRelease(al spec.Allocation) {
	if a.cfg.ENI == nil || al.Spec.ENI == "" {
		return
	}
	var err error
	if a.isExclusiveENI(al.Spec.ENI, al) {
		err = a.cfg.ENI.ReleaseENI(cloudOwner(al, true), al.Spec.ENI)
	} else {
		err = a.cfg.ENI.ReleaseIP(cloudOwner(al, false), al.Spec.IP)
	}
	if err != nil {
		a.log.Error("give an address back to the cloud", "pod", store.PodKey(al.Metadata), "ip", al.Spec.IP, "eni", al.Spec.ENI, "err", err)
	}
}

// eniInputs are the attached ENIs render needs in the ENI modes.
func (a *Agent) eniInputs() []spec.ENI {
	if a.cfg.ENI == nil {
		return nil
	}
	return a.cfg.ENI.ENIs()
}
