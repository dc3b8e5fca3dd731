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
// made from it, the agent's with a pending ADD's allocation (Merge), copies
// 8 bytes per allocation rather than the allocation.)
func (s *Store) List() ([]*spec.Allocation, error) {
	var out []*spec.Allocation
	var keep map[string]bool // set when the decoded records need pruning
	err := s.view(func(tx *bolt.Tx) error {
		if listed, ok := s.listedIn(tx); ok {
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

// listedIn returns List's last answer when it is that of tx, a read
// transaction.
func (s *Store) listedIn(tx *bolt.Tx) ([]*spec.Allocation, bool) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	return s.listed, s.listed != nil && s.listedAt == tx.ID()
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
	// raises are what the transaction's walks for a free address learned
	// (freeFloor), for the floor once it commits.
	raises []floorRaise
	// replaced says a put replaced a record of its attachment, which a
	// list may have under another pod (offeredList.follows).
	replaced bool
}

// noteReplaced notes that a put replaced a record of its attachment; w is
// nil outside Store.update.
func (w *allocWrites) noteReplaced() {
	if w != nil {
		w.replaced = true
	}
}

// raiseFloor notes r for the floor once w's transaction commits; w is nil
// outside Store.update.
func (w *allocWrites) raiseFloor(r floorRaise) {
	if w != nil {
		w.raises = append(w.raises, r)
	}
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
	if offer != nil && sameList(offer.based, s.listed) && offer.follows(w) {
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

// offeredList is a list Merge made, the answer of List it was made from
// and the allocations it put in.
type offeredList struct {
	based, list, added []*spec.Allocation
}

// Merge returns based, an answer of List or a list made from one, with
// adding put in at their places in List's order, in a new list: the
// allocations a caller is committing, with which it renders meanwhile.
// None of adding may have the attachment of an allocation of based, nor
// change afterwards. When based is List's last answer, the list is
// offered: if the next write to commit writes adding and nothing else,
// List answers with this very list after it, rather than with a copy the
// store makes (a CNI ADD renders with its allocation while the store
// commits it, and the list of every allocation was made twice per ADD).
// That check looks at adding and the write alone, whatever the list's
// length.
func (s *Store) Merge(based, adding []*spec.Allocation) []*spec.Allocation {
	list := make([]*spec.Allocation, len(based), len(based)+len(adding))
	copy(list, based)
	distinct := true
	for _, a := range adding {
		i, found := slices.BinarySearchFunc(list, a, compareAllocs)
		distinct = distinct && !found
		list = slices.Insert(list, i, a)
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if distinct && sameList(based, s.listed) {
		s.offer = &offeredList{based: based, list: list, added: slices.Clone(adding)}
	}
	return list
}

// follows tells whether w's writes turn o.based into o.list: w wrote o's
// added allocations, as they are, and nothing else, and none of them
// replaced a record of its attachment (Merge checks that based has none of
// the same pod; one of another pod would be in the list twice).
func (o *offeredList) follows(w *allocWrites) bool {
	if len(w.keys) != len(o.added) || w.replaced {
		return false
	}
	for _, a := range o.added {
		if c, written := w.lookup(AttachmentOf(*a)); !written || c == nil || *c != *a {
			return false
		}
	}
	return true
}

// sameList tells whether two lists are the same slice.
func sameList(a, b []*spec.Allocation) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
