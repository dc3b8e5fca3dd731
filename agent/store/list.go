package store

import (
	"cmp"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/terway-reconciler/terway/spec"
)

// List's answer, and how it follows the store's writes.

// List returns every allocation, sorted by pod key: the agent's input to
// render, and what it rebuilds from after a restart. The list is shared
// with the store and its other callers, which must not change it or its
// items: a changed allocation is a new one, and the render takes the same
// one as unchanged. It has no spare capacity, so that an append or insert
// makes a copy. (A copy of it on every CNI request was a tenth of what the
// request allocated at 250 pods, and so of its garbage collection. Its
// items are pointers, the records decoded once and kept, so that a list
// made from it, the agent's with a pending ADD's allocation (Offer), copies
// 8 bytes per allocation rather than the allocation.)
func (s *Store) List() ([]*spec.Allocation, error) {
	var out []*spec.Allocation
	var keep map[string]bool // set when the decoded records need pruning
	err := s.view(func(tx *bolt.Tx) error {
		s.listMu.Lock()
		listed, same := s.listed, s.listed != nil && s.listedAt == tx.ID()
		s.listMu.Unlock()
		if same {
			out = listed
			return nil
		}
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		n := t.allocs.Stats().KeyN
		out = make([]*spec.Allocation, 0, n)
		if s.decodedCount() > 2*n+16 {
			keep = make(map[string]bool, n)
		}
		err = t.allocs.ForEach(func(k, v []byte) error {
			a, err := t.decodeShared(k, v)
			if err != nil {
				return err
			}
			out = append(out, a)
			if keep != nil {
				keep[string(k)] = true
			}
			return err
		})
		if err != nil {
			return err
		}
		slices.SortFunc(out, compareAllocs)
		out = slices.Clip(out)
		s.listMu.Lock()
		if s.listed == nil || tx.ID() >= s.listedAt { // never back to an older answer
			s.listed, s.listedAt = out, tx.ID()
		}
		s.listMu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if keep != nil {
		s.forgetDecoded(keep)
	}
	return out, nil
}

// sortAllocs orders allocations as List does.
func sortAllocs(as []spec.Allocation) {
	slices.SortFunc(as, func(a, b spec.Allocation) int { return compareAllocs(&a, &b) })
}

// CompareAllocations is List's order.
func CompareAllocations(a, b *spec.Allocation) int { return compareAllocs(a, b) }

// compareAllocs orders allocations by pod, then attachment, comparing the
// fields rather than joined keys (List sorts on every render).
func compareAllocs(a, b *spec.Allocation) int {
	return cmp.Or(comparePodKeys(a.Metadata, b.Metadata),
		compareAttachments(AttachmentOf(*a), AttachmentOf(*b)))
}

// comparePodKeys compares "namespace/name" keys without joining them.
func comparePodKeys(a, b spec.ObjectMeta) int {
	return compareJoined(a.Namespace, a.Name, b.Namespace, b.Name)
}

// compareAttachments compares attachments as their String forms do.
func compareAttachments(a, b Attachment) int {
	return compareJoined(a.ContainerID, a.IfName, b.ContainerID, b.IfName)
}

// compareJoined compares x1+"/"+x2 with y1+"/"+y2 without building them.
func compareJoined(x1, x2, y1, y2 string) int {
	if strings.IndexByte(x1, '/') >= 0 || strings.IndexByte(y1, '/') >= 0 {
		// Not a key's parts (a namespace or container id holds no "/"),
		// but records come from outside: compare what they join to.
		return strings.Compare(x1+"/"+x2, y1+"/"+y2)
	}
	if x1 == y1 {
		return strings.Compare(x2, y2)
	}
	n := min(len(x1), len(y1))
	if c := strings.Compare(x1[:n], y1[:n]); c != 0 {
		return c
	}
	// One first part is a prefix of the other: the shorter one's "/"
	// meets the longer one's next byte.
	if len(x1) < len(y1) {
		return cmp.Compare(byte('/'), y1[n])
	}
	return cmp.Compare(x1[n], byte('/'))
}

// allocWrites are a write transaction's allocations by attachment: the
// record now, nil when removed.
type allocWrites struct {
	txID    int
	changed map[Attachment]*spec.Allocation
	// keys are changed's keys, for lookup: a CNI request writes one or a
	// few, and the lists that follow its writes ask after each of
	// hundreds of allocations, where hashing two IDs of 64 bytes each
	// time was a tenth of the store's part of an ADD at 250 pods.
	keys []Attachment
}

// fewWrites is the most keys lookup compares one by one.
const fewWrites = 8

// lookup returns the record w wrote for attachment at (nil: removed) and
// whether w wrote it.
func (w *allocWrites) lookup(at Attachment) (*spec.Allocation, bool) {
	if len(w.keys) > fewWrites {
		a, ok := w.changed[at]
		return a, ok
	}
	for _, k := range w.keys {
		if k.IfName == at.IfName && k.ContainerID == at.ContainerID {
			return w.changed[k], true
		}
	}
	return nil, false
}

// note records a write of the record of attachment at: the record now,
// nil when removed; w is nil outside Store.update.
func (w *allocWrites) note(at Attachment, a *spec.Allocation) {
	if w == nil {
		return
	}
	if w.changed == nil {
		w.changed = map[Attachment]*spec.Allocation{}
	}
	if _, noted := w.changed[at]; !noted {
		w.keys = append(w.keys, at)
	}
	w.changed[at] = a
}

// followWrites makes List's last answer that of the transaction w
// committed, when it was the answer of the transaction just before:
// drop the records w changed and put back those it wrote in their sorted
// places, instead of walking every record on the next List. A CNI
// request's transaction changes one record, and a sort of every
// allocation was a fifth of its store work at 250 pods.
func (s *Store) followWrites(w *allocWrites) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	offer := s.offer
	s.offer = nil
	if s.listed == nil || s.listedAt != w.txID-1 {
		return
	}
	if offer != nil && sameList(offer.based, s.listed) && offer.follows(s.listed, w) {
		s.listed, s.listedAt = offer.list, w.txID
		return
	}
	// A new list: the one before is shared with List's callers.
	out := make([]*spec.Allocation, 0, len(s.listed)+len(w.changed))
	for _, a := range s.listed {
		if _, ok := w.lookup(AttachmentOf(*a)); !ok {
			out = append(out, a)
		}
	}
	for _, a := range w.changed {
		if a != nil {
			i, _ := slices.BinarySearchFunc(out, a, compareAllocs)
			out = slices.Insert(out, i, a)
		}
	}
	s.listed, s.listedAt = slices.Clip(out), w.txID
}

// offeredList is a list Offer gave, and the answer of List it was made
// from.
type offeredList struct {
	based, list []*spec.Allocation
}

// Offer gives the store a list the caller made from an answer of List
// (based) by putting in the allocations it is committing, in List's
// order. When the next write to commit turns based into the same list,
// List answers with this one after it, rather than with a copy the store
// makes: a CNI ADD renders with its allocation while the store commits
// it, and the list of every allocation was made twice per ADD. Neither
// list may change afterwards.
func (s *Store) Offer(based, list []*spec.Allocation) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if sameList(based, s.listed) {
		s.offer = &offeredList{based: based, list: slices.Clip(list)}
	}
}

