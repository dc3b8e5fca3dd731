package op_test

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/internal/nstest"
)

func TestAttr(t *testing.T) {
	var b []byte
	b = append(b, nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("eth0")).Serialize()...)
	b = append(b, nl.NewRtAttr(unix.IFLA_MTU, nl.Uint32Attr(1500)).Serialize()...)
	b = append(b, nl.NewRtAttr(unix.IFLA_QDISC|unix.NLA_F_NESTED, nl.ZeroTerminated("tbf")).Serialize()...)
	if got := op.AttrString(b, unix.IFLA_IFNAME); got != "eth0" {
		t.Errorf("IFLA_IFNAME = %q, want eth0", got)
	}
	if got, ok := op.AttrU32(b, unix.IFLA_MTU); !ok || got != 1500 {
		t.Errorf("IFLA_MTU = %d, %v, want 1500", got, ok)
	}
	if got := op.AttrString(b, unix.IFLA_QDISC); got != "tbf" {
		t.Errorf("IFLA_QDISC (flagged nested) = %q, want tbf", got)
	}
	if _, ok := op.Attr(b, unix.IFLA_ADDRESS); ok {
		t.Error("found an attribute that is not there")
	}
	if _, ok := op.Attr(b[:len(b)-3], unix.IFLA_QDISC); ok {
		t.Error("found an attribute in a truncated run")
	}
}

// TestRouteConnFiltersAndSnapshot: the kernel filters a route dump by
// protocol and output link on a RouteConn, refuses a link that does not
// exist, and a snapshot reports each link's root qdisc kind.
func TestRouteConnFiltersAndSnapshot(t *testing.T) {
	path := nstest.Netns(t, "rtnl")
	reg := netns.NewRegistry(path)
	t.Cleanup(reg.Close)
	nstest.Run(t, path, "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	nstest.Run(t, path, "ip", "link", "set", "v0", "up")
	nstest.Run(t, path, "ip", "link", "set", "v1", "up")
	nstest.Run(t, path, "ip", "route", "add", "198.18.0.1/32", "dev", "v0", "proto", "250")
	nstest.Run(t, path, "ip", "route", "add", "198.18.0.2/32", "dev", "v1", "proto", "250")
	nstest.Run(t, path, "ip", "route", "add", "198.18.0.3/32", "dev", "v0", "proto", "static")
	nstest.Run(t, path, "tc", "qdisc", "add", "dev", "v1", "root", "handle", "1:", "tbf", "rate", "1mbit", "burst", "10kb", "limit", "20kb")

	snap := op.NewSnapshot(reg)
	ls, err := op.LinkList(snap, "")
	if err != nil {
		t.Fatal(err)
	}
	index := map[string]int{}
	for _, l := range ls {
		index[l.Attrs().Name] = l.Attrs().Index
	}
	if kind, ok := op.RootQdisc(snap, "", index["v1"]); !ok || kind != "tbf" {
		t.Errorf("root qdisc of v1 = %q, %v; want tbf", kind, ok)
	}
	if kind, ok := op.RootQdisc(snap, "", index["v0"]); !ok || kind != "noqueue" {
		t.Errorf("root qdisc of v0 = %q, %v; want noqueue", kind, ok)
	}
	if op.Limited(snap, "") {
		t.Error("a snapshot without OnlyLinks is limited")
	}

	dump := func(oif int) ([]string, error) {
		data := []nl.NetlinkRequestData{&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET, Protocol: 250}}}
		if oif != 0 {
			data = append(data, nl.NewRtAttr(unix.RTA_OIF, nl.Uint32Attr(uint32(oif))))
		}
		msgs, err := op.RouteDump(reg, "", unix.RTM_GETROUTE, unix.RTM_NEWROUTE, data...)
		var dsts []string
		for _, m := range msgs {
			if v, ok := op.Attr(m[unix.SizeofRtMsg:], unix.RTA_DST); ok {
				dsts = append(dsts, net.IP(v).String())
			}
		}
		return dsts, err
	}
	if got, err := dump(index["v0"]); err != nil || strings.Join(got, " ") != "198.18.0.1" {
		t.Errorf("routes of protocol 250 on v0: %v, %v; want 198.18.0.1 alone", got, err)
	}
	if got, err := dump(0); err != nil || strings.Join(got, " ") != "198.18.0.1 198.18.0.2" {
		t.Errorf("routes of protocol 250: %v, %v; want 198.18.0.1 198.18.0.2", got, err)
	}
	if _, err := dump(9999); !errors.Is(err, unix.ENODEV) {
		t.Errorf("dump on a link that does not exist: %v, want ENODEV", err)
	}

	limited := op.NewSnapshot(reg)
	limited.OnlyLinks("", []string{"v1", "gone"})
	ls, err = op.LinkList(limited, "")
	if err != nil || len(ls) != 1 || ls[0].Attrs().Name != "v1" || ls[0].Type() != (&netlink.Veth{}).Type() {
		t.Fatalf("links of a snapshot limited to v1 and gone: %v, %v; want the veth v1", ls, err)
	}
	if !op.Limited(limited, "") {
		t.Error("a snapshot with OnlyLinks is not limited")
	}
}
