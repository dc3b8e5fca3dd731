package spec

import (
	"cmp"
	"slices"
)

// The canonical order of each section: the keys Canonicalize sorts by,
// made once per item (sortDecorated), and Spliced's binary searches.

// netnsKey orders items of the host namespace first, then by namespace
// path, then by the rest of the item's key.
type netnsKey struct{ netns, rest string }

func compareNetnsKeys(a, b netnsKey) int {
	return cmp.Or(cmp.Compare(a.netns, b.netns), cmp.Compare(a.rest, b.rest))
}

func linkOrder(l Link) netnsKey       { return netnsKey{l.Netns, l.Name} }
func addressOrder(a Address) netnsKey { return netnsKey{a.Netns, a.Dev + "/" + a.CIDR} }
func sysctlOrder(c Sysctl) netnsKey   { return netnsKey{c.Netns, c.Path} }
func qdiscOrder(q Qdisc) netnsKey     { return netnsKey{q.Netns, q.Dev} }
func podOrder(p *Pod) string          { return p.Key }
func setOrder(s *NFTSet) string       { return s.Name }

type routeKey struct {
	netns string
	table int
	dst   valueKey
}

func routeOrder(r Route) routeKey { return routeKey{r.Netns, r.TableID(), parseValueKey(r.Dst)} }

func compareRouteKeys(a, b routeKey) int {
	return cmp.Or(cmp.Compare(a.netns, b.netns), cmp.Compare(a.table, b.table), compareValueKeys(a.dst, b.dst))
}

type ruleKey struct {
	netns    string
	priority int
	from, to valueKey
}

func ruleOrder(r Rule) ruleKey {
	return ruleKey{r.Netns, r.Priority, parseValueKey(r.From), parseValueKey(r.To)}
}

func compareRuleKeys(a, b ruleKey) int {
	return cmp.Or(cmp.Compare(a.netns, b.netns), cmp.Compare(a.priority, b.priority),
		compareValueKeys(a.from, b.from), compareValueKeys(a.to, b.to))
}

type neighborKey struct {
	netns, dev string
	ip         valueKey
}

func neighborOrder(n Neighbor) neighborKey { return neighborKey{n.Netns, n.Dev, parseValueKey(n.IP)} }

func compareNeighborKeys(a, b neighborKey) int {
	return cmp.Or(cmp.Compare(a.netns, b.netns), cmp.Compare(a.dev, b.dev), compareValueKeys(a.ip, b.ip))
}

// CompareProblems is the canonical order of problems.
func CompareProblems(a, b Problem) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name),
		cmp.Compare(a.Field, b.Field), cmp.Compare(a.Reason, b.Reason))
}

// chainKey orders base chains first, then every chain by name.
type chainKey struct {
	regular bool
	name    string
}

func chainOrder(c NFTChain) chainKey { return chainKey{c.Hook == "", c.Name} }

func compareChainKeys(a, b chainKey) int {
	if a.regular != b.regular {
		if a.regular {
			return 1
		}
		return -1
	}
	return cmp.Compare(a.name, b.name)
}

func identity[T any](v T) T { return v }

// Spliced returns the document s, whose sections are in canonical order
// (CanonicalizeOrder), without the items of remove and with those of add,
// each put at its place in that order: what CanonicalizeOrder gives for
// the same items, found by binary search rather than a sort of every
// section. It covers links, addresses, routes, rules, neighbours,
// sysctls, qdiscs, pods, problems, and the chains and whole sets of
// table inet terway (remove's and add's NFTables, matched by name; their
// other fields are ignored). s is not modified; the result shares every
// list it leaves unchanged with s.
//
// ok is false when an item of remove is missing or shares its key with
// another (a document may hold two, such as two pods' default routes in
// one network namespace: which one is meant is not known), or when an
// item of add has the key of one present (for problems: is present); the
// caller then renders the document whole, since the order
// CanonicalizeOrder gives among items of one key depends on the order
// they came in.
func (s *NodeState) Spliced(remove, add *NodeState) (out *NodeState, ok bool) {
	return s.spliced(remove, add, nil)
}

// CanSplice reports whether Spliced(remove, add) would succeed on the
// document that s.Spliced(pendingOut, pendingIn) gives, without making
// either: binary searches in s's sections for the items of remove and
// add, and a look at pendingOut's and pendingIn's few. A caller that keeps
// a splice pending, to make it later with others in one pass, checks with
// it that the splice it adds to them will not fail. pendingOut and
// pendingIn may be empty or nil (a check on s itself); their splice must
// succeed.
func (s *NodeState) CanSplice(pendingOut, pendingIn, remove, add *NodeState) bool {
	_, ok := s.spliced(remove, add, &[2]*NodeState{pendingOut, pendingIn})
	return ok
}

