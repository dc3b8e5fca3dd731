package links

import (
	"net"
	"testing"
)

// HardwareMAC must agree with NormalMAC of the address's text, which it
// replaces on the paths that run for every link of the node.
func TestHardwareMAC(t *testing.T) {
	for _, hw := range []net.HardwareAddr{
		nil, {},
		{0x02, 0xAB, 0x00, 0x00, 0x00, 0x01},
		{1, 2, 3, 4},
		{1, 2, 3, 4, 5, 6, 7, 8},
		make(net.HardwareAddr, 16),
		make(net.HardwareAddr, 20),
	} {
		if got, want := HardwareMAC(hw), NormalMAC(hw.String()); got != want {
			t.Errorf("HardwareMAC(%v) = %q, NormalMAC gives %q", []byte(hw), got, want)
		}
	}
}
