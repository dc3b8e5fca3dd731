// Package op holds what every kernel kind package shares: the planned
// operation, and the interface to the network namespaces a document names.
package op

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
)

// Action is what an operation does to one item.
type Action string

// Actions, printed at the start of each plan line.
const (
	Create Action = "+"
	Delete Action = "-"
	Update Action = "~"
)

// Op is one planned change to one item of one kind. Text is the
// human-readable description printed in a plan, after the action sign, e.g.
// "route 198.18.1.5/32 dev tw1a2b3c table main proto terway".
type Op struct {
	Kind   string
	Action Action
	// Key is the item's key in the document (spec's Key methods).
	Key   string
	Text  string
	Netns string
	Pod   string
	// Exec performs the change. It must be idempotent and treat "already
	// there" on create and "not found" on delete as success.
	Exec func(ctx context.Context, ns Namespaces) error
	// Writes is how many kernel write requests Exec sends (netlink messages,
	// sysctl writes, nft batches), for the converged-apply accounting.
	Writes int
	// Concurrent says Exec may run beside the other Concurrent operations
	// next to it in the plan's order: it changes nothing they read or
	// write, and it sends its requests on a socket of its own. A link's
	// deletion waits in the kernel for RCU grace periods (about 20 ms
	// each here); deletions that wait together wait once.
	Concurrent bool
}

// String is the plan line: action sign and text.
func (o Op) String() string { return fmt.Sprintf("%s %s", o.Action, o.Text) }

// Namespaces resolves the namespaces named in a document ("" is the host,
// i.e. the node; anything else a path such as /var/run/netns/NAME) to
// handles. Implementations cache handles and are safe for concurrent use.
type Namespaces interface {
	// Handle returns a netlink handle whose sockets live in the namespace.
	Handle(netns string) (*netlink.Handle, error)
	// Do runs fn on a locked OS thread switched into the namespace, for
	// work that has no netlink handle (sysctls under /proc/sys/net).
	Do(netns string, fn func() error) error
	// Fd returns an open file descriptor of the namespace, owned by the
	// implementation (do not close it).
	Fd(netns string) (int, error)
	// Exists reports whether the namespace path exists, so that a pod whose
	// sandbox is gone is not an error but simply has nothing to observe.
	Exists(netns string) bool
	// RouteConn returns the namespace's RouteConn, for the reads of a plan
	// (RouteDump, RouteGet); owned by the implementation.
	RouteConn(netns string) (*RouteConn, error)
	// NetnsID returns the id namespace from gives namespace to, which is
	// how a veth end names the namespace of its peer, or -1 when it gives
	// none. Implementations may cache an id (it lasts as long as both
	// namespaces) but never the absence of one.
	NetnsID(from, to string) (int, error)
}
