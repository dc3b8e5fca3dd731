package eni

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/spec"
)

// ips returns n addresses 198.18.<net>.<from>.. as strings.
func ips(net, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("198.18.%d.%d", net, from+i)
	}
	return out
}

// shared builds a ready shared ENI whose primary is the first of its IPs.
func shared(id string, net, held, idle int) eniView {
	all := ips(net, 10, held+idle)
	return eniView{ID: id, MAC: "00:16:3e:00:00:" + id[len(id)-2:], VSwitch: "vsw-a", Primary: all[0],
		Held: all[:held], Idle: all[held:], Ready: true}
}

func ptr(n int) *int { return &n }

// summary prints a plan compactly: one token per ENI want, then short.
func summary(p plan) string {
	var parts []string
	for _, w := range p.Needs.ENIs {
		s := w.Name
		if w.Exclusive {
			s += "(x"
			if w.Pod != "" {
				s += " " + w.Pod
			}
			s += ")"
		}
		if w.Add > 0 {
			s += fmt.Sprintf("+%d", w.Add)
		}
		if len(w.Release) > 0 {
			s += fmt.Sprintf("-%d", len(w.Release))
		}
		if w.Delete {
			s += " delete"
		}
		parts = append(parts, s)
	}
	if p.Short > 0 {
		parts = append(parts, fmt.Sprintf("short %d (%d)", p.Short, p.Reason))
	}
	if len(p.ExclusiveShort) > 0 {
		parts = append(parts, "exclusive short "+strings.Join(p.ExclusiveShort, ","))
	}
	return strings.Join(parts, "; ")
}

