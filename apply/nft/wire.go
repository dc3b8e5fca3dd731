package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
)

// The netlink transport. We speak NETLINK_NETFILTER on a socket of our own
// rather than through nftables.Conn because a transaction here must (1) carry
// chain comments, which nftables.Chain v0.3.0 cannot express, (2) say which
// message of a batch the kernel refused, which Conn.Flush folds into one
// anonymous error, and (3) size its socket buffers to the batch, which is
// what turns 1,000+ rules into EMSGSIZE at default sizes. Expressions are
// still google/nftables expr values, marshalled by that package.

const (
	subsysNFTables = unix.NFNL_SUBSYS_NFTABLES
	familyInet     = unix.NFPROTO_INET
	// recvBufSize is the socket receive buffer: the kernel queues one ack
	// per batch message before we read any, so it must hold them all.
	recvBufSize = 16 << 20
	// minSendBuf is the send buffer floor; a batch is one sendmsg and
	// netlink refuses (EMSGSIZE) a message larger than the send buffer.
	minSendBuf = 1 << 20
	// replyTimeout bounds every wait for the kernel, so a lost reply is an
	// error rather than a hung sync.
	replyTimeout = 30
	// recvChunk is the read buffer: the kernel sends every ack as its own
	// datagram and caps dump datagrams at 32 KiB.
	recvChunk = 64 << 10
)

// msg is one received nftables message: its type (NFT_MSG_*), flags, the
// family from the nfgenmsg header, and the attributes after that header.
type msg struct {
	typ    uint16
	flags  uint16
	family uint8
	attrs  []byte
}

// conn is a NETLINK_NETFILTER socket opened inside one network namespace.
type conn struct {
	fd      int
	seq     uint32
	rbuf    []byte
	sendBuf int
	// keepInterrupted makes dump return what it read even when the
	// kernel flags the dump interrupted (a commit came meanwhile): set by
	// a loose observeOnce, whose caller accounts for the commits.
	keepInterrupted bool
}

// dials counts the sockets dial opened, for tests of their reuse.
var dials atomic.Int64

// dial opens the socket inside netns: a socket belongs to the namespace it
// was created in, whatever thread later uses it.
func dial(ns op.Namespaces, netns string) (*conn, error) {
	dials.Add(1)
	fd := -1
	err := ns.Do(netns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open nftables netlink socket in %s: %w", nsName(netns), err)
	}
	c := &conn{fd: fd, seq: 1, rbuf: make([]byte, recvChunk)}
	if err := c.setup(); err != nil {
		c.close()
		return nil, fmt.Errorf("set up nftables netlink socket in %s: %w", nsName(netns), err)
	}
	return c, nil
}

func (c *conn) setup() error {
	if err := unix.Bind(c.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	// Acks without the echoed request keep a 1,000-message batch's replies
	// small; extended acks carry the kernel's reason text.
	for _, o := range []int{unix.NETLINK_CAP_ACK, unix.NETLINK_EXT_ACK} {
		if err := unix.SetsockoptInt(c.fd, unix.SOL_NETLINK, o, 1); err != nil {
			return fmt.Errorf("setsockopt %d: %w", o, err)
		}
	}
	if err := setBuf(c.fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, recvBufSize); err != nil {
		return err
	}
	tv := unix.Timeval{Sec: replyTimeout}
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("set receive timeout: %w", err)
	}
	return nil
}

// setBuf sets a socket buffer, beyond net.core.[rw]mem_max when we have
// CAP_NET_ADMIN (the agent has), else as far as the sysctl allows.
func setBuf(fd, force, plain, size int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size); err == nil {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size); err != nil {
		return fmt.Errorf("set socket buffer to %d bytes: %w", size, err)
	}
	return nil
}

func (c *conn) close() {
	if c.fd >= 0 {
		unix.Close(c.fd)
		c.fd = -1
	}
}

func (c *conn) nextSeq() uint32 {
	c.seq++
	return c.seq
}

