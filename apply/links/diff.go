package links

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/terway-reconciler/terway/apply/op"
	"github.com/terway-reconciler/terway/spec"
)

// Kind is the Op.Kind of every link operation.
const Kind = "link"

// Diff returns the operations that turn observed into desired, in three
// phases so that each finds the names it needs free: first the links in the
// way (broken or undesired veths are deleted, stray ENIs leave pod
// namespaces), then ENIs are adopted, then veth pairs are created or fixed.
// Within a phase, operations follow the document's order (host first, then
// each namespace by path, then by name).
func Diff(desired []spec.Link, observed []Observed) []op.Op {
	byKey := map[string]Observed{}
	byMAC := map[string]Observed{}
	for _, o := range observed {
		if o.Kind == spec.LinkENI {
			if _, dup := byMAC[o.MAC]; !dup {
				byMAC[o.MAC] = o
			}
			continue
		}
		byKey[o.Key()] = o
	}
	want := slices.Clone(desired)
	slices.SortStableFunc(want, func(a, b spec.Link) int {
		return cmp.Or(cmp.Compare(a.Netns, b.Netns), cmp.Compare(a.Name, b.Name))
	})

	var cleanup, enis, veths []op.Op
	usedKey := map[string]bool{}
	usedMAC := map[string]bool{}
	for _, d := range want {
		switch d.Kind {
		case spec.LinkVeth:
			if d.Peer == nil {
				veths = append(veths, invalidOp(d, "peer", "a veth needs a peer"))
				continue
			}
			o, ok := byKey[d.Key()]
			if ok && o.Kind == spec.LinkVeth && o.Peer != nil && o.Peer.Netns == d.Peer.Netns && o.Peer.Name == d.Peer.Name {
				usedKey[d.Key()] = true
				if ch := vethChanges(d, o); len(ch) > 0 {
					veths = append(veths, updateVethOp(d, ch))
				}
				continue
			}
			// Not there, or its pair is broken: whatever holds the names is
			// left unclaimed, so the cleanup phase removes it first.
			veths = append(veths, createVethOp(d))
		case spec.LinkENI:
			mac := NormalMAC(d.MAC)
			if mac == "" {
				enis = append(enis, invalidOp(d, "mac", fmt.Sprintf("%q is not a MAC address", d.MAC)))
				continue
			}
			o, ok := byMAC[mac]
			if !ok {
				enis = append(enis, missingENIOp(d))
				continue
			}
			usedMAC[mac] = true
			if steps := planENI(d, o, true); len(steps) > 0 {
				enis = append(enis, adoptENIOp(d, o, steps))
			}
		default:
			veths = append(veths, invalidOp(d, "kind", fmt.Sprintf("%q is not %q or %q", d.Kind, spec.LinkVeth, spec.LinkENI)))
		}
	}
	for _, o := range observed {
		switch {
		case o.Kind == spec.LinkENI:
			// An ENI no item wants stays where it is in the host; in a pod
			// namespace it goes back to the host (ENIs are the cloud's).
			if !usedMAC[o.MAC] && o.Netns != spec.HostNetns {
				cleanup = append(cleanup, evictOp(o))
			}
			usedMAC[o.MAC] = true
		case usedKey[o.Key()]:
		case o.Kind == spec.LinkVeth:
			cleanup = append(cleanup, deleteVethOp(o))
		default:
			// A link the document names in a pod namespace that is not a
			// veth: most likely an ENI no longer wanted there. Never delete
			// it; send it back to the host out of the way.
			cleanup = append(cleanup, evictOp(o))
		}
	}
	return slices.Concat(cleanup, enis, veths)
}

// describeVeth is how a plan prints a veth item.
func describeVeth(l spec.Link) string {
	var b strings.Builder
	b.WriteString("link veth " + l.Name)
	if l.MAC != "" {
		b.WriteString(" mac " + NormalMAC(l.MAC))
	}
	if l.MTU != 0 {
		b.WriteString(" mtu " + strconv.Itoa(l.MTU))
	}
	b.WriteString(NetnsSuffix(l.Netns))
	if l.Peer != nil {
		b.WriteString(" peer " + l.Peer.Name)
		if l.Peer.MAC != "" {
			b.WriteString(" mac " + NormalMAC(l.Peer.MAC))
		}
		b.WriteString(NetnsSuffix(l.Peer.Netns))
	}
	return b.String()
}

