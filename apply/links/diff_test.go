package links

import (
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

const pod = "/var/run/netns/p"

func veth() spec.Link {
	return spec.Link{Name: "tw1", Kind: spec.LinkVeth, MAC: "02:00:00:00:00:01", MTU: 1500,
		Peer: &spec.VethPeer{Netns: pod, Name: "eth0", MAC: "02:00:00:00:00:02"}, Pod: "ns/a"}
}

// pair is the observation of veth() exactly as desired.
func pair() Observed {
	l := veth()
	l.Pod = ""
	p := *l.Peer
	l.Peer = &p
	return Observed{Link: l, Up: true, PeerUp: true, PeerMTU: 1500}
}

func eni(netns, name string) spec.Link {
	return spec.Link{Netns: netns, Name: name, Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 1500}
}

func TestDiff(t *testing.T) {
	mod := func(f func(*Observed)) Observed { o := pair(); f(&o); return o }
	for _, c := range []struct {
		name     string
		desired  []spec.Link
		observed []Observed
		want     []string
		writes   int
	}{
		{name: "empty"},
		{name: "converged", desired: []spec.Link{veth()}, observed: []Observed{pair()}},
		{
			name: "create", desired: []spec.Link{veth()},
			want:   []string{"+ link veth tw1 mac 02:00:00:00:00:01 mtu 1500 peer eth0 mac 02:00:00:00:00:02 netns " + pod},
			writes: 4,
		},
		{
			name: "fix in place", desired: []spec.Link{veth()},
			observed: []Observed{mod(func(o *Observed) { o.MTU, o.Up, o.Peer.MAC, o.PeerUp = 1400, false, "02:00:00:00:00:09", false })},
			want: []string{"~ link veth tw1 mac 02:00:00:00:00:01 mtu 1500 peer eth0 mac 02:00:00:00:00:02 netns " + pod +
				": mtu 1400 → 1500, set up, peer mac 02:00:00:00:00:09 → 02:00:00:00:00:02, peer set up"},
			writes: 5,
		},
		{
			name: "MAC written in capitals is the same MAC", observed: []Observed{pair()},
			desired: []spec.Link{func() spec.Link { l := veth(); l.MAC = strings.ToUpper(l.MAC); return l }()},
		},
		{
			name: "broken pair is recreated", desired: []spec.Link{veth()},
			observed: []Observed{mod(func(o *Observed) { o.Peer = nil })},
			want: []string{
				"- link veth tw1 mac 02:00:00:00:00:01 mtu 1500",
				"+ link veth tw1 mac 02:00:00:00:00:01 mtu 1500 peer eth0 mac 02:00:00:00:00:02 netns " + pod,
			},
			writes: 5,
		},
		{
			name: "leftover pod end is deleted before the create", desired: []spec.Link{veth()},
			observed: []Observed{{Link: spec.Link{Netns: pod, Name: "eth0", Kind: spec.LinkVeth, MAC: "02:00:00:00:00:02", MTU: 1500}}},
			want: []string{
				"- link veth eth0 mac 02:00:00:00:00:02 mtu 1500 netns " + pod,
				"+ link veth tw1 mac 02:00:00:00:00:01 mtu 1500 peer eth0 mac 02:00:00:00:00:02 netns " + pod,
			},
			writes: 5,
		},
		{
			name: "undesired host veth", observed: []Observed{mod(func(o *Observed) { o.Peer = nil })},
			want: []string{"- link veth tw1 mac 02:00:00:00:00:01 mtu 1500"}, writes: 1,
		},
		{
			name: "named non-veth in a pod namespace is sent to the host", desired: []spec.Link{veth()},
			observed: []Observed{{Link: spec.Link{Netns: pod, Name: "eth0", Kind: "device", MAC: "00:16:3e:00:00:07", MTU: 1500}, Up: true}},
			want: []string{
				"~ link device eth0 mac 00:16:3e:00:00:07 netns " + pod + ": not wanted here, set down, rename eth0 → eni00163e000007, move " + pod + " → host",
				"+ link veth tw1 mac 02:00:00:00:00:01 mtu 1500 peer eth0 mac 02:00:00:00:00:02 netns " + pod,
			},
			writes: 7,
		},
		{
			name: "ENI renamed and raised", desired: []spec.Link{eni("", "eth1")},
			observed: []Observed{{Link: spec.Link{Name: "ens5", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 1500}}},
			want:     []string{"~ link eni eth1 mac 00:16:3e:00:00:01 mtu 1500: rename ens5 → eth1, set up"}, writes: 2,
		},
		{
			name: "ENI moved into a pod", desired: []spec.Link{eni(pod, "eth0")},
			observed: []Observed{{Link: spec.Link{Name: "eth1", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 9000}, Up: true}},
			want: []string{"~ link eni eth0 mac 00:16:3e:00:00:01 mtu 1500 netns " + pod +
				": set down, rename eth1 → eni00163e000001, move host → " + pod + ", rename eni00163e000001 → eth0, mtu 9000 → 1500, set up"},
			writes: 6,
		},
		{
			name: "ENI in place", desired: []spec.Link{eni(pod, "eth0")},
			observed: []Observed{{Link: spec.Link{Netns: pod, Name: "eth0", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 1500}, Up: true}},
		},
		{
			name: "ENI not attached", desired: []spec.Link{eni("", "eth1")},
			want: []string{"+ link eni eth1 mac 00:16:3e:00:00:01 mtu 1500: not attached (no interface has this MAC)"},
		},
		{
			name:     "known ENI no item wants leaves a pod namespace",
			observed: []Observed{{Link: spec.Link{Netns: pod, Name: "eth0", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 1500}}},
			want:     []string{"~ link eni eth0 mac 00:16:3e:00:00:01 netns " + pod + ": not wanted here, rename eth0 → eni00163e000001, move " + pod + " → host"},
			writes:   2,
		},
		{
			name:     "known ENI no item wants stays in the host",
			observed: []Observed{{Link: spec.Link{Name: "eth1", Kind: spec.LinkENI, MAC: "00:16:3e:00:00:01", MTU: 1500}, Up: true}},
		},
		{
			name: "invalid items are planned as errors, not panics",
			desired: []spec.Link{
				{Name: "tw2", Kind: spec.LinkVeth},
				{Name: "x", Kind: "bond"},
				{Name: "e", Kind: spec.LinkENI, MAC: "zz"},
			},
			want: []string{"+ link eni e: invalid mac", "+ link veth tw2: invalid peer", "+ link bond x: invalid kind"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ops := Diff(c.desired, c.observed)
			got := make([]string, len(ops))
			writes := 0
			for i, o := range ops {
				got[i] = o.String()
				writes += o.Writes
				if o.Kind != Kind || o.Exec == nil {
					t.Errorf("%s: kind %q, exec set %v", o, o.Kind, o.Exec != nil)
				}
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("plan:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(c.want, "\n  "))
			}
			if writes != c.writes {
				t.Errorf("writes = %d, want %d", writes, c.writes)
			}
		})
	}
}

func TestDiffIsStable(t *testing.T) {
	a, b := veth(), veth()
	b.Name, b.Peer = "tw0", &spec.VethPeer{Netns: "/var/run/netns/q", Name: "eth0"}
	h := eni("", "eth1")
	one := Diff([]spec.Link{a, b, h}, nil)
	two := Diff([]spec.Link{h, b, a}, nil)
	if !slices.EqualFunc(one, two, func(x, y op.Op) bool { return x.String() == y.String() }) {
		t.Fatalf("order depends on input order:\n%v\n%v", one, two)
	}
}

func TestOwnership(t *testing.T) {
	doc := &spec.NodeState{
		Links: []spec.Link{veth(), eni("", "eth1"), eni(pod, "eth9")},
		ENI:   &spec.ENINeeds{ENIs: []spec.ENIWant{{Name: "e", MAC: "00:16:3E:00:00:05"}}},
	}
	o := NewOwnership(doc)
	mk := func(kind, name, mac string) netlink.Link {
		hw, _ := net.ParseMAC(mac)
		a := netlink.LinkAttrs{Name: name, HardwareAddr: hw}
		if kind == "veth" {
			return &netlink.Veth{LinkAttrs: a}
		}
		return &netlink.Bridge{LinkAttrs: a}
	}
	for _, c := range []struct {
		netns string
		link  netlink.Link
		want  bool
	}{
		{"", mk("veth", "tw9", "02:00:00:00:00:09"), true},         // any tw* veth in the host
		{"", mk("bridge", "twfake", "02:00:00:00:00:09"), false},   // tw* but not a veth
		{"", mk("veth", "fx0", "02:00:00:00:00:09"), false},        // a veth not named tw*
		{"", mk("bridge", "eth1", "02:00:00:00:00:09"), false},     // the ENI's name, not its MAC
		{"", mk("bridge", "ens5", "00:16:3e:00:00:01"), true},      // the ENI by MAC
		{pod, mk("veth", "eth0", "02:00:00:00:00:02"), true},       // named in the pod
		{pod, mk("bridge", "eth9", "02:00:00:00:00:02"), true},     // named in the pod by an eni item
		{pod, mk("veth", "fp0", "02:00:00:00:00:02"), false},       // not named
		{"/other", mk("veth", "eth0", "02:00:00:00:00:02"), false}, // named elsewhere only
		{"", mk("bridge", "eth5", "00:16:3e:00:00:05"), false},     // known ENI, but no item: not owned for addresses
	} {
		if got := o.Owns(c.netns, c.link); got != c.want {
			t.Errorf("Owns(%q, %s %s) = %v, want %v", c.netns, c.link.Type(), c.link.Attrs().Name, got, c.want)
		}
	}
	if !o.isKnownENI(mk("bridge", "eth5", "00:16:3e:00:00:05")) {
		t.Errorf("an ENI of the eni section is not known")
	}
	if NewOwnership(nil).Owns("", mk("veth", "tw1", "02:00:00:00:00:01")) != true {
		t.Errorf("without a document the host's tw* veths are still ours")
	}
}

func TestParkName(t *testing.T) {
	for mac, want := range map[string]string{
		"00:16:3e:00:00:01": "eni00163e000001",
		"00:16:3E:AB:CD:EF": "eni00163eabcdef",
		"":                  "keep",
		"zz":                "keep",
	} {
		if got := parkName(mac, "keep"); got != want || len(got) > 15 {
			t.Errorf("parkName(%q) = %q, want %q", mac, got, want)
		}
	}
}

type fakeNS struct {
	op.Namespaces
	exists map[string]bool
}

func (f fakeNS) Exists(n string) bool { return n == "" || f.exists[n] }

func TestNamespaces(t *testing.T) {
	ns := fakeNS{exists: map[string]bool{"/a": true, "/b": true}}
	got := Namespaces(ns, []string{"/b", "/gone", "/a", "/b", ""})
	if want := []string{"", "/a", "/b"}; !slices.Equal(got, want) {
		t.Errorf("Namespaces = %q, want %q", got, want)
	}
}
