package store

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

func TestAllocateVPCLowestFreeAndRetry(t *testing.T) {
	s := openTemp(t)
	a1, old := mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))
	if a1.Spec.IP != "10.0.0.1" || old != nil {
		t.Fatalf("first allocation: IP %s, replaced %v; want 10.0.0.1, nil", a1.Spec.IP, old)
	}
	want := spec.Allocation{
		APIVersion: "terway/v1", Kind: "Allocation",
		Metadata: spec.ObjectMeta{Namespace: "default", Name: "a"},
		Spec:     spec.AllocationSpec{IP: "10.0.0.1", Netns: "/var/run/netns/c1", ContainerID: "c1", IfName: "eth0", UID: "uid-a", Seq: 1},
	}
	if a1 != want {
		t.Errorf("allocation = %+v, want %+v", a1, want)
	}
	a2, _ := mustAlloc(t, s, vpcReq(cidr24, "default/b", "c2"))
	a3, _ := mustAlloc(t, s, vpcReq(cidr24, "default/c", "c3"))
	if a2.Spec.IP != "10.0.0.2" || a3.Spec.IP != "10.0.0.3" {
		t.Fatalf("IPs %s %s, want 10.0.0.2 10.0.0.3", a2.Spec.IP, a3.Spec.IP)
	}

	// A retried ADD (same attachment) gets the same record, even with
	// other UID/netns in the request.
	retry := vpcReq(cidr24, "default/b", "c2")
	retry.Netns = "/proc/1/ns/net"
	again, old := mustAlloc(t, s, retry)
	if again != a2 || old != nil {
		t.Errorf("retry = %+v (replaced %v), want %+v unchanged", again, old, a2)
	}

	// Release frees the address; the lowest free one is reused.
	rel, found, err := s.Release("c2", "eth0")
	if err != nil || !found || rel != a2 {
		t.Fatalf("Release(c2) = %+v, %v, %v", rel, found, err)
	}
	a4, _ := mustAlloc(t, s, vpcReq(cidr24, "default/d", "c4"))
	if a4.Spec.IP != "10.0.0.2" {
		t.Errorf("after release, new pod got %s, want the freed 10.0.0.2", a4.Spec.IP)
	}
	a5, _ := mustAlloc(t, s, vpcReq(cidr24, "default/e", "c5"))
	if a5.Spec.IP != "10.0.0.4" {
		t.Errorf("next pod got %s, want 10.0.0.4", a5.Spec.IP)
	}
	verify(t, s)
}

func TestAllocateVPCReserved(t *testing.T) {
	s := openTemp(t)
	req := vpcReq(cidr24, "default/a", "c1")
	req.Reserved = []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("10.0.0.4"), netip.MustParseAddr("192.168.0.1"), // outside: ignored
	}
	var got []string
	for i := range 3 {
		r := req
		r.Pod.Name, r.ContainerID = fmt.Sprintf("p%d", i), fmt.Sprintf("c%d", i)
		a, _ := mustAlloc(t, s, r)
		got = append(got, a.Spec.IP)
	}
	if want := []string{"10.0.0.3", "10.0.0.5", "10.0.0.6"}; !slices.Equal(got, want) {
		t.Errorf("IPs with .1 .2 .4 reserved = %v, want %v", got, want)
	}
}

func TestAllocateVPCExhausted(t *testing.T) {
	s := openTemp(t)
	cidr := netip.MustParsePrefix("10.0.0.0/29") // 8 addresses, 6 usable
	var got []string
	for i := range 6 {
		a, _ := mustAlloc(t, s, vpcReq(cidr, podName(i), fmt.Sprintf("c%d", i)))
		got = append(got, a.Spec.IP)
	}
	want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	if !slices.Equal(got, want) {
		t.Fatalf("a /29 gave %v, want %v (never .0 nor .7)", got, want)
	}
	_, _, err := s.AllocateVPC(vpcReq(cidr, "default/late", "c-late"))
	wantErr(t, err, ErrExhausted, "10.0.0.0/29", "6 usable", "6 allocated", "default/late")

	// A reserved address counts too.
	if _, _, err := s.Release("c0", "eth0"); err != nil {
		t.Fatal(err)
	}
	req := vpcReq(cidr, "default/late", "c-late")
	req.Reserved = []netip.Addr{netip.MustParseAddr("10.0.0.1")}
	_, _, err = s.AllocateVPC(req)
	wantErr(t, err, ErrExhausted, "6 usable, 5 allocated, 1 reserved")
	verify(t, s)
}

