package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/terway-reconciler/terway/spec"
)

// Attachment identifies one CNI attachment: a container (sandbox) and the
// interface name inside it, as CNI does.
type Attachment struct {
	ContainerID string
	IfName      string
}

// String is the "containerID/ifName" form, which is also the record's key.
func (a Attachment) String() string { return a.ContainerID + "/" + a.IfName }

// key is the attachment's key in the allocations bucket. Neither part may
// contain "/" (CNI forbids it in both), so the key is unambiguous.
func (a Attachment) key() []byte { return []byte(a.String()) }

func (a Attachment) validate() error {
	if a.ContainerID == "" {
		return fmt.Errorf("containerID is empty: %w", ErrInvalid)
	}
	if a.IfName == "" {
		return fmt.Errorf("container %s: ifName is empty: %w", a.ContainerID, ErrInvalid)
	}
	if strings.ContainsAny(a.ContainerID, "/\x00") {
		return fmt.Errorf("containerID %q contains '/' or NUL: %w", a.ContainerID, ErrInvalid)
	}
	if strings.ContainsAny(a.IfName, "/\x00") {
		return fmt.Errorf("container %s: ifName %q contains '/' or NUL: %w", a.ContainerID, a.IfName, ErrInvalid)
	}
	return nil
}

// PodKey is the "namespace/name" key of a pod, as used across the project
// (spec.HostVethName, the render index) and by ByPod.
func PodKey(m spec.ObjectMeta) string { return m.Namespace + "/" + m.Name }

// AttachmentOf returns the identity of an allocation.
func AttachmentOf(a spec.Allocation) Attachment {
	return Attachment{ContainerID: a.Spec.ContainerID, IfName: a.Spec.IfName}
}

// ipKey is an address's key in the ips bucket: 16 bytes, so that keys sort
// in address order and a cursor can walk a CIDR from its first address.
func ipKey(a netip.Addr) []byte {
	b := a.Unmap().As16()
	return b[:]
}

func addrOfKey(k []byte) (netip.Addr, bool) {
	if len(k) != 16 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom16([16]byte(k)).Unmap(), true
}

// normalize checks an allocation about to be written and fills in its
// apiVersion, kind and canonical IP.
func normalize(a spec.Allocation) (spec.Allocation, netip.Addr, error) {
	id := AttachmentOf(a)
	if err := id.validate(); err != nil {
		return a, netip.Addr{}, err
	}
	if a.Metadata.Namespace == "" || a.Metadata.Name == "" {
		return a, netip.Addr{}, fmt.Errorf("attachment %s: metadata.namespace and metadata.name must name the pod (got %q): %w", id, PodKey(a.Metadata), ErrInvalid)
	}
	if a.APIVersion == "" {
		a.APIVersion = spec.APIVersion
	}
	if a.Kind == "" {
		a.Kind = spec.KindAllocation
	}
	if a.APIVersion != spec.APIVersion || a.Kind != spec.KindAllocation {
		return a, netip.Addr{}, fmt.Errorf("attachment %s: apiVersion/kind is %q/%q, want %q/%q: %w", id, a.APIVersion, a.Kind, spec.APIVersion, spec.KindAllocation, ErrInvalid)
	}
	ip, err := netip.ParseAddr(a.Spec.IP)
	if err != nil || ip.Zone() != "" {
		return a, netip.Addr{}, fmt.Errorf("pod %s: spec.ip %q is not an IP address: %w", PodKey(a.Metadata), a.Spec.IP, ErrInvalid)
	}
	ip = ip.Unmap()
	a.Spec.IP = ip.String()
	return a, ip, nil
}

// txn wraps a bbolt transaction with the store's buckets and record codec.
type txn struct {
	s      *Store
	allocs *bolt.Bucket
	pods   *bolt.Bucket
	ips    *bolt.Bucket
	meta   *bolt.Bucket
}

func (s *Store) txn(tx *bolt.Tx) (*txn, error) {
	t := &txn{s: s, allocs: tx.Bucket(bucketAllocs), pods: tx.Bucket(bucketPods), ips: tx.Bucket(bucketIPs), meta: tx.Bucket(bucketMeta)}
	if t.allocs == nil || t.pods == nil || t.ips == nil || t.meta == nil {
		return nil, fmt.Errorf("allocation store %s: a bucket is missing: %w", s.path, ErrCorrupt)
	}
	return t, nil
}

func (t *txn) decode(k, v []byte) (spec.Allocation, error) {
	a, err := t.decodeShared(k, v)
	if err != nil {
		return spec.Allocation{}, err
	}
	return *a, nil // a value: the caller's copy is its own
}

