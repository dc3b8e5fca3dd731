package op

import (
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
)

// Snapshot is a Namespaces for one plan: it remembers each namespace's link
// list and existence, so the kinds that live on links (addresses,
// neighbours, routes, qdiscs) do not each dump every namespace again. It is
// for observing only: execute with the Namespaces it wraps, never with a
// snapshot, which does not see the links execution creates.
type Snapshot struct {
	Namespaces
	mu     sync.Mutex
	links  map[string]*linkEntry
	exists map[string]bool
	// only, per namespace, limits the link list to these names, looked up
	// one by one instead of dumped: a plan scoped to a few pods then costs
	// the same whatever the number of other pods.
	only map[string][]string
}

// NewSnapshot wraps ns for one plan.
func NewSnapshot(ns Namespaces) *Snapshot {
	return &Snapshot{Namespaces: ns, links: map[string]*linkEntry{}, exists: map[string]bool{}}
}

// OnlyLinks makes the snapshot see, in netns, only the links named (those
// that exist). Call it before observing.
func (s *Snapshot) OnlyLinks(netns string, names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.only == nil {
		s.only = map[string][]string{}
	}
	s.only[netns] = names
}

// Exists reports, once per namespace, whether it exists.
func (s *Snapshot) Exists(netns string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.exists[netns]; ok {
		return e
	}
	e := s.Namespaces.Exists(netns)
	s.exists[netns] = e
	return e
}

// linkEntry is one namespace's link list, read once: kinds observing
// concurrently wait for the first reader instead of dumping again, and
// different namespaces are read in parallel.
type linkEntry struct {
	once  sync.Once
	links []netlink.Link
	err   error
}

func (s *Snapshot) linkList(netns string) ([]netlink.Link, error) {
	s.mu.Lock()
	e := s.links[netns]
	if e == nil {
		e = &linkEntry{}
		s.links[netns] = e
	}
	names, only := s.only[netns]
	s.mu.Unlock()
	e.once.Do(func() {
		if only {
			e.links, e.err = linksByName(s.Namespaces, netns, names)
		} else {
			e.links, e.err = dumpLinks(s.Namespaces, netns)
		}
	})
	return e.links, e.err
}

// LinkList lists a namespace's links: from the snapshot when ns is one,
// else with a fresh dump.
func LinkList(ns Namespaces, netns string) ([]netlink.Link, error) {
	if s, ok := ns.(*Snapshot); ok {
		return s.linkList(netns)
	}
	return dumpLinks(ns, netns)
}

// dumpTries bounds the retries of a dump the kernel marked interrupted (the
// table changed while it was read); a few retries get a consistent view.
const dumpTries = 5

func dumpLinks(ns Namespaces, netns string) ([]netlink.Link, error) {
	h, err := ns.Handle(netns)
	if err != nil {
		return nil, err
	}
	var links []netlink.Link
	for range dumpTries {
		links, err = h.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return links, fmt.Errorf("link dump still interrupted after %d tries: %w", dumpTries, err)
}

func linksByName(ns Namespaces, netns string, names []string) ([]netlink.Link, error) {
	h, err := ns.Handle(netns)
	if err != nil {
		return nil, err
	}
	var out []netlink.Link
	for _, name := range names {
		l, err := h.LinkByName(name)
		var notFound netlink.LinkNotFoundError
		switch {
		case errors.As(err, &notFound):
		case err != nil:
			return nil, fmt.Errorf("look up link %s: %w", name, err)
		default:
			out = append(out, l)
		}
	}
	return out, nil
}
