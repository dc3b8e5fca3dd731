package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/spec"
)

// TestAgentConcurrentAddDel runs 8 concurrent workers that ADD and then DEL
// 200 pods through libcni: no duplicate IP, no lost allocation, no orphan
// object afterwards.
func TestAgentConcurrentAddDel(t *testing.T) {
	nstest.RequireRoot(t)
	if testing.Short() {
		t.Skip("200 namespaces")
	}
	c := newCluster(t, resync)
	c.writeInput("namespaces.yaml", namespacesYAML("x"))
	var yaml []string
	for i := 0; i < 200; i++ {
		yaml = append(yaml, c.podYAML("x", fmt.Sprintf("c%d", i), map[string]string{"app": "c"}, nil))
	}
	c.writeInput("pods.yaml", strings.Join(yaml, "---\n"))

	work := make(chan int)
	var mu sync.Mutex
	ips := map[string]string{}
	var added []*podNS
	var errs []error
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p, err := c.add("x", fmt.Sprintf("c%d", i))
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("ADD x/c%d: %w", i, err))
				} else {
					if other, dup := ips[p.ip]; dup {
						errs = append(errs, fmt.Errorf("x/c%d and %s both got %s", i, other, p.ip))
					}
					ips[p.ip] = fmt.Sprintf("x/c%d", i)
					added = append(added, p)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < 200; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(ips) != 200 {
		t.Fatalf("%d distinct IPs for 200 pods", len(ips))
	}
	if out := nstest.Run(t, c.node, "ip", "-o", "link"); strings.Count(out, ": "+spec.HostVethPrefix) != 200 {
		t.Errorf("%d host veths for 200 pods", strings.Count(out, ": "+spec.HostVethPrefix))
	}
	if code, plan := c.get("/plan"); code != http.StatusOK || plan != "" {
		t.Errorf("plan after 200 concurrent ADDs (HTTP %d):\n%s", code, plan)
	}

	dels := make(chan *podNS)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range dels {
				if err := c.del(p); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("DEL %s/%s: %w", p.ns, p.name, err))
					mu.Unlock()
				}
			}
		}()
	}
	for _, p := range added {
		dels <- p
	}
	close(dels)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	// DELs that came together were torn down together (del_batch.go):
	// eight workers whose DELs each wait ~20 ms for the kernel under the
	// agent's lock queue up behind each other.
	agentLog, err := os.ReadFile(c.agentLog.Name())
	if err != nil {
		t.Fatal(err)
	}
	deleted, batched := 0, 0
	for _, line := range strings.Split(string(agentLog), "\n") {
		var entry struct {
			Msg   string `json:"msg"`
			Batch int    `json:"batch"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "pod deleted" {
			continue
		}
		deleted++
		if entry.Batch > 1 {
			batched++
		}
	}
	if deleted != 200 || batched == 0 {
		t.Errorf("the agent logged %d pods deleted, %d of them in a batch with another; want 200, and some batched", deleted, batched)
	}
	t.Logf("%d of 200 DELs from 8 workers torn down in batches of more than one", batched)
	if out := nstest.Run(t, c.node, "ip", "-o", "link"); strings.Contains(out, ": "+spec.HostVethPrefix) {
		t.Errorf("host veths left after deleting every pod:\n%s", out)
	}
	if out := nstest.Run(t, c.node, "ip", "route", "show", "table", "all", "proto", "250"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after deleting every pod:\n%s", out)
	}
	if code, plan := c.get("/plan"); code != http.StatusOK || plan != "" {
		t.Errorf("plan after deleting every pod (HTTP %d):\n%s", code, plan)
	}
}
