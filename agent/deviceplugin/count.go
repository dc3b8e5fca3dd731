package deviceplugin

import (
	"fmt"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// ExclusiveSlots is the number of aliyun/eni devices a node advertises: the
// instance type's ENI quota (maxENIs, EniQuantity, which counts the primary
// ENI) minus the primary ENI, minus ENIs attached by someone else (foreign:
// they take slots all the same), minus the ENIs the node keeps for
// multi-IP pods (reservedForMultiIP). Never negative. It is the pool's own
// bound (eni.SplitSlots), so the kubelet never schedules a pod for a slot
// the pool would refuse.
func ExclusiveSlots(maxENIs, foreign, reservedForMultiIP int) (int, error) {
	switch {
	case maxENIs < 1:
		return 0, fmt.Errorf("device plugin: maxENIs: %d (the instance type's ENI quota is unknown)", maxENIs)
	case foreign < 0:
		return 0, fmt.Errorf("device plugin: foreign ENIs: %d is negative", foreign)
	case reservedForMultiIP < 0:
		return 0, fmt.Errorf("device plugin: reservedENIsForMultiIP: %d is negative", reservedForMultiIP)
	}
	return eni.SplitSlots(maxENIs, foreign, &reservedForMultiIP).Exclusive, nil
}

// ENISlots is the count for the node the started ENI reconciler serves:
// the exclusive slots of its Status, from its limits (DescribeInstanceTypes
// or the configuration), its count of foreign ENIs at its last resync and
// its reservation for shared ENIs, the very bound its pool honours.
func ENISlots(r *eni.Reconciler) (int, error) {
	st := r.Status()
	if !st.Started {
		return 0, fmt.Errorf("device plugin: the ENI reconciler has not started (limits unknown)")
	}
	if st.Limits.MaxENIs < 1 {
		return 0, fmt.Errorf("device plugin: maxENIs: %d (the instance type's ENI quota is unknown)", st.Limits.MaxENIs)
	}
	return st.Slots.Exclusive, nil
}
