package spec

// ObjectMeta is the part of Kubernetes metadata our own kinds use.
type ObjectMeta struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Allocation is the record of one pod attachment the agent keeps (kind
// Allocation): the pod, where its network lives, and the IP it was given.
type Allocation struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   ObjectMeta     `json:"metadata"`
	Spec       AllocationSpec `json:"spec"`
}

// AllocationSpec is the content of an Allocation.
type AllocationSpec struct {
	IP          string `json:"ip"`
	Netns       string `json:"netns"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifName,omitempty"`
	// UID is the pod's uid at allocation time; a pod object with another uid
	// is a new pod under an old name.
	UID string `json:"uid,omitempty"`
	// ENI is the ENI the IP belongs to, in ENI modes.
	ENI string `json:"eni,omitempty"`
	// Seq is the store's order of recording (0: unknown, an older record).
	// Of two attachments that name one network namespace and interface,
	// the first recorded keeps them: the pod already running is not broken
	// by a sandbox that came second.
	Seq uint64 `json:"seq,omitempty"`
}

// ENI describes one ENI attached to the node (kind ENI), as the cloud
// reconciler observed it.
type ENI struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       ENISpec    `json:"spec"`
}

// ENISpec is the content of an ENI object.
type ENISpec struct {
	MAC          string   `json:"mac"`
	PrimaryIP    string   `json:"primaryIP"`
	SecondaryIPs []string `json:"secondaryIPs,omitempty"`
	VSwitchCIDR  string   `json:"vswitchCIDR"`
	Gateway      string   `json:"gateway"`
	DeviceIndex  int      `json:"deviceIndex"`
	Exclusive    bool     `json:"exclusive,omitempty"`
}
