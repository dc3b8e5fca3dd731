package store

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxProblems bounds the problems one Check error lists.
const maxProblems = 10

// Check verifies the whole store and returns an ErrCorrupt error listing
// what is wrong, or nil. Open runs it; the agent can run it again (a
// periodic self-check, or terwayctl). It checks:
//
//   - the schema (format marker and version) and the recorded pod CIDR;
//   - every record: valid JSON of kind Allocation, stored under its own
//     attachment key, naming a pod and a canonical IP;
//   - both indexes: each record has exactly its pod entry and IP entry, and
//     each index entry points to a record that agrees — so no IP and no pod
//     has two owners;
//   - bbolt's own page structure (free and reachable pages, key order).
func (s *Store) Check() error {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	err := s.view(func(tx *bolt.Tx) error {
		if err := s.checkSchema(tx); err != nil {
			return err
		}
		t, err := s.txn(tx)
		if err != nil {
			return err
		}
		if _, _, err := t.podCIDR(); err != nil {
			add("meta.podCIDR %q is not a CIDR", t.meta.Get(keyPodCIDR))
		}
		records := 0
		err = t.allocs.ForEach(func(k, v []byte) error {
			records++
			t.checkRecord(k, v, add)
			return nil
		})
		if err != nil {
			return err
		}
		t.checkIndex(t.pods, "pods", records, add, func(ik []byte, a netip.Addr, pod string) bool {
			return string(ik) == pod
		})
		t.checkIndex(t.ips, "ips", records, add, func(ik []byte, a netip.Addr, pod string) bool {
			return bytes.Equal(ik, ipKey(a))
		})
		for err := range tx.Check() {
			add("bbolt: %v", err)
		}
		return nil
	})
	if err != nil {
		return s.corrupt("check", err)
	}
	if len(problems) == 0 {
		return nil
	}
	n := len(problems)
	if n > maxProblems {
		problems = append(problems[:maxProblems], fmt.Sprintf("and %d more", n-maxProblems))
	}
	return fmt.Errorf("allocation store %s: %d problem(s): %s: %w", s.path, n, strings.Join(problems, "; "), ErrCorrupt)
}

// checkRecord checks one record and that both indexes point back to it.
func (t *txn) checkRecord(k, v []byte, add func(string, ...any)) {
	a, err := t.decode(k, v)
	if err != nil {
		add("record %q: not JSON of an Allocation", k)
		return
	}
	norm, ip, err := normalize(a)
	if err != nil {
		add("record %q: %v", k, err)
		return
	}
	if norm != a {
		add("record %q: not in canonical form (apiVersion, kind or spec.ip)", k)
	}
	if string(AttachmentOf(a).key()) != string(k) {
		add("record %q: stored under the wrong key (its attachment is %s)", k, AttachmentOf(a))
	}
	pod := PodKey(a.Metadata)
	if got := t.pods.Get([]byte(pod)); !bytes.Equal(got, k) {
		add("record %q: pod index %q points to %q", k, pod, got)
	}
	if got := t.ips.Get(ipKey(ip)); !bytes.Equal(got, k) {
		add("record %q: IP index %s points to %q", k, ip, got)
	}
}

// checkIndex checks that every entry of an index points to a record that
// agrees with the entry's key (match), and that the index has one entry
// per record.
func (t *txn) checkIndex(b *bolt.Bucket, name string, records int, add func(string, ...any), match func(ik []byte, a netip.Addr, pod string) bool) {
	entries := 0
	_ = b.ForEach(func(ik, target []byte) error {
		entries++
		a, found, err := t.get(target)
		if err != nil || !found {
			add("%s index %s points to missing or unreadable record %q", name, indexKey(ik), target)
			return nil
		}
		ip, _ := netip.ParseAddr(a.Spec.IP)
		if !match(ik, ip.Unmap(), PodKey(a.Metadata)) {
			add("%s index %s points to record %q of pod %s, IP %s", name, indexKey(ik), target, PodKey(a.Metadata), a.Spec.IP)
		}
		return nil
	})
	if entries != records {
		add("%s index has %d entries for %d records", name, entries, records)
	}
}

// indexKey prints an index key: an address for the ips index, else quoted.
func indexKey(k []byte) string {
	if a, ok := addrOfKey(k); ok {
		return a.String()
	}
	return fmt.Sprintf("%q", k)
}

// MoveAside renames a store file that cannot be opened (ErrCorrupt) to
// "<path>.corrupt-<UTC time>", keeping it for inspection, and returns the
// new name. The store must not be open. Starting empty afterwards forgets
// the allocations of running pods, whose addresses could then be handed
// out twice: do it only when those pods are gone, or after rebuilding
// their allocations from another source.
func MoveAside(path string, now time.Time) (string, error) {
	dst := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	if err := os.Rename(path, dst); err != nil {
		return "", fmt.Errorf("move allocation store %s aside: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return dst, fmt.Errorf("move allocation store %s aside to %s: sync directory: %w", path, dst, err)
	}
	return dst, nil
}
