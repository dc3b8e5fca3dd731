package nft

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/terway-reconciler/terway/spec"
)

// Canonicalising a document parses every address and port of every set and
// rule; a sync that changes one pod of 250 would spend most of its time on
// the 249 others. So the canonical form of each set and chain is cached by
// a digest of its content and reused while the content is the same. The
// cached objects are never modified after canonicalisation.

// digest identifies the content of one set or chain of the document.
type digest [sha256.Size]byte

// canonCache holds the canonical sets and chains of the last document: by
// content digest, to reuse one that did not change, and sets by name, to
// reuse the elements that did not change of a set that did (a pod's change
// is one element of a map that holds every pod's). A nil cache holds
// nothing.
type canonCache struct {
	byDigest   map[digest]any // *set or *chain
	setsByName map[string]*set
}

func (c *canonCache) object(sum digest) any {
	if c == nil {
		return nil
	}
	return c.byDigest[sum]
}

func (c *canonCache) set(name string) *set {
	if c == nil {
		return nil
	}
	return c.setsByName[name]
}

type digester struct{ buf []byte }

// str appends a length-prefixed string, so that no two different field
// sequences serialise alike.
func (d *digester) str(ss ...string) {
	for _, s := range ss {
		d.buf = binary.LittleEndian.AppendUint32(d.buf, uint32(len(s)))
		d.buf = append(d.buf, s...)
	}
}

func (d *digester) flag(b bool) {
	if b {
		d.buf = append(d.buf, 1)
	} else {
		d.buf = append(d.buf, 0)
	}
}

func (d *digester) num(n int) { d.buf = binary.LittleEndian.AppendUint64(d.buf, uint64(n)) }

func (d *digester) verdict(v *spec.NFTVerdict) {
	if v == nil {
		d.flag(false)
		return
	}
	d.flag(true)
	d.str(v.Kind, v.Chain, v.Map)
	d.num(len(v.Selectors))
	d.str(v.Selectors...)
}

func (d *digester) sum() digest {
	s := sha256.Sum256(d.buf)
	d.buf = d.buf[:0]
	return s
}

func (d *digester) set(s *spec.NFTSet) digest {
	d.str("set", s.Name, s.Comment, s.Pod)
	d.flag(s.Interval)
	d.flag(s.Verdict)
	d.num(len(s.Type))
	d.str(s.Type...)
	d.num(len(s.Elements))
	for _, e := range s.Elements {
		d.num(len(e.Key))
		d.str(e.Key...)
		d.verdict(e.Verdict)
	}
	return d.sum()
}

func (d *digester) chain(c *spec.NFTChain) digest {
	d.str("chain", c.Name, c.Hook, c.Policy, c.Comment, c.Pod)
	d.num(c.Priority)
	d.num(len(c.Rules))
	for _, r := range c.Rules {
		d.str(r.Comment)
		d.verdict(&r.Verdict)
		d.num(len(r.Match))
		for _, m := range r.Match {
			d.str(m.Set)
			d.flag(m.Negate)
			d.num(len(m.Selectors))
			d.str(m.Selectors...)
			d.num(len(m.Values))
			d.str(m.Values...)
		}
	}
	return d.sum()
}
