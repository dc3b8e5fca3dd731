package store

import (
	"fmt"
	"sync"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// TestConcurrentAllocateRelease has 8 goroutines add, retry, replace and
// delete 200 pods while a reader checks every snapshot; in the end every
// pod holds exactly what its last call left, no address twice, and the
// indexes agree (Check). Run with -race.
func TestConcurrentAllocateRelease(t *testing.T) {
	const pods, workers = 200, 8
	s := openTemp(t)
	var (
		mu   sync.Mutex
		want = map[string]spec.Allocation{} // pod key → final allocation
		errs = make(chan error, pods*4)
	)
	work := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := podLifecycle(s, i, &mu, want); err != nil {
					errs <- err
				}
			}
		}()
	}
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() { // a reader: every snapshot is consistent
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			all, err := s.List()
			if err != nil {
				errs <- err
				return
			}
			seen := map[string]bool{}
			for _, a := range all {
				if seen[a.Spec.IP] {
					errs <- fmt.Errorf("snapshot holds IP %s twice", a.Spec.IP)
				}
				seen[a.Spec.IP] = true
			}
		}
	}()
	for i := range pods {
		work <- i
	}
	close(work)
	wg.Wait()
	close(stop)
	<-readerDone
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	all := verify(t, s)
	if len(all) != len(want) {
		t.Errorf("store holds %d allocations, want %d", len(all), len(want))
	}
	for _, a := range all {
		if w, ok := want[PodKey(a.Metadata)]; !ok || w != *a {
			t.Errorf("pod %s: store has %+v, last answer was %+v", PodKey(a.Metadata), *a, w)
		}
	}
}

// podLifecycle drives one pod through a path chosen by i%4: kept, deleted,
// sandbox replaced, or deleted and added again.
func podLifecycle(s *Store, i int, mu *sync.Mutex, want map[string]spec.Allocation) error {
	pod := podName(i)
	req := vpcReq(netip16, pod, fmt.Sprintf("c%d-1", i))
	a, _, err := s.AllocateVPC(req)
	if err != nil {
		return err
	}
	again, _, err := s.AllocateVPC(req)
	if err != nil || again != a {
		return fmt.Errorf("pod %s: retry got %+v, %v; want %+v", pod, again, err, a)
	}
	final := &a
	switch i % 4 {
	case 1:
		if _, found, err := s.Release(req.ContainerID, "eth0"); err != nil || !found {
			return fmt.Errorf("pod %s: release: %v, %v", pod, found, err)
		}
		final = nil
	case 2:
		req2 := vpcReq(netip16, pod, fmt.Sprintf("c%d-2", i))
		b, replaced, err := s.AllocateVPC(req2)
		if err != nil {
			return err
		}
		if replaced == nil || *replaced != a {
			return fmt.Errorf("pod %s: replaced = %v, want %+v", pod, replaced, a)
		}
		final = &b
	case 3:
		if _, _, err := s.Release(req.ContainerID, "eth0"); err != nil {
			return err
		}
		req.ContainerID = fmt.Sprintf("c%d-3", i)
		b, replaced, err := s.AllocateVPC(req)
		if err != nil || replaced != nil {
			return fmt.Errorf("pod %s: re-add: %v (replaced %v)", pod, err, replaced)
		}
		final = &b
	}
	mu.Lock()
	defer mu.Unlock()
	if final != nil {
		want[pod] = *final
	}
	return nil
}

// TestConcurrentSameAttachment: eight ADDs of one attachment at once (a
// runtime retrying) make one allocation, and all get the same address.
func TestConcurrentSameAttachment(t *testing.T) {
	s := openTemp(t)
	ips := make([]string, 8)
	var wg sync.WaitGroup
	for g := range ips {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, _, err := s.AllocateVPC(vpcReq(cidr24, "default/a", "c1"))
			if err != nil {
				t.Error(err)
			}
			ips[g] = a.Spec.IP
		}()
	}
	wg.Wait()
	for _, ip := range ips {
		if ip != "10.0.0.1" {
			t.Errorf("concurrent retries got %v, want all 10.0.0.1", ips)
			break
		}
	}
	if all := verify(t, s); len(all) != 1 {
		t.Errorf("store holds %d allocations, want 1", len(all))
	}
}
