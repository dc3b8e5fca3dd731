package sim

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/terway-reconciler/terway/internal/traffic"
)

// Probe reports whether the pod `from` reaches the pod `to` on the port: a
// TCP or UDP echo round trip from inside from's namespace to to's address.
func (st *State) Probe(from, to string, port int, protocol string, timeout time.Duration) (bool, error) {
	src, dst := st.Pod(from), st.Pod(to)
	if src == nil {
		return false, fmt.Errorf("--from %s: no such pod in sim %s", from, st.Name)
	}
	if dst == nil {
		return false, fmt.Errorf("--to %s: no such pod in sim %s", to, st.Name)
	}
	if protocol != "tcp" && protocol != "udp" {
		return false, fmt.Errorf("--protocol %q: want tcp or udp", protocol)
	}
	if port < 1 || port > 65535 {
		return false, fmt.Errorf("--port %d: want 1-65535", port)
	}
	return traffic.Probe(src.Netns, protocol, net.JoinHostPort(dst.IP, strconv.Itoa(port)), timeout), nil
}

// Matrix is the reachability of every pod from every pod on one port.
type Matrix struct {
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"`
	Pods     []string `json:"pods"`
	// Reachable[i][j]: Pods[i] reaches Pods[j].
	Reachable [][]bool `json:"reachable"`
}

// Matrix probes all pairs in parallel (a bounded number at a time, so that
// the probes themselves do not starve the machine).
func (st *State) Matrix(port int, protocol string, timeout time.Duration) (*Matrix, error) {
	m := &Matrix{Port: port, Protocol: protocol}
	for _, p := range st.Pods {
		m.Pods = append(m.Pods, p.Key())
	}
	n := len(m.Pods)
	m.Reachable = make([][]bool, n)
	for i := range m.Reachable {
		m.Reachable[i] = make([]bool, n)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, 32)
	for i := range n {
		for j := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ok, err := st.Probe(m.Pods[i], m.Pods[j], port, protocol, timeout)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				m.Reachable[i][j] = ok
			}()
		}
	}
	wg.Wait()
	return m, firstErr
}

// String prints the matrix as upstream's NetworkPolicy tests do: a row per
// source, a column per destination, "." reachable, "X" not.
func (m *Matrix) String() string {
	var b strings.Builder
	width := 0
	for _, p := range m.Pods {
		width = max(width, len(p))
	}
	fmt.Fprintf(&b, "%s/%d  (rows: from, columns: to; . reachable, X unreachable)\n", m.Protocol, m.Port)
	fmt.Fprintf(&b, "%-*s", width+1, "")
	for j := range m.Pods {
		fmt.Fprintf(&b, " %2d", j+1)
	}
	b.WriteByte('\n')
	for i, p := range m.Pods {
		fmt.Fprintf(&b, "%-*s", width+1, p)
		for j := range m.Pods {
			c := "X"
			if m.Reachable[i][j] {
				c = "."
			}
			fmt.Fprintf(&b, " %2s", c)
		}
		fmt.Fprintf(&b, "  %d\n", i+1)
	}
	return b.String()
}

// Grid is the matrix as rows of "." and "X", one string per source pod.
func (m *Matrix) Grid() []string {
	rows := make([]string, len(m.Pods))
	for i := range m.Pods {
		var b strings.Builder
		for j := range m.Pods {
			if m.Reachable[i][j] {
				b.WriteByte('.')
			} else {
				b.WriteByte('X')
			}
		}
		rows[i] = b.String()
	}
	return rows
}