func TestPlanPool(t *testing.T) {
	limits := Limits{MaxENIs: 4, IPsPerENI: 10}
	tests := []struct {
		name string
		view poolView
		want string
	}{
		{
			name: "empty pool, one caller: one ENI with the refill batch",
			view: poolView{Limits: limits, MaxIdle: 10, Pending: 1, CanCreate: true},
			want: "new-1+6",
		},
		{
			name: "thirty callers fill three ENIs exactly",
			view: poolView{Limits: limits, Pending: 30, CanCreate: true},
			want: "new-1+10; new-2+10; new-3+10",
		},
		{
			name: "all thirty IPs held: the thirty-first is short for the limits",
			view: poolView{Limits: limits, Pending: 1, CanCreate: true, ENIs: []eniView{
				shared("eni-01", 1, 10, 0), shared("eni-02", 2, 10, 0), shared("eni-03", 3, 10, 0)}},
			want: "eni-01; eni-02; eni-03; short 1 (1)",
		},
		{
			name: "idle inside the bounds: nothing to do",
			view: poolView{Limits: limits, MinIdle: 2, MaxIdle: 8, CanCreate: true, ENIs: []eniView{shared("eni-01", 1, 5, 4)}},
			want: "eni-01",
		},
		{
			name: "below the minimum: the busiest ENI with room first, to the middle of the range",
			view: poolView{Limits: limits, MinIdle: 4, MaxIdle: 10, CanCreate: true, ENIs: []eniView{
				shared("eni-01", 1, 2, 1), shared("eni-02", 2, 6, 0)}},
			want: "eni-01+2; eni-02+4",
		},
		{
			name: "everything released with max 5: two ENIs deleted whole, five secondaries of the third",
			view: poolView{Limits: limits, MaxIdle: 5, CanCreate: true, ENIs: []eniView{
				shared("eni-01", 1, 0, 10), shared("eni-02", 2, 0, 10), shared("eni-03", 3, 0, 10)}},
			want: "eni-01-10 delete; eni-02-10 delete; eni-03-5",
		},
		{
			name: "everything released with max 0: every ENI deleted",
			view: poolView{Limits: limits, CanCreate: true, ENIs: []eniView{
				shared("eni-01", 1, 0, 10), shared("eni-02", 2, 0, 3)}},
			want: "eni-01-10 delete; eni-02-3 delete",
		},
		{
			name: "release from the least used ENI; an ENI serving pods keeps its primary",
			view: poolView{Limits: limits, MaxIdle: 5, CanCreate: true, ENIs: []eniView{
				shared("eni-01", 1, 3, 7), shared("eni-02", 2, 0, 10)}},
			want: "eni-01-2; eni-02-10 delete",
		},
		{
			name: "exhausted vswitch of the ENI with room and no other vswitch: short for vswitches",
			view: poolView{Limits: limits, Pending: 1, CanCreate: false, Blocked: map[string]bool{"vsw-a": true},
				ENIs: []eniView{shared("eni-01", 1, 5, 0)}},
			want: "eni-01; short 1 (2)",
		},
		{
			name: "exhausted vswitch of the ENI with room, another vswitch left: a new ENI",
			view: poolView{Limits: limits, Pending: 1, CanCreate: true, Blocked: map[string]bool{"vsw-a": true},
				ENIs: []eniView{shared("eni-01", 1, 5, 0)}},
			want: "eni-01; new-1+1",
		},
		{
			name: "an ENI of someone else takes a slot",
			view: poolView{Limits: limits, Foreign: 1, Pending: 30, CanCreate: true},
			want: "new-1+10; new-2+10; short 10 (1)",
		},
		{
			name: "exclusive ENIs: owned kept, unowned deleted, a waiting caller gets one",
			view: poolView{Limits: limits, CanCreate: true, PendingExclusive: []string{"ns/b"}, ENIs: []eniView{
				{ID: "eni-x1", Exclusive: true, Owner: "ns/a", Primary: "198.18.9.1", Held: []string{"198.18.9.1"}, Ready: true},
				{ID: "eni-x2", Exclusive: true, Primary: "198.18.9.2", Idle: []string{"198.18.9.2"}, Ready: true},
			}},
			want: "eni-x1(x ns/a); eni-x2(x)-1 delete; exclusive-ns/b(x ns/b)+1",
		},
		{
			name: "an exclusive ENI reserved for a waiting caller stays",
			view: poolView{Limits: limits, CanCreate: true, PendingExclusive: []string{"ns/b"}, ENIs: []eniView{
				{ID: "eni-x2", Exclusive: true, ReservedFor: "ns/b", Primary: "198.18.9.2", Idle: []string{"198.18.9.2"}, Ready: true},
			}},
			want: "eni-x2(x ns/b)",
		},
		{
			name: "no slot for an exclusive ENI",
			view: poolView{Limits: Limits{MaxENIs: 2, IPsPerENI: 10}, CanCreate: true, PendingExclusive: []string{"ns/b"},
				ENIs: []eniView{shared("eni-01", 1, 1, 0)}},
			want: "eni-01; exclusive short ns/b",
		},
		{
			name: "one ENI kept for multi-IP pods: thirty callers get one ENI, the rest is short",
			view: poolView{Limits: limits, Pending: 30, CanCreate: true, ReservedShared: ptr(1)},
			want: "new-1+10; short 20 (1)",
		},
		{
			name: "the reserved shared ENI is full: no new shared ENI in the exclusive slots",
			view: poolView{Limits: limits, Pending: 1, CanCreate: true, ReservedShared: ptr(1), ENIs: []eniView{
				shared("eni-01", 1, 10, 0)}},
			want: "eni-01; short 1 (1)",
		},
		{
			name: "exclusive callers take only the unreserved slots: 4 ENIs, 1 reserved, 2 exclusive",
			view: poolView{Limits: limits, CanCreate: true, ReservedShared: ptr(1), PendingExclusive: []string{"ns/a", "ns/b", "ns/c"}},
			want: "exclusive-ns/a(x ns/a)+1; exclusive-ns/b(x ns/b)+1; exclusive short ns/c",
		},
		{
			name: "an empty reserved slot is not given to an exclusive caller",
			view: poolView{Limits: limits, CanCreate: true, ReservedShared: ptr(1), PendingExclusive: []string{"ns/c"}, ENIs: []eniView{
				{ID: "eni-x1", Exclusive: true, Owner: "ns/a", Primary: "198.18.9.1", Held: []string{"198.18.9.1"}, Ready: true},
				{ID: "eni-x2", Exclusive: true, Owner: "ns/b", Primary: "198.18.9.2", Held: []string{"198.18.9.2"}, Ready: true},
			}},
			want: "eni-x1(x ns/a); eni-x2(x ns/b); exclusive short ns/c",
		},
		{
			name: "VPC mode (nothing reserved): every secondary slot for exclusive ENIs, none shared",
			view: poolView{Limits: limits, CanCreate: true, ReservedShared: ptr(0), Pending: 1, PendingExclusive: []string{"ns/a", "ns/b", "ns/c"}},
			want: "exclusive-ns/a(x ns/a)+1; exclusive-ns/b(x ns/b)+1; exclusive-ns/c(x ns/c)+1; short 1 (1)",
		},
		{
			name: "a foreign ENI is charged to the exclusive side, as the device plugin counts it",
			view: poolView{Limits: limits, Foreign: 1, CanCreate: true, ReservedShared: ptr(1), Pending: 10, PendingExclusive: []string{"ns/a", "ns/b"}},
			want: "exclusive-ns/a(x ns/a)+1; new-1+10; exclusive short ns/b",
		},
		{
			name: "an ENI being deleted is asked to go again",
			view: poolView{Limits: limits, CanCreate: true, ENIs: []eniView{{ID: "eni-09", Deleting: true}}},
			want: "eni-09 delete",
		},
		{
			name: "an ENI not ready yet gets no IPs and its idle ones do not count",
			view: poolView{Limits: limits, MinIdle: 1, MaxIdle: 1, CanCreate: true, ENIs: []eniView{
				func() eniView { e := shared("eni-01", 1, 0, 2); e.Ready = false; return e }()}},
			want: "eni-01; new-1+1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summary(planPool(tt.view))
			if got != tt.want {
				t.Errorf("plan:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// TestPlanNeverReleasesHeld checks, over many pools, that no held IP and
// no primary IP of an ENI that serves pods is ever released, and that an
// ENI is deleted only when it holds nothing.
func TestPlanNeverReleasesHeld(t *testing.T) {
	limits := Limits{MaxENIs: 4, IPsPerENI: 10}
	for held1 := 0; held1 <= 10; held1 += 3 {
		for held2 := 0; held2 <= 10; held2 += 2 {
			for maxIdle := 0; maxIdle <= 12; maxIdle += 4 {
				v := poolView{Limits: limits, MaxIdle: maxIdle, CanCreate: true, ENIs: []eniView{
					shared("eni-01", 1, held1, 10-held1), shared("eni-02", 2, held2, 10-held2)}}
				p := planPool(v)
				for i, w := range p.Needs.ENIs {
					e := v.ENIs[i]
					for _, ip := range w.Release {
						if slices.Contains(e.Held, ip) {
							t.Fatalf("held=%d,%d max=%d: %s releases held %s", held1, held2, maxIdle, w.Name, ip)
						}
						if ip == e.Primary && !w.Delete {
							t.Fatalf("held=%d,%d max=%d: %s releases its primary %s but stays", held1, held2, maxIdle, w.Name, ip)
						}
					}
					if w.Delete && len(e.Held) > 0 {
						t.Fatalf("held=%d,%d max=%d: %s deleted while holding %d", held1, held2, maxIdle, w.Name, len(e.Held))
					}
				}
				idle := 20 - held1 - held2
				released := 0
				for _, w := range p.Needs.ENIs {
					released += len(w.Release)
				}
				if idle > maxIdle && idle-released < maxIdle {
					t.Fatalf("held=%d,%d max=%d: released %d of %d idle, below the maximum", held1, held2, maxIdle, released, idle)
				}
			}
		}
	}
}

func TestPlanNeedsShape(t *testing.T) {
	v := poolView{Limits: Limits{MaxENIs: 4, IPsPerENI: 10}, MinIdle: 2, MaxIdle: 6, Pending: 1, CanCreate: true,
		ENIs: []eniView{shared("eni-01", 1, 9, 0)}}
	n := planPool(v).Needs
	if n.MaxENIs != 4 || n.IPsPerENI != 10 || n.MinIdle != 2 || n.MaxIdle != 6 || n.IPsInUse != 9 {
		t.Fatalf("header: %+v", n)
	}
	// target idle = refill(2,6)=4 + 1 pending = 5: one on eni-01, four on a new ENI.
	if n.IPsWanted != 9+5 {
		t.Fatalf("ipsWanted = %d, want 14", n.IPsWanted)
	}
	want := []spec.ENIWant{
		{ID: "eni-01", Name: "eni-01", MAC: "00:16:3e:00:00:01", InUse: ips(1, 10, 9), Add: 1},
		{Name: "new-1", Add: 4},
	}
	if fmt.Sprint(n.ENIs) != fmt.Sprint(want) {
		t.Fatalf("enis:\n got %+v\nwant %+v", n.ENIs, want)
	}
}

func TestRefillTarget(t *testing.T) {
	for _, c := range []struct{ min, max, want int }{{0, 0, 0}, {0, 10, 5}, {2, 8, 5}, {5, 5, 5}, {3, 4, 4}} {
		if got := refillTarget(c.min, c.max); got != c.want {
			t.Errorf("refillTarget(%d, %d) = %d, want %d", c.min, c.max, got, c.want)
		}
	}
}

// SplitSlots is the one formula of the device plugin's count and the
// pool's bounds: exclusive slots are the quota less the primary, foreign
// ENIs and the reservation; shared ones the reservation, clamped.
func TestSplitSlots(t *testing.T) {
	for _, c := range []struct {
		max, foreign int
		reserved     *int
		want         Slots
	}{
		{4, 0, nil, Slots{Shared: 3, Exclusive: 3}},
		{4, 1, nil, Slots{Shared: 2, Exclusive: 2}},
		{4, 0, ptr(0), Slots{Shared: 0, Exclusive: 3, Split: true}},
		{4, 0, ptr(1), Slots{Shared: 1, Exclusive: 2, Split: true, Reserved: 1}},
		{4, 1, ptr(1), Slots{Shared: 1, Exclusive: 1, Split: true, Reserved: 1}},
		{4, 3, ptr(1), Slots{Shared: 0, Exclusive: 0, Split: true, Reserved: 1}},
		{4, 0, ptr(9), Slots{Shared: 3, Exclusive: 0, Split: true, Reserved: 3}},
		{1, 0, ptr(1), Slots{Split: true}},
	} {
		if got := SplitSlots(c.max, c.foreign, c.reserved); got != c.want {
			t.Errorf("SplitSlots(%d, %d, %v) = %+v, want %+v", c.max, c.foreign, c.reserved, got, c.want)
		}
	}
}
