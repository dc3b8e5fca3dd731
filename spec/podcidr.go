package spec

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Pod CIDR bounds for VPC mode. A node's podCIDR shorter than /16 (more than
// 65,534 pod addresses) is far beyond what one node runs (kubelet's maxPods
// is in the hundreds) and is almost always the cluster CIDR pasted as a
// node's, or a /0 that would make every address in the VPC a "pod" of this
// node. Longer prefixes, up to a /32 with its single address, are small but
// usable.
const (
	MinPodCIDRBits = 16
	MaxPodCIDRBits = 32
)

// FieldError is one invalid field of an input object: the field's path
// (e.g. "spec.podCIDRs[1]") and why it is invalid. Callers add the object.
type FieldError struct {
	Field  string
	Reason string
	// Usable says the value still serves as it is meant (a pod CIDR with
	// host bits set names its network): the caller reports it and goes on
	// with the value returned beside the error.
	Usable bool
}

// Error formats the error as "field: reason".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// NodePodCIDR returns the IPv4 CIDR VPC mode allocates pod addresses from,
// given a Node's spec.podCIDR and spec.podCIDRs (as Kubernetes keeps them:
// podCIDRs[0] equals podCIDR, at most one CIDR per address family). Render
// and the agent's CNI ADD both call it, so a Node's problem and a refused ADD
// say the same thing. The error is a *FieldError naming the field and the
// value: a malformed CIDR, an IPv6-only node (pod addresses are IPv4 only),
// host bits set, or a prefix outside /16–/32.
//
// Host bits alone (10.0.0.5/24, which the API server accepts) are reported
// with Usable set and the masked network returned: a node that ran its pods
// from that network before keeps them.
func NodePodCIDR(podCIDR string, podCIDRs []string) (netip.Prefix, error) {
	if len(podCIDRs) == 0 {
		if podCIDR == "" {
			return netip.Prefix{}, &FieldError{Field: "spec.podCIDR", Reason: "not set: VPC mode allocates pod addresses from it"}
		}
		p, err := parsePodCIDR(podCIDR)
		if err != nil {
			return netip.Prefix{}, &FieldError{Field: "spec.podCIDR", Reason: err.Error()}
		}
		if !p.Addr().Is4() {
			return netip.Prefix{}, &FieldError{Field: "spec.podCIDR", Reason: fmt.Sprintf("%q is IPv6: VPC mode gives pods IPv4 addresses only", podCIDR)}
		}
		return checkPodCIDR("spec.podCIDR", podCIDR, p)
	}
	if podCIDR != "" && podCIDR != podCIDRs[0] {
		return netip.Prefix{}, &FieldError{Field: "spec.podCIDR", Reason: fmt.Sprintf("%q differs from spec.podCIDRs[0] %q; Kubernetes keeps them equal", podCIDR, podCIDRs[0])}
	}
	if len(podCIDRs) > 2 {
		return netip.Prefix{}, &FieldError{Field: "spec.podCIDRs", Reason: fmt.Sprintf("has %d CIDRs; a node has at most one per address family", len(podCIDRs))}
	}
	v4 := -1
	var prefixes [2]netip.Prefix
	for i, s := range podCIDRs {
		field := fmt.Sprintf("spec.podCIDRs[%d]", i)
		p, err := parsePodCIDR(s)
		if err != nil {
			return netip.Prefix{}, &FieldError{Field: field, Reason: err.Error()}
		}
		if i == 1 && p.Addr().Is4() == prefixes[0].Addr().Is4() {
			return netip.Prefix{}, &FieldError{Field: field, Reason: fmt.Sprintf("%q is of the same address family as spec.podCIDRs[0] %q; a node has at most one per family", s, podCIDRs[0])}
		}
		prefixes[i] = p
		if p.Addr().Is4() {
			v4 = i
		}
	}
	if v4 < 0 {
		return netip.Prefix{}, &FieldError{Field: "spec.podCIDRs", Reason: fmt.Sprintf("%q has no IPv4 CIDR: VPC mode gives pods IPv4 addresses only", podCIDRs)}
	}
	// An IPv6 CIDR next to the IPv4 one (a dual-stack cluster) is not an
	// error: pods get their IPv4 address and no IPv6 one.
	return checkPodCIDR(fmt.Sprintf("spec.podCIDRs[%d]", v4), podCIDRs[v4], prefixes[v4])
}

// parsePodCIDR parses one CIDR, saying which part is wrong. An IPv4-mapped
// IPv6 prefix (::ffff:10.0.0.0/120) stays IPv6: it is not an IPv4 CIDR.
func parsePodCIDR(s string) (netip.Prefix, error) {
	addrPart, bitsPart, ok := strings.Cut(s, "/")
	if !ok {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: no /prefix-length", s)
	}
	addr, err := netip.ParseAddr(addrPart)
	if err != nil {
		// netip's message repeats the input as ParseAddr("…"): keep the why.
		why := strings.TrimPrefix(err.Error(), "ParseAddr("+strconv.Quote(addrPart)+"): ")
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %q is not an IP address (%s)", s, addrPart, why)
	}
	if bits, err := strconv.Atoi(bitsPart); err != nil || bits < 0 || bits > addr.BitLen() {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: prefix length %q is not a number from 0 to %d", s, bitsPart, addr.BitLen())
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		// What the checks above do not cover: a zone, a leading zero or
		// sign in the length.
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %s", s, strings.TrimPrefix(err.Error(), "netip.ParsePrefix("+strconv.Quote(s)+"): "))
	}
	return p, nil
}

// checkPodCIDR returns the network to allocate from. It reports host bits
// and a prefix length out of bounds, both at once when both apply
// (10.0.0.5/0), so one edit fixes the field; host bits alone leave the
// masked network usable.
func checkPodCIDR(field, s string, p netip.Prefix) (netip.Prefix, error) {
	var reasons []string
	hostBits := p.Masked() != p
	if hostBits {
		reasons = append(reasons, fmt.Sprintf("%q has host bits set (its network is %s): a pod CIDR names a network", s, p.Masked()))
	}
	if p.Bits() < MinPodCIDRBits || p.Bits() > MaxPodCIDRBits {
		reasons = append(reasons, fmt.Sprintf("%q is a /%d: a node's pod CIDR must be /%d to /%d (a shorter one is more addresses than a node can use)", s, p.Bits(), MinPodCIDRBits, MaxPodCIDRBits))
		return netip.Prefix{}, &FieldError{Field: field, Reason: strings.Join(reasons, "; ")}
	}
	if hostBits {
		return p.Masked(), &FieldError{Field: field, Reason: reasons[0] + "; its network is used", Usable: true}
	}
	return p, nil
}
