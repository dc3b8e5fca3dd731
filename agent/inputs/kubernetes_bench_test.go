package inputs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/terway-reconciler/terway/internal/synth"
)

// BenchmarkKubernetesSnapshot is what a CNI ADD's render pays for its
// inputs from the in-cluster source, on a quiet cluster: one Snapshot of
// synth's cluster of 250 pods here, the rest elsewhere, and the policies.
//
//	go test -run '^$' -bench KubernetesSnapshot ./agent/inputs/
func BenchmarkKubernetesSnapshot(b *testing.B) {
	for _, size := range []struct{ pods, policies int }{{500, 1000}, {5000, 2000}} {
		b.Run(fmt.Sprintf("pods=%d,policies=%d", size.pods, size.policies), func(b *testing.B) {
			world := synth.Cluster(synth.Params{LocalPods: 250, RemotePods: size.pods - 250, Policies: size.policies, Namespaces: 20, Seed: 1})
			k, err := NewKubernetes(fake.NewClientset(synth.Objects(world, true)...), synth.NodeName, KubernetesOptions{Logger: quietLogger()})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			b.Cleanup(cancel)
			if err := k.Start(ctx); err != nil {
				b.Fatal(err)
			}
			for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
				s := k.Snapshot()
				if k.Synced() && len(s.Pods) == len(world.Pods) && len(s.Policies) == len(world.Policies) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("not synced after a minute: %d pods, %d policies", len(s.Pods), len(s.Policies))
				}
			}
			for b.Loop() {
				if s := k.Snapshot(); len(s.Pods) != len(world.Pods) {
					b.Fatalf("%d pods, want %d", len(s.Pods), len(world.Pods))
				}
			}
		})
	}
}
