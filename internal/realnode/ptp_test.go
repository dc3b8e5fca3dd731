package realnode

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// The ptp node's configuration is a chain libcni loads: ptp with
// host-local on the node's podCIDR, then bandwidth taking the runtime's
// bandwidth capability (the annotations).
func TestPTPConflist(t *testing.T) {
	l, err := libcni.ConfListFromBytes([]byte(PTPConflist(netip.MustParsePrefix("198.18.130.0/24"))))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Plugins) != 2 || l.Plugins[0].Network.Type != "ptp" || l.Plugins[1].Network.Type != "bandwidth" {
		t.Fatalf("chain %+v", l.Plugins)
	}
	if !l.Plugins[1].Network.Capabilities["bandwidth"] {
		t.Error("bandwidth plugin without the bandwidth capability")
	}
	var ptp struct {
		IPMasq bool `json:"ipMasq"`
		IPAM   struct {
			Type   string `json:"type"`
			Ranges [][]struct {
				Subnet string `json:"subnet"`
			} `json:"ranges"`
		} `json:"ipam"`
	}
	if err := json.Unmarshal(l.Plugins[0].Bytes, &ptp); err != nil {
		t.Fatal(err)
	}
	if ptp.IPMasq || ptp.IPAM.Type != "host-local" || len(ptp.IPAM.Ranges) != 1 || ptp.IPAM.Ranges[0][0].Subnet != "198.18.130.0/24" {
		t.Errorf("ptp %+v", ptp)
	}
}