// appendMsg encodes one netlink message: header, nfgenmsg, attributes.
func appendMsg(b []byte, typ, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
	n := unix.NLMSG_HDRLEN + 4 + len(attrs)
	b = binary.NativeEndian.AppendUint32(b, uint32(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = append(b, family, unix.NFNETLINK_V0)
	b = binary.BigEndian.AppendUint16(b, resID)
	b = append(b, attrs...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nftType(t uint16) uint16 { return subsysNFTables<<8 | t }

func (c *conn) send(b []byte) error {
	if want := max(minSendBuf, 2*len(b)); want > c.sendBuf {
		if err := setBuf(c.fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, want); err != nil {
			return err
		}
		c.sendBuf = want
	}
	return unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

func (c *conn) recv() ([]syscall.NetlinkMessage, error) {
	for {
		n, _, err := unix.Recvfrom(c.fd, c.rbuf, unix.MSG_TRUNC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err == nil && n > len(c.rbuf) {
			return nil, fmt.Errorf("netlink reply of %d bytes exceeds the %d byte buffer", n, len(c.rbuf))
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) {
				return nil, fmt.Errorf("no reply from the kernel within %ds: %w", replyTimeout, err)
			}
			return nil, err
		}
		return syscall.ParseNetlinkMessage(c.rbuf[:n])
	}
}

// nlError decodes an NLMSG_ERROR payload: the errno (0 for an ack), the
// sequence number of the request it answers, and the kernel's message.
func nlError(m syscall.NetlinkMessage) (errno syscall.Errno, seq uint32, text string) {
	d := m.Data
	if len(d) < 4+unix.NLMSG_HDRLEN {
		return unix.EPROTO, 0, "short netlink error message"
	}
	code := int32(binary.NativeEndian.Uint32(d[0:4]))
	seq = binary.NativeEndian.Uint32(d[4+8 : 4+12])
	if m.Header.Flags&unix.NLM_F_ACK_TLVS != 0 {
		// With NETLINK_CAP_ACK the request is not echoed, TLVs follow.
		text = extackMsg(d[4+unix.NLMSG_HDRLEN:])
	}
	return syscall.Errno(-code), seq, text
}

func extackMsg(b []byte) string {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4])
		if l < 4 || l > len(b) {
			return ""
		}
		if t == unix.NLMSGERR_ATTR_MSG {
			return strings.TrimRight(string(b[4:l]), "\x00")
		}
		b = b[(l+3)&^3:]
	}
	return ""
}

// errDumpInterrupted means the table changed while we read it; the caller
// reads again.
var errDumpInterrupted = errors.New("nftables changed during the dump")

// dump sends a dump request and collects every reply up to NLMSG_DONE.
func (c *conn) dump(typ uint16, family uint8, attrs []byte) ([]msg, error) {
	seq := c.nextSeq()
	req := appendMsg(nil, nftType(typ), unix.NLM_F_REQUEST|unix.NLM_F_DUMP, seq, family, 0, attrs)
	if err := c.send(req); err != nil {
		return nil, err
	}
	var out []msg
	intr := false
	for {
		ms, err := c.recv()
		if err != nil {
			return nil, err
		}
		for _, m := range ms {
			if m.Header.Seq != seq {
				continue // a late reply to an earlier request
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if intr && !c.keepInterrupted {
					return nil, errDumpInterrupted
				}
				return out, nil
			case unix.NLMSG_ERROR:
				errno, _, text := nlError(m)
				if errno == 0 {
					continue
				}
				return nil, kernelErr(errno, text)
			}
			out = append(out, toMsg(m))
		}
	}
}

// get sends a non-dump request and returns its single reply, or an error
// wrapping the errno (ENOENT when the object does not exist).
func (c *conn) get(typ uint16, family uint8, attrs []byte) (msg, error) {
	replies, errs, err := c.getMany(typ, family, [][]byte{attrs})
	switch {
	case err != nil:
		return msg{}, err
	case errs[0] != nil:
		return msg{}, errs[0]
	case replies[0] == nil:
		return msg{}, errAckedWithoutReply
	}
	return *replies[0], nil
}

// errAckedWithoutReply is a get the kernel acked with no reply.
var errAckedWithoutReply = fmt.Errorf("kernel acked without a reply: %w", unix.EPROTO)

// getManyChunk bounds the requests getMany sends at once, so that their
// replies fit the socket's receive buffer.
const getManyChunk = 64

// getMany sends each of the requests (attrs) as get does, many in one
// system call, and returns each one's reply (nil when the kernel acked it
// without one) and error, in order. The kernel answers a buffer of
// requests in one pass, where get takes a round trip each. err is set only
// when the socket fails; a request's own failure is in errs.
func (c *conn) getMany(typ uint16, family uint8, attrs [][]byte) (replies []*msg, errs []error, err error) {
	replies, errs = make([]*msg, len(attrs)), make([]error, len(attrs))
	for from := 0; from < len(attrs); from += getManyChunk {
		to := min(from+getManyChunk, len(attrs))
		var req []byte
		bySeq := map[uint32]int{}
		for i := from; i < to; i++ {
			seq := c.nextSeq()
			bySeq[seq] = i
			req = appendMsg(req, nftType(typ), unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, family, 0, attrs[i])
		}
		if err := c.send(req); err != nil {
			return nil, nil, err
		}
		for len(bySeq) > 0 {
			ms, err := c.recv()
			if err != nil {
				return nil, nil, err
			}
			for _, m := range ms {
				i, ok := bySeq[m.Header.Seq]
				if !ok {
					continue
				}
				if m.Header.Type == unix.NLMSG_ERROR {
					if errno, _, text := nlError(m); errno != 0 {
						errs[i] = kernelErr(errno, text)
					}
					delete(bySeq, m.Header.Seq)
					continue
				}
				r := toMsg(m)
				replies[i] = &r
			}
		}
	}
	return replies, errs, nil
}

// toMsg copies a received message out of the receive buffer, which the
// next recv overwrites.
func toMsg(m syscall.NetlinkMessage) msg {
	out := msg{typ: m.Header.Type & 0xff, flags: m.Header.Flags}
	if len(m.Data) >= 4 {
		out.family = m.Data[0]
		out.attrs = slices.Clone(m.Data[4:])
	}
	return out
}

func kernelErr(errno syscall.Errno, text string) error {
	if text != "" {
		return fmt.Errorf("%w (%s)", errno, text)
	}
	return errno
}

// batchMsg is one message of a transaction and what it does, for errors.
type batchMsg struct {
	typ   uint16
	flags uint16
	attrs []byte
	what  string
}

// commit sends msgs as one nftables transaction (BATCH_BEGIN … BATCH_END in
// one sendmsg) and waits for one ack per message. The kernel applies all or
// nothing; when it refuses, the error names every refused message. With
// genID set, the kernel refuses the whole batch (ERESTART) if the ruleset
// changed since that generation, i.e. since we observed it.
func (c *conn) commit(msgs []batchMsg, genID *uint32) error {
	var beginAttrs []byte
	if genID != nil {
		beginAttrs = attrU32(unix.NFNL_BATCH_GENID, *genID)
	}
	first := c.nextSeq()
	b := appendMsg(nil, unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, first, unix.AF_UNSPEC, subsysNFTables, beginAttrs)
	bySeq := make(map[uint32]int, len(msgs))
	for i, m := range msgs {
		seq := c.nextSeq()
		bySeq[seq] = i
		b = appendMsg(b, nftType(m.typ), unix.NLM_F_REQUEST|unix.NLM_F_ACK|m.flags, seq, familyInet, 0, m.attrs)
	}
	b = appendMsg(b, unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, c.nextSeq(), unix.AF_UNSPEC, subsysNFTables, nil)
	if err := c.send(b); err != nil {
		return fmt.Errorf("send transaction of %d messages (%d bytes): %w", len(msgs), len(b), err)
	}
	pending := len(msgs)
	var errs []error
	for pending > 0 {
		ms, err := c.recv()
		if err != nil {
			return fmt.Errorf("read acks of the transaction (%d of %d missing; it may or may not have been applied): %w",
				pending, len(msgs), err)
		}
		for _, m := range ms {
			if m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			errno, seq, text := nlError(m)
			i, ok := bySeq[seq]
			if !ok {
				if seq == first && errno != 0 {
					// The batch as a whole was refused (generation changed,
					// out of memory): no per-message acks follow.
					return fmt.Errorf("transaction refused: %w", kernelErr(errno, text))
				}
				continue
			}
			delete(bySeq, seq)
			pending--
			if errno != 0 {
				errs = append(errs, fmt.Errorf("%s: %w", msgs[i].what, kernelErr(errno, text)))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("transaction of %d messages refused, nothing applied: %w", len(msgs), errors.Join(errs...))
	}
	return nil
}

func nsName(netns string) string {
	if netns == "" {
		return "host namespace"
	}
	return "namespace " + netns
}
