package store

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

var cidr24 = netip.MustParsePrefix("10.0.0.0/24")

func storePath(t testing.TB) string {
	return filepath.Join(t.TempDir(), "state", "allocations.db")
}

func openAt(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openTemp(t testing.TB) *Store { return openAt(t, storePath(t)) }

func vpcReq(cidr netip.Prefix, pod, cid string) VPCRequest {
	ns, name, _ := strings.Cut(pod, "/")
	return VPCRequest{
		PodCIDR: cidr, Pod: spec.ObjectMeta{Namespace: ns, Name: name},
		UID: "uid-" + name, ContainerID: cid, IfName: "eth0", Netns: "/var/run/netns/" + cid,
	}
}

func mustAlloc(t testing.TB, s *Store, req VPCRequest) (spec.Allocation, *spec.Allocation) {
	t.Helper()
	a, old, err := s.AllocateVPC(req)
	if err != nil {
		t.Fatalf("AllocateVPC(%s %s): %v", PodKey(req.Pod), req.ContainerID, err)
	}
	return a, old
}

func wantErr(t testing.TB, err, target error, substrings ...string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want errors.Is %v", err, target)
	}
	for _, sub := range substrings {
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not mention %q", err, sub)
		}
	}
}

// verify checks the store with Check and, independently, that no IP and no
// pod appears twice in List.
func verify(t testing.TB, s *Store) []*spec.Allocation {
	t.Helper()
	if err := s.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	all, err := s.List()
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	ips, pods := map[string]string{}, map[string]string{}
	for _, a := range all {
		id := AttachmentOf(*a).String()
		if prev, dup := ips[a.Spec.IP]; dup {
			t.Errorf("IP %s held by %s and %s", a.Spec.IP, prev, id)
		}
		if prev, dup := pods[PodKey(a.Metadata)]; dup {
			t.Errorf("pod %s held by %s and %s", PodKey(a.Metadata), prev, id)
		}
		ips[a.Spec.IP], pods[PodKey(a.Metadata)] = id, id
	}
	n, err := s.Count()
	if err != nil || n != len(all) {
		t.Errorf("Count = %d, %v; List has %d", n, err, len(all))
	}
	return all
}

// values are the allocations of a List, for messages.
func values(as []*spec.Allocation) []spec.Allocation {
	out := make([]spec.Allocation, len(as))
	for i, a := range as {
		out[i] = *a
	}
	return out
}

func ipsOf(as []spec.Allocation) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.Spec.IP
	}
	return out
}

func podName(i int) string { return fmt.Sprintf("ns%d/pod-%03d", i%3, i) }