// describeENI is how a plan prints an eni item.
func describeENI(l spec.Link) string {
	s := "link eni " + l.Name + " mac " + NormalMAC(l.MAC)
	if l.MTU != 0 {
		s += " mtu " + strconv.Itoa(l.MTU)
	}
	return s + NetnsSuffix(l.Netns)
}

// change is one in-place fix to one end of a veth pair.
type change struct {
	peer bool // the peer end, else the item's own end
	what string
	mac  string
	mtu  int
	up   bool
}

func (c change) String() string {
	if c.peer {
		return "peer " + c.what
	}
	return c.what
}

// vethChanges lists the in-place fixes that make the observed pair o match
// d: MAC, MTU and up, on each end.
func vethChanges(d spec.Link, o Observed) []change {
	var out []change
	end := func(peer bool, wantMAC, haveMAC string, haveMTU int, haveUp bool) {
		if m := NormalMAC(wantMAC); m != "" && m != haveMAC {
			out = append(out, change{peer: peer, what: "mac " + haveMAC + " → " + m, mac: m})
		}
		if d.MTU != 0 && d.MTU != haveMTU {
			out = append(out, change{peer: peer, what: fmt.Sprintf("mtu %d → %d", haveMTU, d.MTU), mtu: d.MTU})
		}
		if !haveUp {
			out = append(out, change{peer: peer, what: "set up", up: true})
		}
	}
	end(false, d.MAC, o.MAC, o.MTU, o.Up)
	if d.Peer != nil && o.Peer != nil {
		end(true, d.Peer.MAC, o.Peer.MAC, o.PeerMTU, o.PeerUp)
	}
	return out
}

func joinChanges(ch []change) string {
	parts := make([]string, len(ch))
	for i, c := range ch {
		parts[i] = c.String()
	}
	return strings.Join(parts, ", ")
}

func createVethOp(d spec.Link) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Create, Key: d.Key(), Netns: d.Netns, Pod: d.Pod,
		Text:   describeVeth(d),
		Writes: 4, // the pair (both ends down), the host end's IPv6 mode, the host end up, the peer up
		Exec:   func(_ context.Context, ns op.Namespaces) error { return createVeth(ns, d) },
	}
}

// vethWrites counts updateVeth's requests for ch: one a change, and one
// more for the host end's IPv6 mode before it comes up.
func vethWrites(ch []change) int {
	n := len(ch)
	for _, c := range ch {
		if c.up && !c.peer {
			n++
		}
	}
	return n
}

func updateVethOp(d spec.Link, ch []change) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Update, Key: d.Key(), Netns: d.Netns, Pod: d.Pod,
		Text:   describeVeth(d) + ": " + joinChanges(ch),
		Writes: vethWrites(ch),
		Exec:   func(_ context.Context, ns op.Namespaces) error { return updateVeth(ns, d) },
	}
}

func deleteVethOp(o Observed) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Delete, Key: o.Key(), Netns: o.Netns,
		Text:   describeVeth(o.Link),
		Writes: 1,
		Exec:   func(_ context.Context, ns op.Namespaces) error { return deleteVeth(ns, o.Link) },
		// Pods' DELs that arrive together delete their veths together.
		Concurrent: true,
	}
}

func adoptENIOp(d spec.Link, o Observed, steps []eniStep) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Update, Key: d.Key(), Netns: d.Netns, Pod: d.Pod,
		Text:   describeENI(d) + ": " + describeSteps(steps, d, o),
		Writes: len(steps),
		Exec: func(_ context.Context, ns op.Namespaces) error {
			return adoptENI(ns, d, []string{o.Netns, spec.HostNetns, d.Netns}, true)
		},
	}
}

