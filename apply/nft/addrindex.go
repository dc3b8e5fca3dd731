package nft

import (
	"maps"
	"slices"
	"strings"

	"github.com/terway-reconciler/terway/spec"
)

// Address indexes: a scoped plan finds its pods' elements in a set by
// their addresses, in the desired sets (wantIndex) and in the record's
// (addrIndex), without walking every element.

// wantIndex gives a desired set's elements (their positions in its list)
// by each single address in their key's address fields: a scoped plan
// looks at its pods' elements only, not at the tens of thousands of a
// node's other group elements.
type wantIndex map[string][]int32

func newWantIndex(elems []spec.NFTElement, fields []int) wantIndex {
	idx := wantIndex{}
	for i := range elems {
		key := elems[i].Key
		for _, f := range fields {
			if f >= len(key) {
				continue
			}
			if a, ok := singleAddr(key[f]); ok {
				idx[a] = append(idx[a], int32(i))
			}
		}
	}
	return idx
}

// lookup returns the elements that have one of addrs as an address
// field, each once, in the list's order.
func (x wantIndex) lookup(elems []spec.NFTElement, addrs []string) []spec.NFTElement {
	var at []int32
	for _, a := range addrs {
		at = append(at, x[a]...)
	}
	slices.Sort(at)
	at = slices.Compact(at)
	out := make([]spec.NFTElement, len(at))
	for i, j := range at {
		out[i] = elems[j]
	}
	return out
}

// typeIPv6Addr is nft's IPv6 address type.
const typeIPv6Addr = "ipv6_addr"

// indexMinElems is the size from which a record set's elements are found
// by address through an index (derived from the last one on every commit)
// rather than by a scan: a node with many policies has hundreds of sets of
// tens of elements, and a scan of them all was most of a CNI ADD's plan.
const indexMinElems = 16

// wantIndexMinElems is the size from which a desired set's elements are
// found by address through an index rather than by a scan. A desired
// list that changed is indexed anew, at a cost above a scan's: only long
// lists gain.
const wantIndexMinElems = 256

// addrIndex gives a set's elements by each single address in their key's
// address fields (not prefixes or ranges: those are not a pod's). A
// derived index (derive) shares its parent's map and holds only the
// entries its changes touched, so that deriving costs what changed; it
// takes a map of its own once those entries are many (flattenAt).
type addrIndex struct {
	base map[string][]*elem
	// over are the entries that differ from base, an empty one for an
	// address no element has any more.
	over map[string][]*elem
}

// get returns the elements under the address a.
func (x addrIndex) get(a string) []*elem {
	if es, ok := x.over[a]; ok {
		return es
	}
	return x.base[a]
}

func newAddrIndex(s *set) addrIndex {
	fields := addrFields(s)
	base := make(map[string][]*elem, s.elems.len())
	for _, e := range s.elems.all() {
		eachAddr(e.text, fields, func(a string) { base[a] = append(base[a], e) })
	}
	return addrIndex{base: base}
}

// derive returns the index of s, a set derived from the one x indexes by
// s.added and s.removed, without reading s's other elements: the CNI path
// changes a few elements of large sets on every ADD and DEL. x is left as
// it is (it may still be read): derive copies only its own entries, and
// those of the addresses s's change touches.
func (x addrIndex) derive(s *set) addrIndex {
	fields := addrFields(s)
	over := make(map[string][]*elem, len(x.over)+len(s.added)+len(s.removed))
	maps.Copy(over, x.over)
	copied := map[string]bool{}
	own := func(a string) {
		if !copied[a] {
			copied[a] = true
			over[a] = slices.Clone(x.get(a))
		}
	}
	for _, he := range s.removed {
		eachAddr(he.text, fields, func(a string) {
			own(a)
			over[a] = slices.DeleteFunc(over[a], func(e *elem) bool { return e == he })
		})
	}
	for _, e := range s.added {
		eachAddr(e.text, fields, func(a string) {
			own(a)
			over[a] = append(over[a], e)
		})
	}
	if len(over) < flattenAt(len(x.base)) {
		return addrIndex{base: x.base, over: over}
	}
	base := maps.Clone(x.base)
	for a, es := range over {
		if len(es) == 0 {
			delete(base, a)
		} else {
			base[a] = es
		}
	}
	return addrIndex{base: base}
}

// flattenAt is how many changed entries a derived index (or element map,
// elemMap) of a base of n entries holds before it takes a map of its own:
// a derive copies them, and copying the base costs about as much as
// copying that many four times.
func flattenAt(n int) int { return max(16, n/4) }

// addrFields are the positions of a set's key fields that name a pod:
// those that hold addresses, and interface names (a pod's host veth keys
// its dispatch entries). Scope.Addrs has both; an address never reads as
// an interface name, nor the other way round.
func addrFields(s *set) []int { return addrFieldsOf(s.typeNames) }

// addrFieldsOf are the positions of the address and interface name fields
// of a key of types.
func addrFieldsOf(types []string) []int {
	var fields []int
	for i, tn := range types {
		if tn == spec.TypeIPv4Addr || tn == typeIPv6Addr || tn == spec.TypeIfName {
			fields = append(fields, i)
		}
	}
	return fields
}

// eachAddr calls f with each single address (not a prefix or a range:
// those are not a pod's) among the address fields of a canonical key text,
// without splitting it into a slice: indexes read every element of large
// sets.
func eachAddr(text string, fields []int, f func(string)) {
	eachField(text, fields, func(field string) {
		if a, ok := singleAddr(field); ok {
			f(a)
		}
	})
}

// singleAddr is an address field as a pod's address is written, when it
// is one address (not a prefix or a range: those are not a pod's).
func singleAddr(field string) (string, bool) {
	a := hostAddr(field)
	return a, !strings.ContainsAny(a, "/-")
}

// eachField calls f with each field of a canonical key text whose position
// is in fields, without splitting the text into a slice.
func eachField(text string, fields []int, f func(string)) {
	for i := 0; text != ""; i++ {
		field, rest, _ := strings.Cut(text, " . ")
		if slices.Contains(fields, i) {
			f(field)
		}
		text = rest
	}
}

// isAddr reports whether field f is address a (hostAddr(f) == a without
// allocating: the document's element lists are long).
func isAddr(f, a string) bool {
	if len(f) < len(a) || f[:len(a)] != a {
		return false
	}
	return len(f) == len(a) || f[len(a):] == "/32" || f[len(a):] == "/128"
}

// hostAddr is an address field without a host prefix length ("/32",
// "/128"), as a pod's address is written.
func hostAddr(f string) string {
	if a, ok := strings.CutSuffix(f, "/32"); ok {
		return a
	}
	if a, ok := strings.CutSuffix(f, "/128"); ok {
		return a
	}
	return f
}
