package store

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/spec"
)

// netip16 is big enough that the crash helper never exhausts it.
var netip16 = netip.MustParsePrefix("10.0.0.0/16")

func alloc(pod, cid, ip string) spec.Allocation {
	ns, name, _ := strings.Cut(pod, "/")
	return spec.Allocation{
		Metadata: spec.ObjectMeta{Namespace: ns, Name: name},
		Spec:     spec.AllocationSpec{IP: ip, ContainerID: cid, IfName: "eth0", Netns: "/proc/1/ns/net", ENI: "eni-1"},
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := storePath(t)
	openAt(t, path)
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700 | os.ModeDir} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestPutGetByPodList(t *testing.T) {
	s := openTemp(t)
	for _, a := range []spec.Allocation{
		alloc("kube-system/coredns", "c2", "::ffff:10.0.1.9"), // stored canonically
		alloc("default/web", "c1", "10.0.1.5"),
	} {
		if err := s.Put(a); err != nil {
			t.Fatal(err)
		}
	}
	got, found, err := s.Get("c2", "eth0")
	if err != nil || !found {
		t.Fatalf("Get(c2) = %v, %v", found, err)
	}
	if got.APIVersion != spec.APIVersion || got.Kind != spec.KindAllocation || got.Spec.IP != "10.0.1.9" || got.Spec.ENI != "eni-1" {
		t.Errorf("Get(c2) = %+v; want apiVersion/kind filled in and IP 10.0.1.9", got)
	}
	if byPod, found, err := s.ByPod("kube-system/coredns"); err != nil || !found || byPod != got {
		t.Errorf("ByPod = %+v, %v, %v; want %+v", byPod, found, err, got)
	}
	if _, found, err := s.ByPod("default/nothing"); found || err != nil {
		t.Errorf("ByPod(unknown) = %v, %v", found, err)
	}
	if _, found, err := s.Get("c1", "eth1"); found || err != nil {
		t.Errorf("Get(c1/eth1) = %v, %v", found, err)
	}
	list := verify(t, s)
	if keys := []string{PodKey(list[0].Metadata), PodKey(list[1].Metadata)}; !slices.Equal(keys, []string{"default/web", "kube-system/coredns"}) {
		t.Errorf("List order = %v, want sorted by pod key", keys)
	}

	// Replacing an attachment's record moves its IP: the old one is free.
	moved := alloc("default/web", "c1", "10.0.1.6")
	if err := s.Put(moved); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(alloc("default/other", "c3", "10.0.1.5")); err != nil {
		t.Errorf("the replaced record's IP is not free: %v", err)
	}
	verify(t, s)

	// Conflicts: an IP or a pod already held by another attachment.
	wantErr(t, s.Put(alloc("default/new", "c4", "10.0.1.6")), ErrConflict, "10.0.1.6", "c1/eth0")
	wantErr(t, s.Put(alloc("default/web", "c5", "10.0.1.7")), ErrConflict, "default/web", "c1/eth0")

	// Invalid records.
	bad := alloc("default/x", "c9", "10.0.1.300")
	wantErr(t, s.Put(bad), ErrInvalid, "default/x", "10.0.1.300")
	bad = alloc("default/x", "c9", "10.0.1.30")
	bad.Kind = "Pod"
	wantErr(t, s.Put(bad), ErrInvalid, "kind")
	wantErr(t, s.Put(alloc("x", "c9", "10.0.1.30")), ErrInvalid, "namespace")
	verify(t, s)
}

func TestReleaseIdempotent(t *testing.T) {
	s := openTemp(t)
	a, _ := mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))
	for i, want := range []bool{true, false, false} {
		got, found, err := s.Release("c1", "eth0")
		if err != nil || found != want {
			t.Fatalf("Release #%d = %v, %v; want found=%v", i, found, err, want)
		}
		if found && got != a {
			t.Errorf("Release returned %+v, want %+v", got, a)
		}
	}
	if _, found, _ := s.Release("never-seen", "eth0"); found {
		t.Error("an unknown attachment was found")
	}
	if _, found, _ := s.ByPod("default/a"); found {
		t.Error("the pod index still has the released pod")
	}
	if all := verify(t, s); len(all) != 0 {
		t.Errorf("store not empty: %v", ipsOf(values(all)))
	}
}

