package nft

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/op"
)

// A namespace's sockets are kept open between syncs, in its record.
// Closing a NETLINK_NETFILTER socket is not free: the kernel's release
// notifier (nft_rcv_nl_event) takes the namespace's nftables commit mutex
// to look for tables the socket owned, and first waits for any pending
// transaction cleanup, which is global and ends with an RCU grace period.
// A CNI request that closed its sockets after its commits so waited for
// other transactions, a large change's fill chunks among them: 2.3 ms on
// average and up to 18 ms per close in BenchmarkAgentAddDuringLargePolicyChange
// (perf lock contention: sock_close → netlink_release → nft_rcv_nl_event).
//
// A socket keeps its namespace alive, so a record's sockets are closed
// when the record is dropped (its pod's DEL, Forget, Retain), and after
// connPoolIdle unused.

const (
	// connPoolMax is how many idle sockets a namespace keeps: one per
	// concurrent user (a CNI commit, a resync's observe, a staged fill).
	connPoolMax = 4
	// connPoolIdle closes idle sockets after this long unused, so a quiet
	// namespace holds none, and a Reconciler a test dropped releases its
	// namespaces soon after.
	connPoolIdle = 5 * time.Second
)

// connPool holds idle sockets of one namespace, each clean: every reply to
// what was sent on it was read.
type connPool struct {
	mu    sync.Mutex
	idle  []*conn
	timer *time.Timer
}

// take returns an idle socket, or nil.
func (p *connPool) take() *conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle = p.idle[:n-1]
	return c
}

// put keeps c for the next user; false if the pool is full.
func (p *connPool) put(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) >= connPoolMax {
		return false
	}
	p.idle = append(p.idle, c)
	if p.timer == nil {
		p.timer = time.AfterFunc(connPoolIdle, func() { closeAll(p.drain()) })
	} else {
		p.timer.Reset(connPoolIdle)
	}
	return true
}

// drain takes every idle socket out of the pool, for the caller to close
// (off any lock: a close may wait for the kernel).
func (p *connPool) drain() []*conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := p.idle
	p.idle = nil
	return idle
}

func closeAll(cs []*conn) {
	for _, c := range cs {
		c.close()
	}
}

// nsID is a namespace's identity: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

// nsIdentity is the namespace netns names now.
func nsIdentity(ns op.Namespaces, netns string) (nsID, error) {
	fd, err := ns.Fd(netns)
	if err != nil {
		return nsID{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nsID{}, err
	}
	return nsID{uint64(st.Dev), st.Ino}, nil
}

// openConn returns a socket in netns: an idle one of rec's if there is
// one, else a new one. Give it back with closeConn.
func (r *Reconciler) openConn(ns op.Namespaces, netns string, rec *record) (*conn, error) {
	if c := rec.conns.take(); c != nil {
		return c, nil
	}
	return dial(ns, netns)
}

// closeConn is done with c: a clean socket (its last exchange succeeded,
// so every reply was read) of a namespace whose record is still kept goes
// back to the record's pool; any other is closed.
func (r *Reconciler) closeConn(netns string, rec *record, c *conn, clean bool) {
	if clean && c.fd >= 0 {
		r.mu.Lock()
		kept := r.records[netns] == rec && rec.conns.put(c)
		r.mu.Unlock()
		if kept {
			return
		}
	}
	c.close()
}
