package emulator

// Dump is the emulator's whole dynamic state, for test assertions, for
// terwayctl emulator dump and for reading a failed test's log.
type Dump struct {
	Instances []DumpInstance `json:"instances"`
	ENIs      []DumpENI      `json:"enis"`
	VSwitches []DumpVSwitch  `json:"vswitches"`
	Calls     map[string]int `json:"calls"`
	Faults    map[string]int `json:"faults"`
}

// DumpInstance is an instance and its attached ENIs.
type DumpInstance struct {
	ID           string   `json:"id"`
	InstanceType string   `json:"instanceType"`
	Status       string   `json:"status"`
	ZoneID       string   `json:"zoneId"`
	PrimaryIP    string   `json:"primaryIp"`
	ENIs         []string `json:"enis"`
}

// DumpENI is one ENI.
type DumpENI struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	Status      string            `json:"status"`
	InstanceID  string            `json:"instanceId,omitempty"`
	DeviceIndex int               `json:"deviceIndex"`
	MAC         string            `json:"mac"`
	VSwitchID   string            `json:"vswitchId"`
	PrimaryIP   string            `json:"primaryIp"`
	IPs         []string          `json:"secondaryIps"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// DumpVSwitch is a vSwitch and how many IPs it still has.
type DumpVSwitch struct {
	ID        string `json:"id"`
	ZoneID    string `json:"zoneId"`
	CIDR      string `json:"cidr"`
	Available int    `json:"available"`
}

// Dump returns a snapshot of the state. ENIs are in creation order.
func (e *Emulator) Dump() Dump {
	e.mu.Lock()
	defer e.mu.Unlock()
	d := Dump{Instances: []DumpInstance{}, ENIs: []DumpENI{}, VSwitches: []DumpVSwitch{}, Calls: map[string]int{}, Faults: map[string]int{}}
	enis := e.sortedENIs()
	for _, id := range e.instOrder {
		in := e.instances[id]
		di := DumpInstance{ID: in.ID, InstanceType: in.typ.ID, Status: in.Status, ZoneID: in.ZoneID, PrimaryIP: in.PrimaryIP, ENIs: []string{}}
		for _, n := range enis {
			if n.instanceID == in.ID {
				di.ENIs = append(di.ENIs, n.id)
			}
		}
		d.Instances = append(d.Instances, di)
	}
	for _, n := range enis {
		de := DumpENI{
			ID: n.id, Type: n.typ, Status: n.status, InstanceID: n.instanceID, DeviceIndex: n.deviceIndex,
			MAC: n.mac, VSwitchID: n.vsw.ID, PrimaryIP: n.primaryIP.String(), IPs: addrStrings(n.secondary),
		}
		if len(n.tags) > 0 {
			de.Tags = map[string]string{}
			for _, t := range n.tags {
				de.Tags[t.Key] = t.Value
			}
		}
		d.ENIs = append(d.ENIs, de)
	}
	for _, id := range e.vswOrder {
		vs := e.vswitches[id]
		d.VSwitches = append(d.VSwitches, DumpVSwitch{ID: vs.ID, ZoneID: vs.ZoneID, CIDR: vs.CIDR, Available: vs.pool.available()})
	}
	for k, v := range e.calls {
		d.Calls[k] = v
	}
	for k, v := range e.injected {
		d.Faults[k] = v
	}
	return d
}

// ENI returns the dump of one ENI, for assertions.
func (d Dump) ENI(id string) (DumpENI, bool) {
	for _, n := range d.ENIs {
		if n.ID == id {
			return n, true
		}
	}
	return DumpENI{}, false
}