func TestAllocateVPCReplacedSandbox(t *testing.T) {
	s := openTemp(t)
	old1, _ := mustAlloc(t, s, vpcReq(cidr24, "default/a", "sandbox-1"))
	mustAlloc(t, s, vpcReq(cidr24, "default/b", "other"))

	a, replaced := mustAlloc(t, s, vpcReq(cidr24, "default/a", "sandbox-2"))
	if replaced == nil || *replaced != old1 {
		t.Fatalf("replaced = %v, want the old sandbox's %+v", replaced, old1)
	}
	if a.Spec.IP != "10.0.0.3" || a.Spec.ContainerID != "sandbox-2" {
		t.Errorf("new sandbox got %s/%s, want a fresh address 10.0.0.3", a.Spec.ContainerID, a.Spec.IP)
	}
	if _, found, _ := s.Get("sandbox-1", "eth0"); found {
		t.Error("the old sandbox's allocation is still there")
	}
	if got, found, _ := s.ByPod("default/a"); !found || got != a {
		t.Errorf("ByPod(default/a) = %+v, %v; want the new sandbox", got, found)
	}
	// The old address is free again.
	c, _ := mustAlloc(t, s, vpcReq(cidr24, "default/c", "c3"))
	if c.Spec.IP != old1.Spec.IP {
		t.Errorf("next pod got %s, want the replaced sandbox's %s", c.Spec.IP, old1.Spec.IP)
	}
	verify(t, s)
}

func TestAllocateVPCReplacedSandboxInFullCIDR(t *testing.T) {
	s := openTemp(t)
	cidr := netip.MustParsePrefix("10.0.0.0/30") // 2 usable
	old, _ := mustAlloc(t, s, vpcReq(cidr, "default/a", "s1"))
	mustAlloc(t, s, vpcReq(cidr, "default/b", "s2"))
	a, replaced := mustAlloc(t, s, vpcReq(cidr, "default/a", "s3"))
	if replaced == nil || a.Spec.IP != old.Spec.IP {
		t.Errorf("in a full CIDR the new sandbox got %s (replaced %v), want the old sandbox's %s", a.Spec.IP, replaced, old.Spec.IP)
	}
	verify(t, s)
}

func TestAllocateVPCConflictsAndInvalid(t *testing.T) {
	s := openTemp(t)
	mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))

	// The same sandbox asking for a second interface of the pod.
	r := vpcReq(cidr24, "default/a", "c1")
	r.IfName = "eth1"
	_, _, err := s.AllocateVPC(r)
	wantErr(t, err, ErrConflict, "default/a", "c1/eth0")

	// An attachment already allocated to another pod.
	_, _, err = s.AllocateVPC(vpcReq(cidr24, "default/b", "c1"))
	wantErr(t, err, ErrConflict, "c1/eth0", "default/a")

	for name, req := range map[string]VPCRequest{
		"no container":  vpcReq(cidr24, "default/x", ""),
		"slash in id":   vpcReq(cidr24, "default/x", "a/b"),
		"no namespace":  vpcReq(cidr24, "/x", "cx"),
		"no pod CIDR":   vpcReq(netip.Prefix{}, "default/x", "cx"),
		"empty ifName":  func() VPCRequest { r := vpcReq(cidr24, "default/x", "cx"); r.IfName = ""; return r }(),
		"slash ifName":  func() VPCRequest { r := vpcReq(cidr24, "default/x", "cx"); r.IfName = "a/b"; return r }(),
		"ifName is NUL": func() VPCRequest { r := vpcReq(cidr24, "default/x", "cx"); r.IfName = "\x00"; return r }(),
	} {
		_, _, err := s.AllocateVPC(req)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		wantErr(t, err, ErrInvalid)
	}
	verify(t, s)
}

