package sim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/agent/store"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/sim"
	"github.com/terway-reconciler/terway/spec"
)

// converge polls leaks until the node shows none, or returns the last
// problems after timeout. Transient differences are expected right after a
// restart: the resync repairs the kernel, the reconciler returns idle IPs.
func converge(t *testing.T, st *sim.State, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		fresh, err := sim.Load(st.Name)
		if err != nil {
			t.Fatal(err)
		}
		problems := leaks(fresh)
		if len(problems) == 0 || time.Now().After(deadline) {
			return problems
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// leaks lists everything on the node, in the cloud and in the store that
// belongs to no running pod, and every duplicate address.
func leaks(st *sim.State) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	pods := map[string]*sim.Pod{} // by IP
	veths := map[string]string{}  // host veth -> pod IP
	for _, p := range st.Pods {
		if q, dup := pods[p.IP]; dup {
			add("duplicate IP %s: pods %s and %s", p.IP, q.Key(), p.Key())
		}
		pods[p.IP] = p
		veths[spec.HostVethName(p.Key())] = p.IP
	}

	// The cloud: every pod IP on an InUse ENI of ours, no IP twice, an
	// exclusive ENI only with its pod, and the shared ENIs' idle IPs (their
	// primaries count: they serve pods too) within the pool's bound.
	d, err := st.EmulatorDump(context.Background())
	if err != nil {
		return append(out, "emulator dump: "+err.Error())
	}
	var cidrs []netip.Prefix
	for _, v := range d.VSwitches {
		if p, err := netip.ParsePrefix(v.CIDR); err == nil {
			cidrs = append(cidrs, p)
		}
	}
	onENI := map[string]string{}
	idle := 0
	for _, e := range ours(d) {
		if e.Status != "InUse" || e.InstanceID == "" {
			add("ENI %s of ours is %s (instance %q): neither in use nor gone", e.ID, e.Status, e.InstanceID)
		}
		exclusive := e.Tags[eni.TagExclusive] == "true"
		if exclusive && pods[e.PrimaryIP] == nil {
			add("exclusive ENI %s (%s) belongs to no running pod: leaked", e.ID, e.PrimaryIP)
		}
		for _, ip := range append([]string{e.PrimaryIP}, e.IPs...) {
			if other, dup := onENI[ip]; dup {
				add("IP %s on ENIs %s and %s", ip, other, e.ID)
			}
			onENI[ip] = e.ID
			if pods[ip] == nil && !exclusive {
				idle++
			}
		}
	}
	for ip, p := range pods {
		if _, ok := onENI[ip]; !ok {
			add("pod %s: IP %s on no ENI of ours", p.Key(), ip)
		}
	}
	if idle > chaosMaxPool {
		add("%d IPs of shared ENIs held by no pod (pool max %d): leaked", idle, chaosMaxPool)
	}

	// The store: one allocation per running pod, with its address.
	allocs, err := readStore(filepath.Join(st.Dir, "agent", "allocations.db"))
	if err != nil {
		add("store: %v", err)
	}
	inStore := map[string]bool{}
	for _, a := range allocs {
		p := pods[a.Spec.IP]
		if p == nil || p.ContainerID != a.Spec.ContainerID {
			add("store: allocation %s/%s %s (container %s) belongs to no running pod", a.Metadata.Namespace, a.Metadata.Name, a.Spec.IP, a.Spec.ContainerID)
		}
		inStore[a.Spec.ContainerID] = true
	}
	for _, p := range st.Pods {
		if !inStore[p.ContainerID] {
			add("store: no allocation for running pod %s (%s)", p.Key(), p.IP)
		}
	}

	// The node namespace: our veths, routes, rules, neighbours and qdiscs
	// belong to running pods; nft set elements in the pods' range too.
	var links []struct {
		Name string `json:"ifname"`
	}
	if err := ipJSON(st.NodeNetns, &links, "link", "show"); err != nil {
		add("%v", err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Name, spec.HostVethPrefix) {
			if _, ok := veths[l.Name]; !ok {
				add("orphan veth %s", l.Name)
			}
			delete(veths, l.Name)
		}
	}
	for v, ip := range veths {
		add("pod %s has no host veth %s", ip, v)
	}
	var routes []struct {
		Dst, Dev string
	}
	if err := ipJSON(st.NodeNetns, &routes, "route", "show", "table", "all", "proto", strconv.Itoa(spec.RouteProtocol)); err != nil {
		add("%v", err)
	}
	for _, r := range routes {
		if strings.HasPrefix(r.Dev, spec.HostVethPrefix) && (pods[r.Dst] == nil || spec.HostVethName(pods[r.Dst].Key()) != r.Dev) {
			add("orphan route %s dev %s", r.Dst, r.Dev)
		}
	}
	var rules []struct {
		Priority int
		Src, Dst string
	}
	if err := ipJSON(st.NodeNetns, &rules, "rule", "show"); err != nil {
		add("%v", err)
	}
	for _, r := range rules {
		if r.Priority < spec.RulePriorityMin || r.Priority > spec.RulePriorityMax {
			continue
		}
		if pods[r.Src] == nil && pods[r.Dst] == nil {
			add("orphan rule %d from %s to %s", r.Priority, r.Src, r.Dst)
		}
	}
	var neigh []struct {
		Dst, Dev string
	}
	if err := ipJSON(st.NodeNetns, &neigh, "neigh", "show", "nud", "permanent"); err != nil {
		add("%v", err)
	}
	for _, n := range neigh {
		if strings.HasPrefix(n.Dev, spec.HostVethPrefix) && pods[n.Dst] == nil {
			add("orphan neighbour %s dev %s", n.Dst, n.Dev)
		}
	}
	var qdiscs []struct {
		Kind, Dev string
	}
	if err := runJSON(st.NodeNetns, &qdiscs, "tc", "-j", "qdisc", "show"); err != nil {
		add("%v", err)
	}
	for _, q := range qdiscs {
		if q.Kind == "tbf" && !strings.HasPrefix(q.Dev, spec.HostVethPrefix) {
			add("tbf qdisc on %s, not a pod's veth", q.Dev)
		}
	}
	var ruleset struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := runJSON(st.NodeNetns, &ruleset, "nft", "-j", "list", "table", "inet", "terway"); err != nil {
		add("%v", err)
	}
	for _, obj := range ruleset.Nftables {
		for _, kind := range []string{"set", "map"} {
			raw, ok := obj[kind]
			if !ok {
				continue
			}
			var s struct {
				Name string          `json:"name"`
				Elem json.RawMessage `json:"elem"`
			}
			_ = json.Unmarshal(raw, &s)
			for _, ip := range addrsIn(s.Elem) {
				if inAny(ip, cidrs) && pods[ip.String()] == nil {
					add("orphan element %s in nft %s %s", ip, kind, s.Name)
				}
			}
		}
	}

	// And nothing left to do.
	code, plan, err := st.AgentGet(context.Background(), "/plan")
	switch {
	case err != nil:
		add("GET /plan: %v", err)
	case code != 200:
		add("GET /plan: HTTP %d: %s", code, strings.TrimSpace(plan))
	case strings.TrimSpace(plan) != "":
		add("plan not empty:\n%s", strings.TrimSpace(plan))
	}
	return out
}

// readStore reads a copy of the agent's store: the running agent holds
// the file's lock.
func readStore(path string) ([]*spec.Allocation, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	cp, err := os.CreateTemp("", "chaos-store-*.db")
	if err != nil {
		return nil, err
	}
	defer os.Remove(cp.Name())
	_, err = io.Copy(cp, src)
	cp.Close()
	if err != nil {
		return nil, err
	}
	s, err := store.Open(cp.Name(), store.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.List()
}

func ipJSON(netns string, v any, args ...string) error {
	return runJSON(netns, v, append([]string{"ip", "-j"}, args...)...)
}

func runJSON(netns string, v any, args ...string) error {
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns, "--"}, args...)...).Output()
	if err != nil {
		return fmt.Errorf("%s: %v", strings.Join(args, " "), err)
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// addrsIn finds every IPv4 address string anywhere in an nft JSON value.
func addrsIn(raw json.RawMessage) []netip.Addr {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	var out []netip.Addr
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			if a, err := netip.ParseAddr(x); err == nil && a.Is4() {
				out = append(out, a)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	return out
}

func inAny(a netip.Addr, cidrs []netip.Prefix) bool {
	for _, c := range cidrs {
		if c.Contains(a) {
			return true
		}
	}
	return false
}