// follows tells whether o.list is listed changed by w's writes, in
// List's order.
func (o *offeredList) follows(listed []*spec.Allocation, w *allocWrites) bool {
	put := 0 // allocations w writes
	for _, a := range w.changed {
		if a != nil {
			put++
		}
	}
	seen, j := 0, 0
	skip := func() {
		for j < len(listed) && w.has(AttachmentOf(*listed[j])) {
			j++
		}
	}
	afterWritten := false // o.list[i-1] is one w wrote
	for i, a := range o.list {
		c, written := w.lookup(AttachmentOf(*a))
		// The items kept from listed come in its order: only the order
		// around a written one needs a look.
		if i > 0 && (written || afterWritten) && compareAllocs(o.list[i-1], a) >= 0 {
			return false
		}
		afterWritten = written
		if written {
			if c == nil || *c != *a {
				return false
			}
			seen++
			continue
		}
		skip()
		if j == len(listed) || listed[j] != a {
			return false
		}
		j++
	}
	skip()
	return j == len(listed) && seen == put
}

// has tells whether w writes the attachment's record.
func (w *allocWrites) has(at Attachment) bool {
	_, ok := w.lookup(at)
	return ok
}

// sameList tells whether two lists are the same slice.
func sameList(a, b []*spec.Allocation) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