func TestPodCIDRChange(t *testing.T) {
	s := openTemp(t)
	if _, ok, err := s.PodCIDR(); ok || err != nil {
		t.Fatalf("fresh store has pod CIDR (%v, %v)", ok, err)
	}
	// Host bits are ignored; the first request records the CIDR.
	a, _ := mustAlloc(t, s, vpcReq(netip.MustParsePrefix("10.0.0.77/24"), "default/a", "c1"))
	b, _ := mustAlloc(t, s, vpcReq(cidr24, "default/b", "c2"))
	if p, ok, err := s.PodCIDR(); p != cidr24 || !ok || err != nil {
		t.Fatalf("PodCIDR = %v, %v, %v; want %v", p, ok, err, cidr24)
	}
	newCIDR := netip.MustParsePrefix("10.1.0.0/24")
	_, _, err := s.AllocateVPC(vpcReq(newCIDR, "default/c", "c3"))
	wantErr(t, err, ErrCIDRChanged, "10.1.0.0/24", "10.0.0.0/24", "SetPodCIDR")

	outside, err := s.SetPodCIDR(newCIDR)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(outside, []spec.Allocation{a, b}) {
		t.Errorf("SetPodCIDR reported %v, want both old allocations", ipsOf(outside))
	}
	c, _ := mustAlloc(t, s, vpcReq(newCIDR, "default/c", "c3"))
	if c.Spec.IP != "10.1.0.1" {
		t.Errorf("first address of the new CIDR = %s, want 10.1.0.1", c.Spec.IP)
	}
	// Old allocations are kept until released; a retried ADD of one of them
	// still gets its record back.
	if got := ipsOf(values(verify(t, s))); !slices.Equal(got, []string{"10.0.0.1", "10.0.0.2", "10.1.0.1"}) {
		t.Errorf("allocations after the change = %v", got)
	}
	// Setting the same CIDR again reports what is still outside.
	outside, err = s.SetPodCIDR(newCIDR)
	if err != nil || len(outside) != 2 {
		t.Errorf("SetPodCIDR again = %v, %v", ipsOf(outside), err)
	}
	// A CIDR that overlaps old allocations never hands them out twice.
	if _, err := s.SetPodCIDR(netip.MustParsePrefix("10.0.0.0/16")); err != nil {
		t.Fatal(err)
	}
	d, _ := mustAlloc(t, s, vpcReq(netip.MustParsePrefix("10.0.0.0/16"), "default/d", "c4"))
	if d.Spec.IP != "10.0.0.3" {
		t.Errorf("in the wider CIDR the next pod got %s, want 10.0.0.3", d.Spec.IP)
	}
	verify(t, s)
}

func TestAllocateVPCIPv6(t *testing.T) {
	s := openTemp(t)
	cidr := netip.MustParsePrefix("fd00:10::/126") // network address excluded: 3 usable
	var got []string
	for i := range 3 {
		a, _ := mustAlloc(t, s, vpcReq(cidr, podName(i), fmt.Sprintf("c%d", i)))
		got = append(got, a.Spec.IP)
	}
	if want := []string{"fd00:10::1", "fd00:10::2", "fd00:10::3"}; !slices.Equal(got, want) {
		t.Errorf("IPv6 /126 gave %v, want %v", got, want)
	}
	_, _, err := s.AllocateVPC(vpcReq(cidr, "default/x", "cx"))
	wantErr(t, err, ErrExhausted, "fd00:10::/126", "3 usable")
}

func TestPoolBounds(t *testing.T) {
	for _, tc := range []struct {
		cidr, first, last, size string
	}{
		{"10.0.0.0/24", "10.0.0.1", "10.0.0.254", "254"},
		{"10.0.0.0/31", "10.0.0.0", "10.0.0.1", "2"},
		{"10.0.0.7/32", "10.0.0.7", "10.0.0.7", "1"},
		{"fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff", "about 2^64"},
		{"fd00::1/128", "fd00::1", "fd00::1", "1"},
	} {
		p := newPool(netip.MustParsePrefix(tc.cidr), nil)
		if p.first.String() != tc.first || p.last.String() != tc.last || p.size() != tc.size {
			t.Errorf("%s: first %s last %s size %s; want %s %s %s", tc.cidr, p.first, p.last, p.size(), tc.first, tc.last, tc.size)
		}
	}
}

