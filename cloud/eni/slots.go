package eni

import (
	"fmt"
	"math"
)

// AllSlots, as Config.ReservedShared, keeps every secondary ENI slot for
// shared ENIs: no exclusive ENI is made.
const AllSlots = math.MaxInt32

// Slots is how the instance type's secondary ENI slots (its ENI quota less
// the primary ENI) are divided between shared ENIs, whose secondary IPs
// serve multi-IP pods, and exclusive ENIs, each moved whole into one pod.
//
// Without a reservation (ReservedShared nil) both kinds take any free slot,
// first come. With one, the two kinds never take each other's slots: at
// most ReservedShared slots hold shared ENIs, and exclusive ENIs get only
// the others. ENIs attached by someone else take slots all the same; they
// are charged to the exclusive side first, as the aliyun/eni device plugin
// counts them, so the count the kubelet schedules against is the count the
// pool honours.
type Slots struct {
	// Shared is the most shared ENIs the instance can hold now.
	Shared int
	// Exclusive is the most exclusive ENIs the instance can hold now: the
	// number of aliyun/eni devices to advertise.
	Exclusive int
	// Split is set when a reservation divides the slots.
	Split bool
	// Reserved is the reservation, clamped to the secondary slots (0
	// without a split).
	Reserved int
}

// SplitSlots divides the slots of an instance type with maxENIs ENIs
// (EniQuantity, the primary included), foreign of them attached by someone
// else, with reservedShared of them kept for shared ENIs (nil: no
// reservation). It is pure; the device plugin and the pool planner both
// use it.
func SplitSlots(maxENIs, foreign int, reservedShared *int) Slots {
	secondary := max(maxENIs-1, 0)
	free := max(secondary-max(foreign, 0), 0)
	if reservedShared == nil {
		return Slots{Shared: free, Exclusive: free}
	}
	r := min(max(*reservedShared, 0), secondary)
	return Slots{
		Shared:    min(r, free),
		Exclusive: max(secondary-max(foreign, 0)-r, 0),
		Split:     true,
		Reserved:  r,
	}
}

// exclusiveWhy says why no slot is left for another exclusive ENI.
func (s Slots) exclusiveWhy(maxENIs, foreign, inUse int) string {
	if !s.Split {
		return fmt.Sprintf("the instance type allows %d ENIs and all secondary slots are taken", maxENIs)
	}
	return fmt.Sprintf("the instance type allows %d ENIs: with the primary ENI, %d attached by others and %d kept for multi-IP pods (reservedENIsForMultiIP), %d are for exclusive ENIs and %d of them are taken",
		maxENIs, foreign, s.Reserved, s.Exclusive, inUse)
}