// A batch of DELs releases in one transaction: each attachment's own
// answer, an unknown or repeated one not found, the rest of the store kept.
func TestReleaseAll(t *testing.T) {
	s := openTemp(t)
	var have []spec.Allocation
	for i := range 4 {
		a, _ := mustAlloc(t, s, vpcReq(cidr24, podName(i), fmt.Sprintf("c%d", i)))
		have = append(have, a)
	}
	ids := []Attachment{{"c0", "eth0"}, {"never-seen", "eth0"}, {"c2", "eth0"}, {"c0", "eth0"}, {"c3", "eth1"}}
	released, found, err := s.ReleaseAll(ids)
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true, false, false}; !slices.Equal(found, want) {
		t.Errorf("found %v, want %v", found, want)
	}
	if released[0] != have[0] || released[2] != have[2] {
		t.Errorf("released %+v and %+v, want %+v and %+v", released[0], released[2], have[0], have[2])
	}
	got, want := ipsOf(values(verify(t, s))), []string{have[1].Spec.IP, have[3].Spec.IP}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("left %v, want the addresses of c1 and c3", got)
	}
	if _, found, _ := s.ByPod(podName(2)); found {
		t.Error("the pod index still has a released pod")
	}
	// Nothing to release writes nothing and is no error.
	if _, found, err := s.ReleaseAll([]Attachment{{"c0", "eth0"}}); err != nil || found[0] {
		t.Errorf("releasing a released attachment again: found %v, %v", found, err)
	}
	// The addresses are free again: the next allocation gets the lowest.
	if a, _ := mustAlloc(t, s, vpcReq(cidr24, "default/new", "c9")); a.Spec.IP != have[0].Spec.IP {
		t.Errorf("new pod got %s, want the released %s", a.Spec.IP, have[0].Spec.IP)
	}
}

