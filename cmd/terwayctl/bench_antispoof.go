package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/apply/nft"
	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// The source validation figure: new TCP connections per second between two
// pods through a node namespace, with render's anti-spoofing chain and set
// (render.SourceValidation) against the same node without them. The set
// holds svFillers more pods than the two, so the figure is not that of a
// tiny set. On and off alternate within the run, each pair in both orders,
// and the reported ratio is the median of the pairs' ratios.
const (
	svPairs   = 6
	svFillers = 1000
	svPort    = 8080
)

func benchAntispoof(ctx context.Context, o benchOptions) ([]benchRow, error) {
	prefix := fmt.Sprintf("twb%d-sv-", os.Getpid())
	var made []string
	defer func() {
		for _, n := range made {
			if out, err := exec.Command("ip", "netns", "del", n).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "terwayctl bench: ip netns del %s: %v: %s\n", n, err, out)
			}
		}
	}()
	ns := func(name string) (string, error) {
		full := prefix + name
		if out, err := exec.Command("ip", "netns", "add", full).CombinedOutput(); err != nil {
			return "", fmt.Errorf("ip netns add %s: %v: %s", full, err, out)
		}
		made = append(made, full)
		return "/var/run/netns/" + full, nil
	}
	run := func(netnsName string, args ...string) error {
		full := append([]string{"netns", "exec", netnsName}, args...)
		if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
			return fmt.Errorf("in %s: %s: %v: %s", netnsName, strings.Join(args, " "), err, out)
		}
		return nil
	}
	node, err := ns("node")
	if err != nil {
		return nil, err
	}
	// Two pods wired as the datapath wires them: /32 on eth0, default via
	// the link-local gateway resolved by a permanent neighbour, /32 route
	// and permanent neighbour on the host veth.
	type pod struct{ path, host, ip string }
	var pods []pod
	for i, name := range []string{"a", "b"} {
		path, err := ns(name)
		if err != nil {
			return nil, err
		}
		p := pod{path: path, host: "twbsv" + name, ip: fmt.Sprintf("198.18.230.%d", i+2)}
		mac, podMAC := fmt.Sprintf("02:00:c6:12:e6:%02x", i+2), fmt.Sprintf("02:00:c6:12:e7:%02x", i+2)
		podNs, nodeNs := prefix+name, prefix+"node"
		for _, args := range [][]string{
			{nodeNs, "ip", "link", "add", p.host, "type", "veth", "peer", "name", "eth0", "netns", podNs},
			{nodeNs, "ip", "link", "set", p.host, "address", mac, "up"},
			{nodeNs, "ip", "route", "add", p.ip + "/32", "dev", p.host, "scope", "link"},
			{nodeNs, "ip", "neigh", "add", p.ip, "lladdr", podMAC, "dev", p.host, "nud", "permanent"},
			{podNs, "ip", "link", "set", "eth0", "address", podMAC},
			{podNs, "ip", "addr", "add", p.ip + "/32", "dev", "eth0"},
			{podNs, "ip", "link", "set", "eth0", "up"},
			{podNs, "ip", "neigh", "add", spec.PodGateway, "lladdr", mac, "dev", "eth0", "nud", "permanent"},
			{podNs, "ip", "route", "add", "default", "via", spec.PodGateway, "dev", "eth0", "onlink"},
		} {
			if err := run(args[0], args[1:]...); err != nil {
				return nil, err
			}
		}
		pods = append(pods, p)
	}
	if err := run(prefix+"node", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	srv, err := traffic.Serve(pods[1].path, fmt.Sprintf("%s:%d", pods[1].ip, svPort), "tcp")
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	pairs := []render.SourcePair{{HostVeth: pods[0].host, IP: pods[0].ip}, {HostVeth: pods[1].host, IP: pods[1].ip}}
	for i := range svFillers {
		pairs = append(pairs, render.SourcePair{HostVeth: fmt.Sprintf("twf%010x", i), IP: fmt.Sprintf("198.19.%d.%d", i/250, 1+i%250)})
	}
	set, chain := render.SourceValidation(pairs)
	on := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable, Sets: []*spec.NFTSet{&set}, Chains: []spec.NFTChain{chain}}
	off := &spec.NFTable{Family: spec.NFTFamily, Name: spec.NFTTable}
	on.Canonicalize()
	off.Canonicalize()
	reg := netns.NewRegistry("")
	defer reg.Close()
	r := nft.New(nft.Options{})
	addr := fmt.Sprintf("%s:%d", pods[1].ip, svPort)
	measure := func(doc *spec.NFTable) (float64, error) {
		if _, err := r.Sync(ctx, reg, node, doc); err != nil {
			return 0, err
		}
		return traffic.ConnRate(pods[0].path, addr, connDuration)
	}
	var ons, offs, ratios []float64
	for i := range svPairs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		var rOn, rOff float64
		for _, enabled := range order {
			doc := off
			if enabled {
				doc = on
			}
			rate, err := measure(doc)
			if err != nil {
				return nil, fmt.Errorf("source validation %v: %w", enabled, err)
			}
			if enabled {
				rOn = rate
			} else {
				rOff = rate
			}
		}
		ons, offs = append(ons, rOn), append(offs, rOff)
		ratios = append(ratios, rOn/rOff)
		fmt.Fprintf(o.log, "bench: source validation on %.0f, off %.0f connections/s (%.3f)\n", rOn, rOff, rOn/rOff)
	}
	// The forged packets must really be dropped with the table on, or the
	// figure would measure a chain that does nothing.
	if _, err := r.Sync(ctx, reg, node, on); err != nil {
		return nil, err
	}
	counters, err := nft.ReadCounters(reg, node, render.ChainAntispoof)
	if err != nil {
		return nil, err
	}
	if err := traffic.SendForged(pods[0].path, pods[1].ip, pods[1].ip, svPort); err != nil {
		return nil, err
	}
	after, err := nft.ReadCounters(reg, node, render.ChainAntispoof)
	if err != nil {
		return nil, err
	}
	if spoofed(after)-spoofed(counters) != 2 {
		return nil, errors.New("source validation: the forged SYN and datagram were not both counted as spoofed")
	}
	row := newRow(fmt.Sprintf("TCP connections/s between 2 pods, source validation on (%d pods in the set)", len(pairs)), "/s",
		median(ons), median(offs), "source validation off")
	if m := median(ratios); !math.IsNaN(m) {
		row.Ratio = &m // the median of the paired runs' ratios, not the ratio of the medians
	}
	return []benchRow{row}, nil
}

func spoofed(cs []nft.RuleCounter) uint64 {
	var n uint64
	for _, c := range cs {
		if c.Comment == render.CommentSpoofed {
			n += c.Packets
		}
	}
	return n
}