func missingENIOp(d spec.Link) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Create, Key: d.Key(), Netns: d.Netns, Pod: d.Pod,
		Text: describeENI(d) + ": not attached (no interface has this MAC)",
		Exec: func(context.Context, op.Namespaces) error {
			return fmt.Errorf("link %s: mac %s: %w", d.Key(), d.MAC, ErrENINotAttached)
		},
	}
}

// evictOp sends a link out of a pod namespace to the host, down, under a
// name derived from its MAC so that it never collides with the node's own.
func evictOp(o Observed) op.Op {
	target := spec.Link{Name: parkName(o.MAC, o.Name), Kind: spec.LinkENI, MAC: o.MAC}
	steps := planENI(target, o, false)
	return op.Op{
		Kind: Kind, Action: op.Update, Key: o.Key(), Netns: o.Netns,
		Text:   "link " + o.Kind + " " + o.Name + " mac " + o.MAC + NetnsSuffix(o.Netns) + ": not wanted here, " + describeSteps(steps, target, o),
		Writes: len(steps),
		Exec: func(_ context.Context, ns op.Namespaces) error {
			if o.MAC == "" {
				return fmt.Errorf("link %s: has no MAC to follow it by; move it out of the pod namespace by hand", o.Key())
			}
			return adoptENI(ns, target, []string{o.Netns, spec.HostNetns}, false)
		},
	}
}

func invalidOp(d spec.Link, field, reason string) op.Op {
	return op.Op{
		Kind: Kind, Action: op.Create, Key: d.Key(), Netns: d.Netns, Pod: d.Pod,
		Text: "link " + d.Kind + " " + d.Name + NetnsSuffix(d.Netns) + ": invalid " + field,
		Exec: func(context.Context, op.Namespaces) error {
			return fmt.Errorf("link %s: %s: %s", d.Key(), field, reason)
		},
	}
}

// parkName is where an ENI waits in the host namespace when no item names
// it: "eni" and its MAC in hex, 15 characters, unique per ENI. Without a
// MAC, the link keeps its name.
func parkName(mac, name string) string {
	hex := strings.ReplaceAll(NormalMAC(mac), ":", "")
	if len(hex) != 12 {
		return name
	}
	return "eni" + hex
}

// eniStep is one write of adopting an ENI link.
type eniStep int

const (
	stepDown eniStep = iota
	stepPark
	stepMove
	stepRename
	stepMTU
	stepUp
)

// planENI returns the writes that turn the observed link o into d: a link
// is renamed only while down, and moved under its parking name so that it
// never collides with a name in the namespace it enters (moving brings it
// down). up says whether it must end up.
func planENI(d spec.Link, o Observed, up bool) []eniStep {
	moving, renaming := o.Netns != d.Netns, o.Name != d.Name
	park := parkName(o.MAC, o.Name)
	var steps []eniStep
	if (moving || renaming) && o.Up {
		steps = append(steps, stepDown)
	}
	switch {
	case moving:
		if o.Name != park {
			steps = append(steps, stepPark)
		}
		steps = append(steps, stepMove)
		if d.Name != park {
			steps = append(steps, stepRename)
		}
	case renaming:
		steps = append(steps, stepRename)
	}
	if d.MTU != 0 && d.MTU != o.MTU {
		steps = append(steps, stepMTU)
	}
	if up && (moving || renaming || !o.Up) {
		steps = append(steps, stepUp)
	}
	return steps
}

func describeSteps(steps []eniStep, d spec.Link, o Observed) string {
	park := parkName(o.MAC, o.Name)
	name := o.Name
	parts := make([]string, 0, len(steps))
	for _, s := range steps {
		switch s {
		case stepDown:
			parts = append(parts, "set down")
		case stepPark:
			parts = append(parts, "rename "+name+" → "+park)
			name = park
		case stepMove:
			parts = append(parts, "move "+NetnsName(o.Netns)+" → "+NetnsName(d.Netns))
		case stepRename:
			parts = append(parts, "rename "+name+" → "+d.Name)
		case stepMTU:
			parts = append(parts, fmt.Sprintf("mtu %d → %d", o.MTU, d.MTU))
		case stepUp:
			parts = append(parts, "set up")
		}
	}
	return strings.Join(parts, ", ")
}
