package op

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// RouteConn is an rtnetlink socket of one namespace for the reads a plan
// makes, with two differences from the netlink library's handles:
//
//   - Strict checking is on, so the kernel honours the filters a dump
//     request carries (routes by protocol and output link, neighbours and
//     addresses by link) instead of sending the whole table for the
//     library to filter. A plan scoped to one pod then reads that pod's
//     objects, not every pod's.
//   - One request costs a send and the receives its replies need: no
//     socket-name lookup and no zeroed 64 KiB buffer per receive, which a
//     full plan, a few requests per pod, would pay thousands of times.
//
// It is safe for concurrent use; requests on one connection take turns.
type RouteConn struct {
	mu  sync.Mutex
	fd  int
	seq uint32
}

// recvBufs are receive buffers, shared by every connection (a node has a
// connection per pod namespace, but only a few requests in flight). The
// kernel caps a dump's datagrams at 32 KiB.
var recvBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// routeTimeout bounds every wait for the kernel, in seconds, so that a lost
// reply is an error rather than a plan that never ends.
const routeTimeout = 60

// OpenRouteConn opens a RouteConn in the calling thread's network
// namespace (Namespaces implementations call it inside the namespace: a
// socket belongs to the namespace it was created in).
func OpenRouteConn() (*RouteConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink socket: %w", err)
	}
	c := &RouteConn{fd: fd}
	tv := unix.Timeval{Sec: routeTimeout}
	for _, set := range []func() error{
		func() error { return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}) },
		func() error { return unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1) },
		// Extended acks carry the kernel's reason when it refuses a request.
		func() error { return unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1) },
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) },
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) },
	} {
		if err := set(); err != nil {
			c.Close()
			return nil, fmt.Errorf("set up rtnetlink socket: %w", err)
		}
	}
	return c, nil
}

// Close closes the socket.
func (c *RouteConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

// ErrDumpInterrupted means the kernel's table changed while it was dumped.
var ErrDumpInterrupted = errors.New("dump interrupted: the table changed while it was read")

// request sends one request and returns the payloads of the replies of
// type resType, up to the end of the dump or the ack.
func (c *RouteConn) request(typ uint16, flags int, resType uint16, data []nl.NetlinkRequestData) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil, errors.New("rtnetlink socket is closed")
	}
	c.seq++
	req := nl.NewNetlinkRequest(int(typ), flags)
	req.Seq = c.seq
	req.Data = data
	if err := unix.Sendto(c.fd, req.Serialize(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	// A dump is a get with NLM_F_DUMP, as rtnetlink decides: a request
	// that creates shares its bits (NLM_F_EXCL is NLM_F_MATCH). rtnetlink
	// types come in fours, new, del, get, set: a get is type%4 == 2.
	dump := typ%4 == 2 && flags&unix.NLM_F_DUMP != 0
	bp := recvBufs.Get().(*[]byte)
	defer recvBufs.Put(bp)
	buf := *bp
	var out [][]byte
	intr := false
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return nil, fmt.Errorf("no reply from the kernel within %ds: %w", routeTimeout, err)
		case err != nil:
			return nil, fmt.Errorf("receive: %w", err)
		case n > len(buf):
			return nil, fmt.Errorf("netlink reply of %d bytes exceeds the %d byte buffer", n, len(buf))
		}
		// One copy per datagram: the payloads returned point into it.
		ms, err := syscall.ParseNetlinkMessage(append([]byte(nil), buf[:n]...))
		if err != nil {
			return nil, fmt.Errorf("parse reply: %w", err)
		}
		for _, m := range ms {
			if m.Header.Seq != c.seq {
				continue // a late reply to an earlier request
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				if err := replyErr(m); err != nil {
					return nil, err
				}
				if m.Header.Type == unix.NLMSG_ERROR && dump {
					continue // an ack before the end of a dump
				}
				if intr {
					return out, ErrDumpInterrupted
				}
				return out, nil
			case resType:
				out = append(out, m.Data)
			}
		}
	}
}