// decodeShared is decode's record as the store keeps it decoded, shared
// with List's answers: it must not be changed.
func (t *txn) decodeShared(k, v []byte) (*spec.Allocation, error) {
	s := t.s
	s.decodedMu.Lock()
	d, ok := s.decoded[string(k)]
	s.decodedMu.Unlock()
	if ok && d.raw == string(v) {
		return d.alloc, nil
	}
	a := &spec.Allocation{}
	if err := json.Unmarshal(v, a); err != nil {
		return nil, fmt.Errorf("allocation store %s: record %q: %w: %w", s.path, k, ErrCorrupt, err)
	}
	s.decodedMu.Lock()
	if s.decoded == nil {
		s.decoded = map[string]decodedRecord{}
	}
	s.decoded[string(k)] = decodedRecord{raw: string(v), alloc: a}
	s.decodedMu.Unlock()
	return a, nil
}

func (s *Store) decodedCount() int {
	s.decodedMu.Lock()
	defer s.decodedMu.Unlock()
	return len(s.decoded)
}

// forgetDecoded drops the decoded records whose keys are not in keep. List
// calls it once they are more than twice the records: deleted records'
// entries go, at a cost spread over many lists.
func (s *Store) forgetDecoded(keep map[string]bool) {
	s.decodedMu.Lock()
	defer s.decodedMu.Unlock()
	for k := range s.decoded {
		if !keep[k] {
			delete(s.decoded, k)
		}
	}
}

// get reads the record of an attachment key.
func (t *txn) get(k []byte) (spec.Allocation, bool, error) {
	v := t.allocs.Get(k)
	if v == nil {
		return spec.Allocation{}, false, nil
	}
	a, err := t.decode(k, v)
	return a, err == nil, err
}

// byPod follows the pod index.
func (t *txn) byPod(podKey string) (spec.Allocation, bool, error) {
	k := t.pods.Get([]byte(podKey))
	if k == nil {
		return spec.Allocation{}, false, nil
	}
	a, ok, err := t.get(k)
	if err == nil && !ok {
		err = fmt.Errorf("allocation store %s: pod index %q points to missing record %q: %w", t.s.path, podKey, k, ErrCorrupt)
	}
	return a, ok, err
}

// put writes a normalized record and its index entries, first removing the
// index entries of the record it replaces (same attachment). It refuses an
// address or a pod already held by another attachment.
func (t *txn) put(a *spec.Allocation, ip netip.Addr) error {
	id := AttachmentOf(*a)
	k := id.key()
	pod := PodKey(a.Metadata)
	if owner := t.ips.Get(ipKey(ip)); owner != nil && !bytes.Equal(owner, k) {
		return fmt.Errorf("pod %s: IP %s is already allocated to attachment %s: %w", pod, ip, owner, ErrConflict)
	}
	if owner := t.pods.Get([]byte(pod)); owner != nil && !bytes.Equal(owner, k) {
		return fmt.Errorf("pod %s: already has attachment %s, cannot also hold %s (release it first): %w", pod, owner, id, ErrConflict)
	}
	old, found, err := t.get(k)
	if err != nil {
		return err
	}
	t.s.mutations++ // the checks passed: from here on it writes
	if found {
		if err := t.unindex(old, k); err != nil {
			return err
		}
		a.Spec.Seq = old.Spec.Seq // the attachment's place in the order stays
		t.s.writes.noteReplaced()
	} else if a.Spec.Seq, err = t.allocs.NextSequence(); err != nil {
		return fmt.Errorf("pod %s: number allocation %s: %w", pod, id, err)
	}
	v, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("pod %s: encode allocation: %w", pod, err)
	}
	if err := t.allocs.Put(k, v); err != nil {
		return fmt.Errorf("pod %s: write allocation %s: %w", pod, id, err)
	}
	// As List will decode it: the record's bytes, not a, which JSON may
	// not give back field for field.
	stored, err := t.decodeShared(k, v)
	if err != nil {
		return err
	}
	t.s.writes.note(AttachmentOf(*stored), stored)
	if err := t.pods.Put([]byte(pod), k); err != nil {
		return fmt.Errorf("pod %s: write pod index: %w", pod, err)
	}
	if err := t.ips.Put(ipKey(ip), k); err != nil {
		return fmt.Errorf("pod %s: write IP index for %s: %w", pod, ip, err)
	}
	return nil
}

// unindex removes the index entries that point to key k from record a.
func (t *txn) unindex(a spec.Allocation, k []byte) error {
	pod := []byte(PodKey(a.Metadata))
	if bytes.Equal(t.pods.Get(pod), k) {
		if err := t.pods.Delete(pod); err != nil {
			return err
		}
	}
	if ip, err := netip.ParseAddr(a.Spec.IP); err == nil && bytes.Equal(t.ips.Get(ipKey(ip)), k) {
		// Before the delete, so that no walk can start above a free
		// address even if this transaction goes on to commit.
		t.s.floor.lower(ip.Unmap())
		if err := t.ips.Delete(ipKey(ip)); err != nil {
			return err
		}
	}
	return nil
}