func TestGC(t *testing.T) {
	s := openTemp(t)
	for i := range 6 {
		mustAlloc(t, s, vpcReq(cidr24, podName(i), fmt.Sprintf("c%d", i)))
	}
	valid := []Attachment{{"c1", "eth0"}, {"c4", "eth0"}, {"c5", "eth1"}, {"gone", "eth0"}}
	released, err := s.GC(valid)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range released {
		ids = append(ids, AttachmentOf(a).String())
	}
	// Sorted by pod key: ns0/pod-000, ns0/pod-003, ns2/pod-002, ns2/pod-005.
	if want := []string{"c0/eth0", "c3/eth0", "c2/eth0", "c5/eth0"}; !slices.Equal(ids, want) {
		t.Errorf("GC released %v, want %v", ids, want)
	}
	if got := ipsOf(values(verify(t, s))); !slices.Equal(got, []string{"10.0.0.2", "10.0.0.5"}) {
		t.Errorf("left %v, want c4's and c1's", got)
	}
	// Nothing left to collect: no error, nothing released.
	if again, err := s.GC(valid); err != nil || len(again) != 0 {
		t.Errorf("second GC = %v, %v", again, err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	path := storePath(t)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustAlloc(t, s, vpcReq(cidr24, podName(i), fmt.Sprintf("c%d", i)))
	}
	for i := 0; i < 50; i += 7 {
		if _, _, err := s.Release(fmt.Sprintf("c%d", i), "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(alloc("eni/pod", "eni-c", "172.16.0.9")); err != nil {
		t.Fatal(err)
	}
	before := verify(t, s)

	// A copy taken while the store is open holds every committed write:
	// bbolt fsyncs each commit, so this is what a crash would leave.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	crashCopy := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(crashCopy, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := verify(t, openAt(t, crashCopy)); !slices.Equal(values(got), values(before)) {
		t.Errorf("copy of the open file holds %d allocations, want %d", len(got), len(before))
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.List(); err == nil {
		t.Error("List on a closed store succeeded")
	}
	s2 := openAt(t, path)
	if got := verify(t, s2); !slices.Equal(values(got), values(before)) {
		t.Errorf("after reopening: %d allocations, want %d", len(got), len(before))
	}
	if p, ok, _ := s2.PodCIDR(); !ok || p != cidr24 {
		t.Errorf("pod CIDR after reopening = %v, %v", p, ok)
	}
	// Lowest-free continues where it was: c0's address is free.
	a, _ := mustAlloc(t, s2, vpcReq(cidr24, "default/new", "cnew"))
	if a.Spec.IP != "10.0.0.1" {
		t.Errorf("after reopening the next pod got %s, want 10.0.0.1", a.Spec.IP)
	}
}

// TestCrashKeepsAcknowledged runs allocations in a child process, kills
// it with SIGKILL in the middle, and checks that every allocation the child
// had been answered is in the store, with its address, and nothing is
// half-written.
func TestCrashKeepsAcknowledged(t *testing.T) {
	path := storePath(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "STORE_CRASH_HELPER="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child prints "ok <cid> <ip>" after each allocation returned and
	// "released <cid>" after each release returned. A release can be in
	// flight when the child dies: such a pod may be present or not.
	acked := map[string]string{}
	released := map[string]bool{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 40 {
		switch f := strings.Fields(sc.Text()); {
		case len(f) == 3 && f[0] == "ok":
			acked[f[1]] = f[2]
		case len(f) == 2 && f[0] == "released":
			released[f[1]] = true
		}
	}
	_ = cmd.Process.Kill() // SIGKILL, mid-stream
	go func() { _, _ = io.Copy(io.Discard, out) }()
	_ = cmd.Wait()
	if len(acked) < 40 {
		t.Fatalf("child acknowledged only %d allocations", len(acked))
	}
	s := openAt(t, path)
	all := verify(t, s)
	got := map[string]string{}
	for _, a := range all {
		got[a.Spec.ContainerID] = a.Spec.IP
	}
	for cid, ip := range acked {
		var i int
		_, _ = fmt.Sscanf(cid, "c%d", &i)
		inFlight := i%3 == 0 && !released[cid]
		switch {
		case released[cid] && got[cid] != "":
			t.Errorf("released %s, but after the crash the store has it (%s)", cid, got[cid])
		case !released[cid] && got[cid] != ip && !(inFlight && got[cid] == ""):
			t.Errorf("acknowledged %s → %s; after the crash the store has %q", cid, ip, got[cid])
		}
	}
	t.Logf("child acknowledged %d, store holds %d after SIGKILL", len(acked), len(all))
}

// TestCrashHelper is the child of TestCrashKeepsAcknowledged.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv("STORE_CRASH_HELPER")
	if path == "" {
		t.Skip("runs as the child of TestCrashKeepsAcknowledged")
	}
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ { // until killed
		cid := fmt.Sprintf("c%d", i)
		a, _, err := s.AllocateVPC(vpcReq(netip16, podName(i), cid))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("ok %s %s\n", cid, a.Spec.IP)
		if i%3 == 0 {
			if _, _, err := s.Release(cid, "eth0"); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("released %s\n", cid)
		}
	}
}

func TestLockedByAnotherOpen(t *testing.T) {
	path := storePath(t)
	openAt(t, path)
	_, err := Open(path, Options{LockTimeout: 100 * time.Millisecond})
	wantErr(t, err, ErrLocked, path, "another terwayd")
}

func TestReadOnly(t *testing.T) {
	path := storePath(t)
	s := openAt(t, path)
	mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if all := verify(t, r); len(all) != 1 {
		t.Errorf("read-only store lists %d", len(all))
	}
	if _, _, err := r.AllocateVPC(vpcReq(cidr24, "default/b", "c2")); err == nil {
		t.Error("a read-only store accepted a write")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.db"), Options{ReadOnly: true}); err == nil {
		t.Error("opening a missing file read-only succeeded")
	}
}

// TestRecordOrder: each new attachment gets the next number of the store's
// order (render keeps the first recorded of two attachments that name one
// namespace); rewriting a record keeps its number, and the order survives
// a release and a reopen.
func TestRecordOrder(t *testing.T) {
	path := storePath(t)
	s := openAt(t, path)
	seq := func(cid string) uint64 {
		t.Helper()
		a, found, err := s.Get(cid, "eth0")
		if err != nil || !found {
			t.Fatalf("Get(%s) = %v, %v", cid, found, err)
		}
		return a.Spec.Seq
	}
	for _, a := range []spec.Allocation{alloc("x/a", "c1", "10.0.0.1"), alloc("x/b", "c2", "10.0.0.2")} {
		if err := s.Put(a); err != nil {
			t.Fatal(err)
		}
	}
	first, second := seq("c1"), seq("c2")
	if first == 0 || second <= first {
		t.Fatalf("order of two new records: %d, %d; want increasing from 1", first, second)
	}
	if err := s.Put(alloc("x/a", "c1", "10.0.0.3")); err != nil {
		t.Fatal(err)
	}
	if got := seq("c1"); got != first {
		t.Errorf("a rewritten record moved from %d to %d in the order", first, got)
	}
	if _, _, err := s.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path)
	if err := s.Put(alloc("x/a", "c3", "10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if got := seq("c3"); got <= second {
		t.Errorf("a record after a release and a reopen is number %d, not after %d", got, second)
	}
	verify(t, s)
}

// TestListFollowsWrites: List answers from what it read last while the
// store has not written since, and after a write (an allocation, a
// release, a Put, a GC) from that answer changed by what the write wrote,
// which is what reading every record gives. (The answer is shared with
// the store: TestListSharedUnchanged.)
func TestListFollowsWrites(t *testing.T) {
	s := openTemp(t)
	names := func() []string {
		t.Helper()
		all, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, a := range all {
			out = append(out, a.Metadata.Namespace+"/"+a.Metadata.Name)
		}
		return out
	}
	check := func(when string, want ...string) {
		t.Helper()
		if got := names(); !slices.Equal(got, want) {
			t.Errorf("%s: List names %v, want %v", when, got, want)
		}
	}
	check("empty")
	mustAlloc(t, s, vpcReq(cidr24, "default/a", "c1"))
	check("after one allocation", "default/a")
	check("listed again", "default/a")
	b, _ := mustAlloc(t, s, vpcReq(cidr24, "default/b", "c2"))
	check("after a second allocation", "default/a", "default/b")
	if _, _, err := s.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	check("after a release", "default/b")
	b.Metadata.Name = "c"
	if err := s.Put(b); err != nil {
		t.Fatal(err)
	}
	check("after a Put", "default/c")

	// The answer kept is the one given while nothing is written, and a
	// write changes it by what it wrote rather than reading every record
	// again: marked here, the mark shows, also after a write.
	s.listMu.Lock()
	s.listed[0].Metadata.Name = "kept"
	s.listMu.Unlock()
	check("from the answer kept", "default/kept")
	mustAlloc(t, s, vpcReq(cidr24, "default/d", "c4"))
	check("after a write, followed", "default/d", "default/kept")

	// What a write makes of the answer is what reading every record gives,
	// for each kind of write.
	fresh := func() []*spec.Allocation {
		t.Helper()
		s.listMu.Lock()
		s.listed = nil
		s.listMu.Unlock()
		all, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		return all
	}
	fresh()
	e, _ := mustAlloc(t, s, vpcReq(cidr24, "default/e", "c5"))
	f, _ := mustAlloc(t, s, vpcReq(cidr24, "default/f", "c6"))
	for _, w := range []struct {
		name  string
		write func() error
	}{
		{"an allocation", func() error { _, _, err := s.AllocateVPC(vpcReq(cidr24, "default/g", "c7")); return err }},
		{"a release", func() error { _, _, err := s.Release("c4", "eth0"); return err }},
		{"a Put of a new record", func() error { e.Metadata.Name = "e2"; return s.Put(e) }},
		{"a GC of two records", func() error {
			_, err := s.GC([]Attachment{AttachmentOf(f)})
			return err
		}},
	} {
		before, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		s.listMu.Lock()
		followed := s.listed != nil && !slices.EqualFunc(s.listed, before, func(a, b *spec.Allocation) bool { return *a == *b })
		s.listMu.Unlock()
		got, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if want := fresh(); !followed || !slices.EqualFunc(got, want, func(a, b *spec.Allocation) bool { return *a == *b }) {
			t.Errorf("after %s: followed %v, List %+v, want %+v", w.name, followed, values(got), values(want))
		}
	}
}
