package traffic

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Forged traffic for source validation tests: packets built by hand on a
// raw socket carry whatever source address the caller names, and a packet
// socket on a pod's interface counts what arrives from one address (the
// replies a forged packet would draw to the pod it impersonates).

// Source ports of SendForged's TCP SYN and UDP datagram; a Sniffer counts
// only packets to them, the answers forged packets draw.
const (
	ForgedTCPPort = 40000
	ForgedUDPPort = 40001
)

// SendForged sends, from inside the namespace, one TCP SYN and one UDP
// datagram ("forged") to dst:port with source src.
func SendForged(nsPath, src, dst string, port uint16) error {
	s, err := netip.ParseAddr(src)
	if err != nil || !s.Is4() {
		return fmt.Errorf("source %q is not an IPv4 address", src)
	}
	d, err := netip.ParseAddr(dst)
	if err != nil || !d.Is4() {
		return fmt.Errorf("destination %q is not an IPv4 address", dst)
	}
	s4, d4 := s.As4(), d.As4()
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], ForgedTCPPort)
	binary.BigEndian.PutUint16(tcp[2:], port)
	binary.BigEndian.PutUint32(tcp[4:], 0x5eed0001)
	tcp[12] = 5 << 4 // header length, no options
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	binary.BigEndian.PutUint16(tcp[16:], l4Checksum(s4, d4, unix.IPPROTO_TCP, tcp))
	udp := append(make([]byte, 8), "forged"...)
	binary.BigEndian.PutUint16(udp[0:], ForgedUDPPort)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[6:], l4Checksum(s4, d4, unix.IPPROTO_UDP, udp))
	return inNetns(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		for _, p := range []struct {
			proto   byte
			payload []byte
		}{{unix.IPPROTO_TCP, tcp}, {unix.IPPROTO_UDP, udp}} {
			pkt := make([]byte, 20, 20+len(p.payload))
			pkt[0] = 0x45 // IPv4, 20-byte header; the kernel fills id and checksum
			binary.BigEndian.PutUint16(pkt[2:], uint16(20+len(p.payload)))
			pkt[8] = 64
			pkt[9] = p.proto
			copy(pkt[12:16], s4[:])
			copy(pkt[16:20], d4[:])
			pkt = append(pkt, p.payload...)
			if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
				return fmt.Errorf("send from %s to %s: %w", src, dst, err)
			}
		}
		return nil
	})
}

// l4Checksum is the TCP/UDP checksum over the IPv4 pseudo-header and seg.
func l4Checksum(src, dst [4]byte, proto byte, seg []byte) uint16 {
	b := append(append(append([]byte{}, src[:]...), dst[:]...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	b = append(b, seg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint32
	for i := 0; i < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Sniffer counts the IPv4 TCP and UDP packets from one address to
// SendForged's ports that arrive on one interface of a namespace: the
// answers to forged packets, and no other traffic between the two pods.
type Sniffer struct {
	fd   int
	n    atomic.Int64
	stop atomic.Bool
	done chan struct{}
}

// Sniff opens a packet socket on ifName in the namespace (created inside
// it, so it stays there) counting packets whose source is from. Close it.
func Sniff(nsPath, ifName, from string) (*Sniffer, error) {
	a, err := netip.ParseAddr(from)
	if err != nil || !a.Is4() {
		return nil, fmt.Errorf("source %q is not an IPv4 address", from)
	}
	src := a.As4()
	s := &Sniffer{fd: -1, done: make(chan struct{})}
	err = inNetns(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		if s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP))); err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		return unix.Bind(s.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	if err == nil {
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		err = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	}
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("sniff %s in %s: %w", ifName, nsPath, err)
	}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for !s.stop.Load() {
			n, _, err := unix.Recvfrom(s.fd, buf, 0)
			if err == nil && answer(buf[:n], src) {
				s.n.Add(1)
			}
		}
	}()
	return s, nil
}

// answer reports whether pkt, an IPv4 packet, is TCP or UDP from src to
// one of SendForged's source ports.
func answer(pkt []byte, src [4]byte) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || [4]byte(pkt[12:16]) != src {
		return false
	}
	hl := int(pkt[0]&0x0f) * 4
	if len(pkt) < hl+4 {
		return false
	}
	dport := binary.BigEndian.Uint16(pkt[hl+2:])
	switch pkt[9] {
	case unix.IPPROTO_TCP:
		return dport == ForgedTCPPort
	case unix.IPPROTO_UDP:
		return dport == ForgedUDPPort
	}
	return false
}

// Reset sets the count back to zero.
func (s *Sniffer) Reset() { s.n.Store(0) }

// Wait returns the count once it reaches want, or after d.
func (s *Sniffer) Wait(want int64, d time.Duration) int64 {
	deadline := time.Now().Add(d)
	for s.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return s.n.Load()
}

// Close stops counting and closes the socket.
func (s *Sniffer) Close() {
	s.stop.Store(true)
	<-s.done
	unix.Close(s.fd)
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// SendIPv6 sends n IPv6 packets out of ifName in the namespace, written
// whole on a packet socket so that they leave whatever the namespace's
// IPv6 state (no address, DAD pending, IPv6 off): link-local fe80::1 to
// the all-nodes group ff02::1, hop limit 1, no payload (next header 59).
// Pods are IPv4-only: source validation drops and counts such packets
// on the host end of the pod's veth.
func SendIPv6(nsPath, ifName string, n int) error {
	return inNetns(nsPath, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("%s has no Ethernet address", ifName)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		allNodesMAC := []byte{0x33, 0x33, 0, 0, 0, 1}
		frame := append(append(slices.Clone(allNodesMAC), ifi.HardwareAddr...), 0x86, 0xdd)
		ip6 := make([]byte, 40)
		ip6[0] = 6 << 4
		ip6[6] = 59 // no next header
		ip6[7] = 1  // hop limit
		src, dst := netip.MustParseAddr("fe80::1").As16(), netip.MustParseAddr("ff02::1").As16()
		copy(ip6[8:24], src[:])
		copy(ip6[24:40], dst[:])
		frame = append(frame, ip6...)
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IPV6), Ifindex: ifi.Index, Halen: 6}
		copy(to.Addr[:], allNodesMAC)
		for range n {
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				return fmt.Errorf("send an IPv6 packet on %s: %w", ifName, err)
			}
		}
		return nil
	})
}