// remove deletes record a (stored under k) and its index entries.
func (t *txn) remove(a spec.Allocation, k []byte) error {
	t.s.mutations++
	if err := t.unindex(a, k); err != nil {
		return fmt.Errorf("pod %s: remove index entries of %s: %w", PodKey(a.Metadata), k, err)
	}
	if err := t.allocs.Delete(k); err != nil {
		return fmt.Errorf("pod %s: remove allocation %s: %w", PodKey(a.Metadata), k, err)
	}
	t.s.writes.note(AttachmentOf(a), nil)
	// Its decoding goes with it: List, which follows writes, no longer
	// walks every record to prune them (a transaction rolled back only
	// costs a decoding).
	t.s.decodedMu.Lock()
	delete(t.s.decoded, string(k))
	t.s.decodedMu.Unlock()
	return nil
}

// Get returns the allocation of an attachment.
func (s *Store) Get(containerID, ifName string) (spec.Allocation, bool, error) {
	var a spec.Allocation
	var found bool
	err := s.view(func(tx *bolt.Tx) error {
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		a, found, err = t.get(Attachment{containerID, ifName}.key())
		return err
	})
	return a, found, err
}

// ByPod returns the allocation of a pod ("namespace/name"): a pod holds at
// most one attachment, its current sandbox's.
func (s *Store) ByPod(podKey string) (spec.Allocation, bool, error) {
	var a spec.Allocation
	var found bool
	err := s.view(func(tx *bolt.Tx) error {
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		a, found, err = t.byPod(podKey)
		return err
	})
	return a, found, err
}

// Count returns the number of allocations (for metrics).
func (s *Store) Count() (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		// List's last answer, when it is this transaction's: the agent
		// counts after every ADD, and bbolt's count reads every page.
		if listed, ok := s.listedIn(tx); ok {
			n = len(listed)
			return nil
		}
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		n = t.allocs.Stats().KeyN
		return nil
	})
	return n, err
}

// Put inserts or replaces the allocation of attachment (spec.containerID,
// spec.ifName), synced to disk before it returns. apiVersion and kind are
// filled in when empty; the IP is stored in canonical form. It is for
// addresses chosen outside this package (ENI modes). Put fails with
// ErrConflict if the IP belongs to another attachment or the pod already
// holds another attachment (Release that first: nothing is dropped
// silently).
func (s *Store) Put(a spec.Allocation) error {
	a, ip, err := normalize(a)
	if err != nil {
		return fmt.Errorf("put allocation: %w", err)
	}
	return s.update(func(tx *bolt.Tx) error {
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		return t.put(&a, ip)
	})
}

// Release removes the allocation of an attachment and frees its IP,
// returning what it removed. Releasing an unknown attachment is not an
// error (CNI DEL is idempotent): it returns found = false.
func (s *Store) Release(containerID, ifName string) (spec.Allocation, bool, error) {
	released, found, err := s.release([]Attachment{{containerID, ifName}})
	if err != nil {
		return spec.Allocation{}, false, fmt.Errorf("release attachment %s/%s: %w", containerID, ifName, err)
	}
	return released[0], found[0], nil
}

// ReleaseAll releases the allocations of ids as Release does each, in one
// transaction: one commit and its syncs for a batch of DELs. released[i]
// is what ids[i] had, found[i] whether it had one. An attachment listed
// twice is released once.
func (s *Store) ReleaseAll(ids []Attachment) (released []spec.Allocation, found []bool, err error) {
	if released, found, err = s.release(ids); err != nil {
		return nil, nil, fmt.Errorf("release %d attachments: %w", len(ids), err)
	}
	return released, found, nil
}

// release is Release and ReleaseAll: one transaction, none when nothing
// is found.
func (s *Store) release(ids []Attachment) (released []spec.Allocation, found []bool, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		released, found = make([]spec.Allocation, len(ids)), make([]bool, len(ids))
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		removed := false
		for i, id := range ids {
			k := id.key()
			a, ok, err := t.get(k)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if err := t.remove(a, k); err != nil {
				return err
			}
			released[i], found[i], removed = a, true, true
		}
		if !removed {
			return errNoChange
		}
		return nil
	})
	return released, found, err
}

// GC releases, in one transaction, every allocation whose attachment is not
// in valid (CNI GC), and returns what it released, sorted by pod key. An
// empty valid list releases everything: callers must only pass a list they
// know to be complete.
func (s *Store) GC(valid []Attachment) ([]spec.Allocation, error) {
	keep := make(map[string]bool, len(valid))
	for _, v := range valid {
		keep[v.String()] = true
	}
	var released []spec.Allocation
	err := s.update(func(tx *bolt.Tx) error {
		released = nil // a retried closure starts over
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		var keys [][]byte
		err = t.allocs.ForEach(func(k, v []byte) error {
			if keep[string(k)] {
				return nil
			}
			a, err := t.decode(k, v)
			if err != nil {
				return err
			}
			released = append(released, a)
			keys = append(keys, bytes.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return errNoChange
		}
		for i, k := range keys {
			if err := t.remove(released[i], k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("garbage-collect allocations: %w", err)
	}
	sortAllocs(released)
	return released, nil
}
