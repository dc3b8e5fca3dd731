package spec

import (
	"slices"
	"strings"
)

// NFTable is our nftables table (family inet, name terway) as typed data.
// It prints as `nft -f` text (PrintNFT) and compiles to netlink expressions in
// apply. Rules are built from a small vocabulary of selectors and verdicts,
// never from free-form strings, so both outputs mean the same thing.
type NFTable struct {
	Family string `json:"family"`
	Name   string `json:"name"`
	// Sets are shared between documents: render hands a set that did not
	// change on to the next document as the same object, so a CNI ADD's
	// document copies a pointer per set rather than every set, and the
	// nftables planner knows a set it planned before by its identity. A
	// set is not modified once its document is handed on: a change is a
	// new set.
	Sets   []*NFTSet  `json:"sets,omitempty"`
	Chains []NFTChain `json:"chains,omitempty"`
}

// Selectors a match or a verdict map may read. Each has a fixed nft data type.
const (
	SelIPSaddr   = "ip saddr"
	SelIPDaddr   = "ip daddr"
	SelL4Proto   = "meta l4proto"
	SelTHDport   = "th dport"
	SelCtState   = "ct state"
	SelIIFName   = "meta iifname"
	SelOIFName   = "meta oifname"
	TypeIPv4Addr = "ipv4_addr"
	TypeProto    = "inet_proto"
	TypeService  = "inet_service"
	TypeIfName   = "ifname"
	TypeCtState  = "ct_state"
)

// SelectorType maps each selector to its nft data type.
var SelectorType = map[string]string{
	SelIPSaddr: TypeIPv4Addr,
	SelIPDaddr: TypeIPv4Addr,
	SelL4Proto: TypeProto,
	SelTHDport: TypeService,
	SelCtState: TypeCtState,
	SelIIFName: TypeIfName,
	SelOIFName: TypeIfName,
}

// NFTSet is a named set, or a verdict map when Verdict is true. A set with
// several Type entries is a concatenation: its elements have one key part per
// type, in order.
type NFTSet struct {
	Name string   `json:"name"`
	Type []string `json:"type"`
	// Interval allows CIDRs and ranges (a-b) as key parts. Elements of an
	// interval set never overlap; render merges them.
	Interval bool         `json:"interval,omitempty"`
	Verdict  bool         `json:"verdictMap,omitempty"`
	Comment  string       `json:"comment,omitempty"`
	Elements []NFTElement `json:"elements,omitempty"`
	Pod      string       `json:"pod,omitempty"`
}

// NFTElement is one element of a set or map.
type NFTElement struct {
	Key     []string    `json:"key"`
	Verdict *NFTVerdict `json:"verdict,omitempty"`
}

// Base chain hooks.
const (
	HookForward = "forward"
	HookInput   = "input"
	HookOutput  = "output"
	// HookPrerouting sees every packet that enters the namespace, before
	// routing decides between input and forward.
	HookPrerouting = "prerouting"
)

// NFTChain is a chain; with Hook set it is a filter base chain at Priority.
type NFTChain struct {
	Name     string    `json:"name"`
	Hook     string    `json:"hook,omitempty"`
	Priority int       `json:"priority,omitempty"`
	Policy   string    `json:"policy,omitempty"`
	Comment  string    `json:"comment,omitempty"`
	Rules    []NFTRule `json:"rules,omitempty"`
	Pod      string    `json:"pod,omitempty"`
}

// NFTRule is a conjunction of matches and one verdict.
type NFTRule struct {
	Match []NFTMatch `json:"match,omitempty"`
	// Counter counts the packets and bytes that reach the verdict (an
	// anonymous "counter" statement); its values are the kernel's, read by
	// the agent for metrics, never part of the document or of a diff.
	Counter bool       `json:"counter,omitempty"`
	Verdict NFTVerdict `json:"verdict"`
	Comment string     `json:"comment,omitempty"`
}

// NFTMatch compares one selector, or a concatenation of selectors, with a
// named set (Set) or with literal values (Values: one value, or several
// meaning "any of"; for ct state, the state names). A single value of an
// interface-name selector may end in "*": a prefix match, as nft's
// iifname "tw*".
type NFTMatch struct {
	Selectors []string `json:"selectors"`
	Negate    bool     `json:"negate,omitempty"`
	Set       string   `json:"set,omitempty"`
	Values    []string `json:"values,omitempty"`
}

// Verdict kinds.
const (
	VerdictAccept = "accept"
	VerdictDrop   = "drop"
	VerdictReturn = "return"
	VerdictJump   = "jump"
	VerdictGoto   = "goto"
	// VerdictVmap looks the Selectors up in the verdict map Map and applies
	// the element's verdict; no element, no verdict (the rule falls through).
	VerdictVmap = "vmap"
)

// NFTVerdict ends a rule or is the data of a verdict-map element.
type NFTVerdict struct {
	Kind      string   `json:"kind"`
	Chain     string   `json:"chain,omitempty"`
	Map       string   `json:"map,omitempty"`
	Selectors []string `json:"selectors,omitempty"`
}

// Chain returns the chain with the given name, or nil.
func (t *NFTable) Chain(name string) *NFTChain {
	for i := range t.Chains {
		if t.Chains[i].Name == name {
			return &t.Chains[i]
		}
	}
	return nil
}

// SetIndex finds the set of a name in sets in canonical order (by name, as
// Canonicalize sorts them; render's documents are canonical) by binary
// search: -1 when none has it.
func SetIndex(sets []*NFTSet, name string) int {
	i, found := slices.BinarySearchFunc(sets, name, func(s *NFTSet, name string) int { return strings.Compare(s.Name, name) })
	if !found {
		return -1
	}
	return i
}

// Set returns the set or map with the given name, or nil.
func (t *NFTable) Set(name string) *NFTSet {
	for _, s := range t.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}
