package spec

// ENINeeds is what the node needs from the cloud: ENIs and secondary IPs for
// its pods plus the warm pool, bounded by the instance type's limits. The
// cloud reconciler converges the cloud to it; render never calls the cloud.
type ENINeeds struct {
	// Limits of the instance type: ENIs including the primary one, and IPv4
	// addresses per ENI including the ENI's own primary address.
	MaxENIs   int `json:"maxENIs"`
	IPsPerENI int `json:"ipsPerENI"`
	// MinIdle and MaxIdle bound the warm pool of unused secondary IPs.
	MinIdle int `json:"minIdle"`
	MaxIdle int `json:"maxIdle"`
	// IPsInUse counts pod IPs on shared ENIs; IPsWanted is IPsInUse plus the
	// idle IPs the pool should hold, clamped to what the limits allow.
	IPsInUse  int `json:"ipsInUse"`
	IPsWanted int `json:"ipsWanted"`
	// ExclusiveWanted counts pods that need a whole ENI.
	ExclusiveWanted int `json:"exclusiveWanted,omitempty"`
	// ENIs lists the attached ENIs (by id) and the new ones to create
	// (id empty, named new-1, new-2, …).
	ENIs []ENIWant `json:"enis,omitempty"`
}

// ENIWant is the desired content of one ENI.
type ENIWant struct {
	// ID is the ENI id for an attached ENI; empty for one still to create.
	ID string `json:"id,omitempty"`
	// Name identifies the item: the id, or new-N for an ENI to create.
	Name      string `json:"name"`
	MAC       string `json:"mac,omitempty"`
	Exclusive bool   `json:"exclusive,omitempty"`
	// Pod is the pod an exclusive ENI belongs to.
	Pod string `json:"pod,omitempty"`
	// InUse are the IPs pods use; Keep are idle IPs kept for the pool;
	// Release are idle IPs above the pool's maximum, to unassign.
	InUse   []string `json:"inUse,omitempty"`
	Keep    []string `json:"keep,omitempty"`
	Release []string `json:"release,omitempty"`
	// Add is how many more IPs to assign; for an ENI still to create it
	// includes the ENI's own primary IP.
	Add int `json:"add,omitempty"`
	// Delete says the ENI holds no pod and the pool does not need it: detach
	// and delete it (its IPs are all in Release).
	Delete bool `json:"delete,omitempty"`
}
