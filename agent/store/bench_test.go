package store

import (
	"fmt"
	"testing"
)

// BenchmarkAllocateRelease is one CNI ADD's and one DEL's store work on a
// node with 100 pods: two write transactions, each fsynced by bbolt.
func BenchmarkAllocateRelease(b *testing.B) {
	s := openTemp(b)
	for i := range 100 {
		mustAlloc(b, s, vpcReq(netip16, podName(i), fmt.Sprintf("c%d", i)))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		cid := fmt.Sprintf("bench-%d", i)
		if _, _, err := s.AllocateVPC(vpcReq(netip16, "bench/pod", cid)); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.Release(cid, "eth0"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocateRetry is a retried ADD: a read, no write, no fsync.
func BenchmarkAllocateRetry(b *testing.B) {
	s := openTemp(b)
	for i := range 100 {
		mustAlloc(b, s, vpcReq(netip16, podName(i), fmt.Sprintf("c%d", i)))
	}
	req := vpcReq(netip16, podName(50), "c50")
	for b.Loop() {
		if _, _, err := s.AllocateVPC(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkList is what every render of the agent reads: the allocations
// of a node with 250 pods.
func BenchmarkList(b *testing.B) {
	s := openTemp(b)
	for i := range 250 {
		mustAlloc(b, s, vpcReq(netip16, podName(i), fmt.Sprintf("c%d", i)))
	}
	for b.Loop() {
		if _, err := s.List(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAllocateList is a CNI ADD's and a DEL's store work on a node
// with 250 pods with the List of the render after each: the List follows
// the write (followWrites) rather than reading every record again.
func BenchmarkAllocateList(b *testing.B) {
	s := openTemp(b)
	for i := range 250 {
		mustAlloc(b, s, vpcReq(netip16, podName(i), fmt.Sprintf("c%d", i)))
	}
	if _, err := s.List(); err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		cid := fmt.Sprintf("bench-%d", i)
		if _, _, err := s.AllocateVPC(vpcReq(netip16, "bench/pod", cid)); err != nil {
			b.Fatal(err)
		}
		if _, err := s.List(); err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.Release(cid, "eth0"); err != nil {
			b.Fatal(err)
		}
		if _, err := s.List(); err != nil {
			b.Fatal(err)
		}
	}
}
