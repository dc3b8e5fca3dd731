package emulator

import (
	"net/netip"
)

// pool hands out the IPv4 addresses of one vSwitch. The network address,
// the gateway (network+1) and the broadcast address are never handed out.
//
// held counts addresses "other tenants" hold: it is how a capped or
// exhausted vSwitch is modelled without choosing which addresses are gone,
// so releasing one of ours frees exactly one more, as in the cloud.
type pool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	used    map[netip.Addr]string // address -> ENI id holding it
	held    int
	// next is where the search for a free address starts: handing out
	// addresses round-robin keeps a just-released IP from being reused at
	// once, which would hide stale-IP bugs in the client.
	next netip.Addr
}

func newPool(p netip.Prefix) *pool {
	gw := p.Addr().Next()
	return &pool{prefix: p, gateway: gw, used: map[netip.Addr]string{}, next: gw.Next()}
}

// broadcast returns the last address of the prefix.
func broadcast(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// usable says whether a may be given to an ENI in the vSwitch p.
func usable(p netip.Prefix, a netip.Addr) bool {
	return p.Contains(a) && a != p.Addr() && a != p.Addr().Next() && a != broadcast(p)
}

// size is the number of addresses ENIs may ever hold in the vSwitch.
func (p *pool) size() int { return 1<<(32-p.prefix.Bits()) - 3 }

// available is what DescribeVSwitches reports as AvailableIpAddressCount.
func (p *pool) available() int {
	n := p.size() - len(p.used) - p.held
	if n < 0 {
		return 0
	}
	return n
}

// setAvailable makes exactly n more addresses allocatable (clamped to what
// the CIDR has free).
func (p *pool) setAvailable(n int) {
	free := p.size() - len(p.used)
	if n > free {
		n = free
	}
	if n < 0 {
		n = 0
	}
	p.held = free - n
}

// alloc hands out n addresses to the ENI, all or none.
func (p *pool) alloc(eni string, n int) ([]netip.Addr, bool) {
	if n > p.available() {
		return nil, false
	}
	out := make([]netip.Addr, 0, n)
	a := p.next
	for len(out) < n {
		if !usable(p.prefix, a) {
			a = p.gateway.Next() // wrapped past the broadcast address
		}
		if _, taken := p.used[a]; !taken {
			p.used[a] = eni
			out = append(out, a)
		}
		a = a.Next()
	}
	p.next = a
	return out, true
}

// take reserves the given addresses for the ENI, all or none. It reports
// the first address that is not usable or already taken.
func (p *pool) take(eni string, addrs []netip.Addr) (bad netip.Addr, taken bool, ok bool) {
	seen := map[netip.Addr]bool{}
	for _, a := range addrs {
		if !usable(p.prefix, a) {
			return a, false, false
		}
		if _, t := p.used[a]; t || seen[a] {
			return a, true, false
		}
		seen[a] = true
	}
	if len(addrs) > p.available() {
		return netip.Addr{}, false, false
	}
	for _, a := range addrs {
		p.used[a] = eni
	}
	return netip.Addr{}, false, true
}

func (p *pool) release(addrs ...netip.Addr) {
	for _, a := range addrs {
		delete(p.used, a)
	}
}
