package spec

// A document's kernel items: the links, addresses, routes, rules,
// neighbours, sysctls and qdiscs the kinds observe, and the pods' own
// tables. Each belongs to a pod (its Pod field) or to the node (Pod "").
// A plan scoped to some pods keeps the node's items and theirs
// (apply/engine), and a CNI request's render hands it no others
// (render.Cache.RenderScoped).

// ItemsOf returns s's kernel items whose pod keep accepts, in s's order,
// in a document of those sections alone.
func (s *NodeState) ItemsOf(keep func(pod string) bool) *NodeState {
	return &NodeState{
		Links:       itemsOf(s.Links, func(x Link) string { return x.Pod }, keep),
		Addresses:   itemsOf(s.Addresses, func(x Address) string { return x.Pod }, keep),
		Routes:      itemsOf(s.Routes, func(x Route) string { return x.Pod }, keep),
		Rules:       itemsOf(s.Rules, func(x Rule) string { return x.Pod }, keep),
		Neighbors:   itemsOf(s.Neighbors, func(x Neighbor) string { return x.Pod }, keep),
		Sysctls:     itemsOf(s.Sysctls, func(x Sysctl) string { return x.Pod }, keep),
		TC:          itemsOf(s.TC, func(x Qdisc) string { return x.Pod }, keep),
		PodNFTables: itemsOf(s.PodNFTables, func(x PodNFTable) string { return x.Pod }, keep),
	}
}

// SetItems sets s's kernel item sections to from's (their lists, not
// copies).
func (s *NodeState) SetItems(from *NodeState) {
	s.Links, s.Addresses, s.Routes, s.Rules = from.Links, from.Addresses, from.Routes, from.Rules
	s.Neighbors, s.Sysctls, s.TC, s.PodNFTables = from.Neighbors, from.Sysctls, from.TC, from.PodNFTables
}

func itemsOf[T any](items []T, pod func(T) string, keep func(pod string) bool) []T {
	var out []T
	for _, it := range items {
		if keep(pod(it)) {
			out = append(out, it)
		}
	}
	return out
}