// replyErr decodes the errno of an NLMSG_ERROR or NLMSG_DONE message, with
// the kernel's reason text when it gave one.
func replyErr(m syscall.NetlinkMessage) error {
	if len(m.Data) < 4 {
		return nil // a DONE without payload
	}
	code := int32(binary.NativeEndian.Uint32(m.Data[0:4]))
	if code == 0 {
		return nil
	}
	errno := syscall.Errno(-code)
	if m.Header.Type == unix.NLMSG_ERROR && m.Header.Flags&unix.NLM_F_ACK_TLVS != 0 {
		// The echoed request comes first unless NETLINK_CAP_ACK trimmed it.
		tlvs := m.Data[4:]
		if m.Header.Flags&unix.NLM_F_CAPPED == 0 && len(tlvs) >= unix.NLMSG_HDRLEN {
			if l := int(binary.NativeEndian.Uint32(tlvs[0:4])); l <= len(tlvs) {
				tlvs = tlvs[nlmAlign(l):]
			}
		}
		if text := AttrString(tlvs, unix.NLMSGERR_ATTR_MSG); text != "" {
			return fmt.Errorf("%w (%s)", errno, text)
		}
	}
	return errno
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// RouteDump sends one rtnetlink dump request (header and attributes in
// data) on netns's RouteConn and returns the payloads of the replies of
// type resType. A dump the kernel marks interrupted is retried, so that no
// plan is made from a torn view.
func RouteDump(ns Namespaces, netns string, typ, resType uint16, data ...nl.NetlinkRequestData) ([][]byte, error) {
	return routeRequest(ns, netns, typ, unix.NLM_F_DUMP, resType, data)
}

// RouteGet sends one rtnetlink request that is not a dump (a get by name
// or index) and returns the payloads of the replies of type resType.
func RouteGet(ns Namespaces, netns string, typ, resType uint16, data ...nl.NetlinkRequestData) ([][]byte, error) {
	return routeRequest(ns, netns, typ, unix.NLM_F_ACK, resType, data)
}

// Write sends one rtnetlink request that changes something (typ with
// flags, NLM_F_ACK added) and waits for its acknowledgement: the kernel's
// errno, with its reason text when it gave one, is the error.
func (c *RouteConn) Write(typ uint16, flags int, data ...nl.NetlinkRequestData) error {
	_, err := c.request(typ, flags|unix.NLM_F_ACK, 0, data)
	return err
}

func routeRequest(ns Namespaces, netns string, typ uint16, flags int, resType uint16, data []nl.NetlinkRequestData) ([][]byte, error) {
	c, err := ns.RouteConn(netns)
	if err != nil {
		return nil, err
	}
	var msgs [][]byte
	for range dumpTries {
		msgs, err = c.request(typ, flags, resType, data)
		if !errors.Is(err, ErrDumpInterrupted) {
			return msgs, err
		}
	}
	return msgs, fmt.Errorf("dump still interrupted after %d tries: %w", dumpTries, err)
}

// Attr returns the payload of the first attribute of type typ in b, a run
// of rtnetlink attributes (the part of a message after its fixed header),
// without parsing the others; ok is false when there is none.
func Attr(b []byte, typ uint16) (val []byte, ok bool) {
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) & nl.NLA_TYPE_MASK
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil, false
		}
		if t == typ {
			return b[unix.SizeofRtAttr:l], true
		}
		b = b[min(rtaAlign(l), len(b)):]
	}
	return nil, false
}

func rtaAlign(l int) int { return (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }

// AttrString is Attr for a NUL-terminated string attribute.
func AttrString(b []byte, typ uint16) string {
	v, _ := Attr(b, typ)
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}

// AttrU32 is Attr for a 32-bit attribute in host byte order.
func AttrU32(b []byte, typ uint16) (uint32, bool) {
	v, ok := Attr(b, typ)
	if !ok || len(v) != 4 {
		return 0, false
	}
	return binary.NativeEndian.Uint32(v), true
}