// spliced is Spliced, or with pending CanSplice (out then has s's sections).
func (s *NodeState) spliced(remove, add *NodeState, pending *[2]*NodeState) (out *NodeState, ok bool) {
	c := *s
	ok = true
	step := func(done bool) { ok = ok && done }
	var po, pi NodeState // the pending splice's items (check alone)
	check := pending != nil
	if check && pending[0] != nil {
		po = *pending[0]
	}
	if check && pending[1] != nil {
		pi = *pending[1]
	}
	step(spliceInto(&c.Links, po.Links, pi.Links, remove.Links, add.Links, linkOrder, compareNetnsKeys, check))
	step(spliceInto(&c.Addresses, po.Addresses, pi.Addresses, remove.Addresses, add.Addresses, addressOrder, compareNetnsKeys, check))
	step(spliceInto(&c.Routes, po.Routes, pi.Routes, remove.Routes, add.Routes, routeOrder, compareRouteKeys, check))
	step(spliceInto(&c.Rules, po.Rules, pi.Rules, remove.Rules, add.Rules, ruleOrder, compareRuleKeys, check))
	step(spliceInto(&c.Neighbors, po.Neighbors, pi.Neighbors, remove.Neighbors, add.Neighbors, neighborOrder, compareNeighborKeys, check))
	step(spliceInto(&c.Sysctls, po.Sysctls, pi.Sysctls, remove.Sysctls, add.Sysctls, sysctlOrder, compareNetnsKeys, check))
	step(spliceInto(&c.TC, po.TC, pi.TC, remove.TC, add.TC, qdiscOrder, compareNetnsKeys, check))
	step(spliceInto(&c.Pods, po.Pods, pi.Pods, remove.Pods, add.Pods, podOrder, cmp.Compare[string], check))
	step(spliceInto(&c.Problems, po.Problems, pi.Problems, remove.Problems, add.Problems, identity[Problem], CompareProblems, check))
	if remove.NFTables != nil || add.NFTables != nil || po.NFTables != nil || pi.NFTables != nil {
		tableOf := func(d *NodeState) (t NFTable) {
			if d.NFTables != nil {
				t = *d.NFTables
			}
			return t
		}
		rt, at, pot, pit := tableOf(remove), tableOf(add), tableOf(&po), tableOf(&pi)
		if c.NFTables == nil {
			return nil, false
		}
		t := *c.NFTables
		step(spliceInto(&t.Chains, pot.Chains, pit.Chains, rt.Chains, at.Chains, chainOrder, compareChainKeys, check))
		step(spliceInto(&t.Sets, pot.Sets, pit.Sets, rt.Sets, at.Sets, setOrder, cmp.Compare[string], check))
		c.NFTables = &t
	}
	if !ok {
		return nil, false
	}
	return &c, true
}

// spliceInto splices remove and add into *items, or with check reports
// whether that would succeed after pendingOut and pendingIn (canSplice).
func spliceInto[T, K any](items *[]T, pendingOut, pendingIn, remove, add []T, key func(T) K, compare func(a, b K) int, check bool) bool {
	if check {
		return canSplice(*items, pendingOut, pendingIn, remove, add, key, compare)
	}
	out, ok := splice(*items, remove, add, key, compare)
	*items = out
	return ok
}

// canSplice reports whether splice would succeed on items with
// pendingOut spliced out and pendingIn in: each item of remove is there
// once, and no item of add has the key of one there (less remove) or of
// an earlier item of add.
func canSplice[T, K any](items, pendingOut, pendingIn, remove, add []T, key func(T) K, compare func(a, b K) int) bool {
	among := func(list []T, k K) int {
		n := 0
		for _, it := range list {
			if compare(key(it), k) == 0 {
				n++
			}
		}
		return n
	}
	count := func(k K) int {
		i, found := slices.BinarySearchFunc(items, k, func(it T, k K) int { return compare(key(it), k) })
		n := 0
		for ; found && i < len(items) && compare(key(items[i]), k) == 0; i++ {
			n++
		}
		if len(pendingOut)+len(pendingIn) > 0 {
			n += among(pendingIn, k) - among(pendingOut, k)
		}
		return n
	}
	for i, it := range remove {
		k := key(it)
		if count(k) != 1 || among(remove[:i], k) > 0 {
			return false
		}
	}
	for i, it := range add {
		k := key(it)
		if count(k)-among(remove, k) != 0 || among(add[:i], k) > 0 {
			return false
		}
	}
	return true
}

// splice is Spliced for one section: items is not modified, and comes
// back as it is when nothing changes.
func splice[T, K any](items, remove, add []T, key func(T) K, compare func(a, b K) int) ([]T, bool) {
	if len(remove) == 0 && len(add) == 0 {
		return items, true
	}
	out := make([]T, len(items), len(items)+len(add))
	copy(out, items)
	find := func(k K) (int, bool) {
		return slices.BinarySearchFunc(out, k, func(it T, k K) int { return compare(key(it), k) })
	}
	for _, it := range remove {
		k := key(it)
		i, found := find(k)
		if !found || i+1 < len(out) && compare(key(out[i+1]), k) == 0 {
			return nil, false // missing, or which of two is meant is unknown
		}
		out = slices.Delete(out, i, i+1)
	}
	for _, it := range add {
		i, found := find(key(it))
		if found {
			return nil, false
		}
		out = slices.Insert(out, i, it)
	}
	if len(out) == 0 {
		return nil, true
	}
	return out, true
}

// SplicedElements returns elems, a set's elements in canonical order
// (SortElements), without the elements of remove (by key) and with those
// of add, each at its place: elems is not modified. ok is false when an
// element to remove is missing or one to add has a key present.
func SplicedElements(elems, remove, add []NFTElement) ([]NFTElement, bool) {
	return splice(elems, remove, add, func(e NFTElement) []string { return e.Key }, compareElementKeys)
}

func compareElementKeys(a, b []string) int {
	return CompareElements(NFTElement{Key: a}, NFTElement{Key: b})
}
