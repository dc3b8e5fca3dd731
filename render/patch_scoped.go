package render

import (
	"slices"

	"github.com/terway-reconciler/terway/spec"
)

// Scoped renders: a CNI request's document (Cache.RenderScoped).
//
// A patch copies every section it changes (spec.NodeState.Spliced): at
// 250 pods and 1,000 policies a pod's ADD copied about 400 KiB, 170 KiB of
// it the kernel item sections (links to qdiscs), where the pod changes a
// handful of items among hundreds. The plan of a CNI request reads none
// of those other items: it is scoped to its pods (engine.PlanOptions.Pods)
// and keeps, of the kernel item sections, the node's own items (of no pod)
// and its pods' alone. So a scoped render hands it a document whose kernel
// item sections hold just those, made from the node's own items (kept with
// the base) and the pods' parts, and leaves the base's kernel item
// sections as they were: the base lags behind by the pods it patched
// (lag), whose items it splices in one pass when a whole document is
// asked for or when maxLag pods lag (settle). A run of ADDs copies those
// sections once per maxLag pods rather than once per pod.
//
// The document's other sections, the pod entries, problems, nftables
// table and eni needs, stay whole: the plan finds the node's other pods
// there (their addresses, their namespaces) and plans the table against
// its record. Whether the lagging splice will succeed is checked as each
// patch is made (spec.NodeState.CanSplice), so a patch refused for a
// clash of keys still renders whole, as it did.
//
// A patch changes the items of its pods alone, never the node's own
// (anything else renders whole: see patch.go), so the node's items kept
// with the base hold for every patch of it.
// TestCacheScopedMatchesRender compares each scoped render with a render
// from scratch reduced to the scope, and each whole one with that render.

// maxLag bounds the pods whose kernel items a base's document lags behind
// by: each patch checks its splice against their items. A variable for
// tests to lower.
var maxLag = 16

// pending returns the splice the base's kernel item sections lag behind
// by: the lagging pods' items there, and their items now.
func (b *patchBase) pending() (out, in *spec.NodeState) {
	var was, now spec.NodeState
	for key, part := range b.lag {
		putPart(&was, part)
		if pp := b.pods[key]; pp != nil {
			putPart(&now, pp.part)
		}
	}
	return kernelItems(&was), kernelItems(&now)
}

// lagBehind records that the base's kernel item sections lack the items
// the pods of changes have now, and have those they had before (was,
// by pod: nil when none). A pod lagging already keeps its first record;
// one whose part is the same as before (a pod of another node, a pod's
// status or peer role) does not lag.
func (b *patchBase) lagBehind(was map[string]*spec.NodeState) {
	for key, part := range was {
		if _, lagging := b.lag[key]; lagging {
			continue
		}
		var now *spec.NodeState
		if pp := b.pods[key]; pp != nil {
			now = pp.part
		}
		if now == part {
			continue
		}
		if b.lag == nil {
			b.lag = make(map[string]*spec.NodeState, maxLag)
		}
		b.lag[key] = part
	}
}

// settle splices the lagging pods' items into the base's kernel item
// sections. It is false when that splice fails, which each patch's check
// rules out: the base is then of no use.
func (b *patchBase) settle() bool {
	if len(b.lag) == 0 {
		return true
	}
	out, in := b.pending()
	items, ok := kernelItems(b.doc).Spliced(out, in)
	b.lag = nil
	if !ok {
		return false
	}
	doc := *b.doc
	doc.SetItems(items)
	b.doc = &doc
	return true
}

// scoped returns doc, whose pod entries, problems and tables are the
// render's, with kernel item sections of the node's own items and those
// of pods (namespace/name) alone. doc's own kernel item sections may lag:
// only its node's items are read. ok is false when the pods' items clash
// (two of one key): the caller then settles and hands out the whole
// document.
func (b *patchBase) scoped(doc *spec.NodeState, pods []string) (*spec.NodeState, bool) {
	if b.nodeItems == nil {
		b.nodeItems = doc.ItemsOf(func(pod string) bool { return pod == "" })
	}
	var add spec.NodeState
	for i, key := range pods {
		if pp := b.pods[key]; pp != nil && !slices.Contains(pods[:i], key) {
			putPart(&add, pp.part)
		}
	}
	items, ok := b.nodeItems.Spliced(&spec.NodeState{}, kernelItems(&add))
	if !ok {
		return nil, false
	}
	out := *doc
	out.SetItems(items)
	return &out, true
}

// kernelItems returns s's kernel item sections alone, in a new header.
func kernelItems(s *spec.NodeState) *spec.NodeState {
	out := &spec.NodeState{}
	out.SetItems(s)
	return out
}

// withoutKernelItems returns s without its kernel item sections, in a
// new header.
func withoutKernelItems(s *spec.NodeState) *spec.NodeState {
	out := *s
	out.SetItems(&spec.NodeState{})
	return &out
}
