package agent_test

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/terway-reconciler/terway/internal/nstest"
)

var soakCycles = flag.Int("soak.cycles", 2000, "BenchmarkSoak: pod ADD/DEL cycles")

// soakPoint is what one agent holds after some cycles of pod churn.
type soakPoint struct {
	cycles                   int
	fds, sockets, goroutines int
	rssKiB                   int
	nsids                    int
	storeBytes               int64
	storeRecords             int
}

// BenchmarkSoak churns pods through the real CNI against one agent, as a
// busy node does for days: each cycle makes a pod namespace, runs a CNI
// ADD and DEL through libcni and deletes the namespace; every pod has a
// name of its own (Pod objects come and go in the inputs, 100 at a time,
// ahead of their ADDs). At 0, ¼, ½ and all of -soak.cycles (2,000) it
// reads the agent's open descriptors, sockets, goroutines and RSS, the
// node namespace's namespace ids and the allocation store's size (file
// bytes and records). Goal: flat. It prints the table and reports the
// growth per churned pod between ¼ and the end (after warm-up) and from 0.
// Run once: go test -run '^$' -bench Soak -benchtime 1x ./agent/
func BenchmarkSoak(b *testing.B) {
	nstest.RequireRoot(b)
	for i := 0; i < b.N; i++ {
		points := soak(b, *soakCycles)
		first, quarter, last := points[0], points[1], points[len(points)-1]
		perPod := func(a, z int, from soakPoint) float64 { return float64(z-a) / float64(last.cycles-from.cycles) }
		b.ReportMetric(perPod(quarter.fds, last.fds, quarter), "fds/pod")
		b.ReportMetric(perPod(quarter.nsids, last.nsids, quarter), "nsids/pod")
		b.ReportMetric(perPod(quarter.goroutines, last.goroutines, quarter), "goroutines/pod")
		b.ReportMetric(perPod(quarter.rssKiB, last.rssKiB, quarter), "rssKiB/pod")
		b.ReportMetric(perPod(first.fds, last.fds, first), "fds/pod-from-0")
		b.ReportMetric(float64(last.storeRecords-first.storeRecords), "store-records-growth")
	}
}

func soak(b *testing.B, cycles int) []soakPoint {
	c := newCluster(b, 30*time.Second) // the agent's default resync
	c.logLevel = "info"
	c.writeInput("namespaces.yaml", namespacesYAML("soak"))
	const chunk = 100
	podsFile := func(k int) string { return fmt.Sprintf("soak-pods-%d.yaml", k) }
	writeChunk := func(k int) {
		var docs []string
		for i := k * chunk; i < (k+1)*chunk && i < cycles; i++ {
			docs = append(docs, c.podYAML("soak", fmt.Sprintf("p%d", i), nil, nil))
		}
		if len(docs) > 0 {
			c.writeInput(podsFile(k), strings.Join(docs, "---\n"))
		}
	}
	checkpoints := map[int]bool{0: true, cycles / 4: true, cycles / 2: true, cycles: true}
	var points []soakPoint
	start := time.Now()
	writeChunk(0)
	for i := 0; i <= cycles; i++ {
		if checkpoints[i] {
			p := c.soakPoint(i)
			points = append(points, p)
			b.Logf("after %d cycles (%s): %+v", i, time.Since(start).Round(time.Second), p)
		}
		if i == cycles {
			break
		}
		if i%chunk == 0 {
			writeChunk(i/chunk + 1) // the next pods are known before their ADDs
			if i >= chunk {
				c.removeInput(podsFile(i/chunk - 1))
			}
		}
		c.soakCycle(i)
	}
	printSoakTable(b, points, time.Since(start))
	return points
}

// soakCycle is one pod's life: namespace, ADD, DEL, namespace deleted.
func (c *cluster) soakCycle(i int) {
	name := fmt.Sprintf("p%d", i)
	full := fmt.Sprintf("tt%s-soak%d", nstest.RunID, i)
	if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
		c.t.Fatalf("ip netns add %s: %v: %s", full, err, out)
	}
	c.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", full).Run() }) // after a failure only
	p, err := c.addIn("soak", name, "/var/run/netns/"+full)
	if err != nil {
		c.t.Fatalf("cycle %d: ADD: %v", i, err)
	}
	if err := c.del(p); err != nil {
		c.t.Fatalf("cycle %d: DEL: %v", i, err)
	}
	if out, err := exec.Command("ip", "netns", "del", full).CombinedOutput(); err != nil {
		c.t.Fatalf("ip netns del %s: %v: %s", full, err, out)
	}
}

func (c *cluster) soakPoint(cycles int) soakPoint {
	u := c.usage()
	p := soakPoint{cycles: cycles, fds: u.fds, sockets: u.sockets, nsids: u.nsids, goroutines: -1}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.agent.Process.Pid))
	must(c.t, err)
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			p.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	// Without keep-alive: an idle connection would be one more socket and
	// goroutine in the agent at each checkpoint.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: c.dialInNode, DisableKeepAlives: true}}
	if resp, err := client.Get("http://" + c.health + "/metrics"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
				p.goroutines, _ = strconv.Atoi(v)
			}
		}
	}
	p.storeBytes, p.storeRecords = c.storeSize()
	return p
}

// storeSize returns the allocation store's file size and its number of
// records (keys in all buckets), read from a copy: the agent holds the
// file's lock.
func (c *cluster) storeSize() (int64, int) {
	path := filepath.Join(c.state, "allocations.db")
	st, err := os.Stat(path)
	must(c.t, err)
	cp := filepath.Join(c.t.TempDir(), "copy.db")
	src, err := os.Open(path)
	must(c.t, err)
	dst, err := os.Create(cp)
	must(c.t, err)
	_, err = io.Copy(dst, src)
	src.Close()
	must(c.t, dst.Close())
	must(c.t, err)
	db, err := bolt.Open(cp, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	must(c.t, err)
	defer db.Close()
	n := 0
	must(c.t, db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, bk *bolt.Bucket) error {
			n += bk.Stats().KeyN
			return nil
		})
	}))
	return st.Size(), n
}

func printSoakTable(b *testing.B, points []soakPoint, took time.Duration) {
	var s strings.Builder
	fmt.Fprintf(&s, "soak: %d ADD/DEL cycles through libcni against one agent in %s\n", points[len(points)-1].cycles, took.Round(time.Second))
	fmt.Fprintf(&s, "| cycles | open fds | sockets | goroutines | RSS (MiB) | node netns ids | store bytes | store records |\n")
	fmt.Fprintf(&s, "|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range points {
		fmt.Fprintf(&s, "| %d | %d | %d | %d | %.1f | %d | %d | %d |\n",
			p.cycles, p.fds, p.sockets, p.goroutines, float64(p.rssKiB)/1024, p.nsids, p.storeBytes, p.storeRecords)
	}
	b.Log("\n" + s.String())
	fmt.Print(s.String())
}