// TestAllocateVPCDeferredCommit: the allocation's transaction stays open
// until a commit. Readers do not see it meanwhile; a second allocation
// shares the transaction and takes another address; Settle, another
// writer, commits it at once; a commit may run on another goroutine and
// every member's commit returns the outcome; a retry has nothing to
// commit; a reopened store has the committed allocations.
func TestAllocateVPCDeferredCommit(t *testing.T) {
	path := storePath(t)
	s := openAt(t, path)
	first, _, existing, commit, err := s.AllocateVPCDeferred(vpcReq(cidr24, "x/a", "c1"))
	if err != nil || commit == nil || existing {
		t.Fatalf("deferred allocation: %v, commit %v, existing %v", err, commit != nil, existing)
	}
	if _, found, err := s.Get("c1", "eth0"); err != nil || found {
		t.Fatalf("a reader sees the uncommitted allocation: found %v, %v", found, err)
	}
	second, _, _, commit2, err := s.AllocateVPCDeferred(vpcReq(cidr24, "x/b", "c2"))
	if err != nil || commit2 == nil {
		t.Fatalf("second deferred allocation: %v, commit %v", err, commit2 != nil)
	}
	if second.Spec.IP == first.Spec.IP || !cidr24.Contains(netip.MustParseAddr(second.Spec.IP)) {
		t.Errorf("the second allocation: %q; want another address of %s than the first's %s", second.Spec.IP, cidr24, first.Spec.IP)
	}
	if _, found, _ := s.Get("c2", "eth0"); found {
		t.Fatal("a reader sees the second uncommitted allocation")
	}
	if err := s.Settle(); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	for _, a := range []spec.Allocation{first, second} {
		if got, found, err := s.Get(a.Spec.ContainerID, "eth0"); err != nil || !found || got.Spec.IP != a.Spec.IP {
			t.Errorf("after Settle: %+v found %v, %v; want %s", got, found, err, a.Spec.IP)
		}
	}
	committed := make(chan error, 2)
	go func() { committed <- commit() }()
	go func() { committed <- commit2() }()
	for range 2 {
		if err := <-committed; err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	if again, _, existing, commit, err := s.AllocateVPCDeferred(vpcReq(cidr24, "x/a", "c1")); err != nil || commit != nil || !existing || again.Spec.IP != first.Spec.IP {
		t.Errorf("a retried ADD: %s, commit %v, existing %v, %v; want %s, existing, nothing to commit", again.Spec.IP, commit != nil, existing, err, first.Spec.IP)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openAt(t, path)
	if n, err := reopened.Count(); err != nil || n != 2 {
		t.Errorf("reopened store: %d allocations, %v; want 2", n, err)
	}
}

// TestAllocationsShareACommit: allocations made while one is uncommitted
// join its transaction: one commit, one transaction id, for all. One that
// fails before writing (the CIDR is full) leaves the others whole; the
// attachment allocated twice in one transaction is existing, and waits for
// the commit like the rest; an open transaction nobody commits commits
// by itself after groupMaxOpen.
func TestAllocationsShareACommit(t *testing.T) {
	// Long enough that nothing commits by itself until the test does.
	defer func(d time.Duration) { groupMaxOpen = d }(groupMaxOpen)
	groupMaxOpen = time.Minute
	s := openAt(t, storePath(t))
	cidr := netip.MustParsePrefix("10.0.1.0/29") // 6 usable addresses
	var commits []func() error
	var ips []string
	for i := range 6 {
		a, _, existing, commit, err := s.AllocateVPCDeferred(vpcReq(cidr, fmt.Sprintf("x/p%d", i), fmt.Sprintf("c%d", i)))
		if err != nil || commit == nil || existing {
			t.Fatalf("allocation %d: %v, commit %v, existing %v", i, err, commit != nil, existing)
		}
		commits, ips = append(commits, commit), append(ips, a.Spec.IP)
	}
	if _, _, _, _, err := s.AllocateVPCDeferred(vpcReq(cidr, "x/p6", "c6")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("a seventh allocation in a /29: %v, want ErrExhausted", err)
	}
	again, _, existing, commitAgain, err := s.AllocateVPCDeferred(vpcReq(cidr, "x/p0", "c0"))
	if err != nil || !existing || commitAgain == nil || again.Spec.IP != ips[0] {
		t.Fatalf("the first attachment again: %s, existing %v, commit %v, %v; want %s, existing, a commit to wait for", again.Spec.IP, existing, commitAgain != nil, err, ips[0])
	}
	if _, found, _ := s.Get("c0", "eth0"); found {
		t.Fatal("a reader sees the first allocation before any commit: the others waited for it instead of sharing its transaction")
	}
	if err := commits[3](); err != nil {
		t.Fatalf("commit: %v", err)
	}
	for i, c := range append(commits, commitAgain) {
		if err := c(); err != nil {
			t.Errorf("member %d's commit: %v", i, err)
		}
	}
	allocs, err := s.List()
	if err != nil || len(allocs) != 6 {
		t.Fatalf("after the commit: %d allocations, %v; want 6", len(allocs), err)
	}
	seen := map[string]bool{}
	for _, a := range allocs {
		if seen[a.Spec.IP] {
			t.Errorf("address %s allocated twice", a.Spec.IP)
		}
		seen[a.Spec.IP] = true
	}
	// Nobody commits this one: it commits by itself.
	groupMaxOpen = 5 * time.Millisecond
	s2 := openAt(t, storePath(t))
	if _, _, _, commit, err := s2.AllocateVPCDeferred(vpcReq(cidr24, "y/q", "d1")); err != nil || commit == nil {
		t.Fatalf("allocation: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, found, err := s2.Get("d1", "eth0"); err != nil || found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an uncommitted shared transaction was never committed")
		}
		time.Sleep(time.Millisecond)
	}
}
