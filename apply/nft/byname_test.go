package nft

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// TestByNameDerive walks chains of byNames, each derived from the last
// and changed at random as scoped plans change their records, and checks
// every one against a plain map, and that no change reaches the byName it
// was derived from, through the shared map or by a flattening.
func TestByNameDerive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	type version struct {
		m    byName[int]
		want map[string]*int
	}
	var podOf func(*int) string
	check := func(step int, v *version) {
		t.Helper()
		if v.m.len() != len(v.want) {
			t.Fatalf("step %d: len %d, want %d", step, v.m.len(), len(v.want))
		}
		got := map[string]*int{}
		for name, x := range v.m.all() {
			if _, twice := got[name]; twice {
				t.Fatalf("step %d: all yields %s twice", step, name)
			}
			got[name] = x
		}
		if !maps.Equal(got, v.want) {
			t.Fatalf("step %d: all yields %v, want %v", step, got, v.want)
		}
		for name, x := range v.want {
			if v.m.get(name) != x || !v.m.has(name) {
				t.Fatalf("step %d: get(%s) = %v, want %v", step, name, v.m.get(name), x)
			}
		}
		owned := 0
		for _, x := range v.want {
			if podOf(x) != "" {
				owned++
			}
		}
		if v.m.owned != owned || v.m.mayHoldPods() != (owned > 0) {
			t.Fatalf("step %d: %d objects of pods counted, want %d", step, v.m.owned, owned)
		}
		if v.m.get("never") != nil || v.m.has("never") {
			t.Fatalf("step %d: an object never put is there", step)
		}
		plain := v.m.plain()
		if !maps.Equal(plain, v.want) {
			t.Fatalf("step %d: plain is %v, want %v", step, plain, v.want)
		}
	}
	values := make([]int, 64)
	for i := range values {
		values[i] = i
	}
	first := map[string]*int{}
	for i := range 200 {
		first[fmt.Sprint("o", i)] = &values[i%64]
	}
	var versions []*version
	// Objects of odd values belong to a pod.
	podOf = func(x *int) string {
		if *x%2 == 1 {
			return "pod"
		}
		return ""
	}
	cur := &version{m: newByName(podOf), want: maps.Clone(first)}
	for name, x := range first {
		cur.m.put(name, x)
	}
	flattened := 0
	for step := range 2000 {
		sharedBefore := cur.m.over != nil
		next := &version{m: cur.m.derive(), want: maps.Clone(cur.want)}
		if sharedBefore && len(next.m.over) == 0 && len(cur.m.over) > 0 {
			flattened++
		}
		for range 1 + rng.IntN(12) {
			name := fmt.Sprint("o", rng.IntN(260))
			if rng.IntN(3) == 0 {
				next.m.del(name)
				delete(next.want, name)
			} else {
				x := &values[rng.IntN(64)]
				next.m.put(name, x)
				next.want[name] = x
			}
		}
		versions = append(versions, cur)
		check(step, next)
		for i, v := range versions[max(0, len(versions)-4):] {
			check(step*10+i, v) // the ones derived from are as they were
		}
		cur = next
	}
	if flattened == 0 {
		t.Errorf("no derive flattened the changes: the path that copies is untested")
	}
}
