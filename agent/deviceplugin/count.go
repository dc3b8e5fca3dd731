package deviceplugin

import (
	"fmt"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// ExclusiveSlots is the number of aliyun/eni devices a node advertises: the
// instance type's ENI quota (maxENIs, EniQuantity, which counts the primary
// ENI) minus the primary ENI, minus ENIs attached by someone else (foreign:
// they take slots all the same), minus the ENIs the node keeps for
// multi-IP pods (reservedForMultiIP). Never negative.
func ExclusiveSlots(maxENIs, foreign, reservedForMultiIP int) (int, error) {
	switch {
	case maxENIs < 1:
		return 0, fmt.Errorf("device plugin: maxENIs: %d (the instance type's ENI quota is unknown)", maxENIs)
	case foreign < 0:
		return 0, fmt.Errorf("device plugin: foreign ENIs: %d is negative", foreign)
	case reservedForMultiIP < 0:
		return 0, fmt.Errorf("device plugin: reservedENIsForMultiIP: %d is negative", reservedForMultiIP)
	}
	return max(maxENIs-1-foreign-reservedForMultiIP, 0), nil
}

// ENISlots is ExclusiveSlots for the node the started ENI reconciler
// serves: its limits come from DescribeInstanceTypes (or the
// configuration), its count of foreign ENIs from its last resync.
func ENISlots(r *eni.Reconciler, reservedForMultiIP int) (int, error) {
	st := r.Status()
	if !st.Started {
		return 0, fmt.Errorf("device plugin: the ENI reconciler has not started (limits unknown)")
	}
	return ExclusiveSlots(st.Limits.MaxENIs, st.ForeignENIs, reservedForMultiIP)
}
