package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Encoders of the transaction messages. Each returns batchMsgs whose what
// field names the object, so a refused message is reported by name.

var hookNums = map[string]uint32{
	spec.HookInput:      unix.NF_INET_LOCAL_IN,
	spec.HookForward:    unix.NF_INET_FORWARD,
	spec.HookOutput:     unix.NF_INET_LOCAL_OUT,
	spec.HookPrerouting: unix.NF_INET_PRE_ROUTING,
}

const (
	// maxElemsPerMsg and maxElemBytesPerMsg chunk element lists. The list
	// is one netlink attribute whose length is 16 bits: past 64 KiB it
	// wraps and the kernel silently installs only a prefix (google/nftables
	// v0.3.0 puts 10,000 elements in one and gets 1,808).
	maxElemsPerMsg     = 500
	maxElemBytesPerMsg = 48 << 10
	// tableComment marks the table as ours for people reading `nft list`.
	tableComment = "managed by terway: do not edit, changes are reverted"
)

func tableAttrs() []byte { return attrStr(unix.NFTA_TABLE_NAME, spec.NFTTable) }

// newTableMsg creates the table, or updates it: flags 0 wakes a dormant
// table (an existing table's comment cannot change and is left alone).
func newTableMsg() batchMsg {
	a := append(tableAttrs(), attrU32(unix.NFTA_TABLE_FLAGS, 0)...)
	a = append(a, attr(attrTableUserdata, udString(nil, udComment, tableComment))...)
	return batchMsg{typ: unix.NFT_MSG_NEWTABLE, flags: unix.NLM_F_CREATE, attrs: a, what: "add table inet terway"}
}

func delTableMsg() batchMsg {
	return batchMsg{typ: unix.NFT_MSG_DELTABLE, attrs: tableAttrs(), what: "delete table inet terway"}
}

func chainKey(name string) []byte {
	return append(attrStr(unix.NFTA_CHAIN_TABLE, spec.NFTTable), attrStr(unix.NFTA_CHAIN_NAME, name)...)
}

func newChainMsg(c *chain) batchMsg {
	a := chainKey(c.name)
	if c.hook != "" {
		a = append(a, nested(unix.NFTA_CHAIN_HOOK,
			attrU32(unix.NFTA_HOOK_HOOKNUM, hookNums[c.hook]),
			attrU32(unix.NFTA_HOOK_PRIORITY, uint32(int32(c.priority))))...)
		pol := uint32(nfAccept)
		if c.policy == spec.VerdictDrop {
			pol = nfDrop
		}
		a = append(a, attrU32(unix.NFTA_CHAIN_POLICY, pol)...)
		a = append(a, attrStr(unix.NFTA_CHAIN_TYPE, "filter")...)
	}
	if c.comment != "" {
		a = append(a, attr(attrChainUserdata, udString(nil, udComment, c.comment))...)
	}
	return batchMsg{typ: unix.NFT_MSG_NEWCHAIN, flags: unix.NLM_F_CREATE, attrs: a, what: "add chain " + c.name}
}

func delChainMsg(name string) batchMsg {
	return batchMsg{typ: unix.NFT_MSG_DELCHAIN, attrs: chainKey(name), what: "delete chain " + name}
}

func flushChainMsg(name string) batchMsg {
	a := append(attrStr(unix.NFTA_RULE_TABLE, spec.NFTTable), attrStr(unix.NFTA_RULE_CHAIN, name)...)
	return batchMsg{typ: unix.NFT_MSG_DELRULE, attrs: a, what: "flush chain " + name}
}

// keyType is the set's NFTA_SET_KEY_TYPE: one datatype id, or for a
// concatenation the ids packed 6 bits each, as nft encodes them.
func keyType(types []dtype) uint32 {
	var m uint32
	for _, t := range types {
		m = m<<6 | t.magic
	}
	return m
}

// newSetMsg creates a named set (anonymous sets: newAnonSetMsg).
func newSetMsg(s *set, id uint32) batchMsg {
	return batchMsg{typ: unix.NFT_MSG_NEWSET, flags: unix.NLM_F_CREATE, attrs: setAttrs(s, s.name, id, 0, 0),
		what: fmt.Sprintf("add %s %s", s.word(), s.name)}
}

func setAttrs(s *set, name string, id uint32, extraFlags uint32, size int) []byte {
	var flags uint32 = extraFlags
	if s.interval {
		flags |= unix.NFT_SET_INTERVAL
	}
	if s.verdict {
		flags |= unix.NFT_SET_MAP
	}
	if len(s.types) > 1 {
		flags |= setFlagConcat
	}
	a := attrStr(unix.NFTA_SET_TABLE, spec.NFTTable)
	a = append(a, attrStr(unix.NFTA_SET_NAME, name)...)
	a = append(a, attrU32(unix.NFTA_SET_FLAGS, flags)...)
	a = append(a, attrU32(unix.NFTA_SET_KEY_TYPE, keyType(s.types))...)
	a = append(a, attrU32(unix.NFTA_SET_KEY_LEN, uint32(concatLen(s.types)))...)
	if s.verdict {
		a = append(a, attrU32(unix.NFTA_SET_DATA_TYPE, unix.NFT_DATA_VERDICT)...)
		a = append(a, attrU32(unix.NFTA_SET_DATA_LEN, 0)...)
	}
	a = append(a, attrU32(unix.NFTA_SET_ID, id)...)
	var desc []byte
	if size > 0 {
		desc = append(desc, attrU32(unix.NFTA_SET_DESC_SIZE, uint32(size))...)
	}
	if len(s.types) > 1 {
		// The kernel needs each field's length to pick the concatenation
		// backend and to print ranges per field.
		var fields []byte
		for _, t := range s.types {
			fields = append(fields, nested(unix.NFTA_LIST_ELEM, attrU32(attrSetFieldLen, uint32(t.size)))...)
		}
		desc = append(desc, nested(attrSetDescConcat, fields)...)
	}
	if len(desc) > 0 {
		a = append(a, nested(unix.NFTA_SET_DESC, desc)...)
	}
	var ud []byte
	if len(s.types) == 1 {
		order := uint32(byteorderBigEndian)
		if s.types[0].hostOrder {
			order = byteorderHost
		}
		ud = udU32(ud, udSetKeyByteorder, order)
	}
	ud = udString(ud, udSetComment, s.comment)
	if len(ud) > 0 {
		a = append(a, attr(unix.NFTA_SET_USERDATA, ud)...)
	}
	return a
}

func delSetMsg(s *set) batchMsg {
	a := append(attrStr(unix.NFTA_SET_TABLE, spec.NFTTable), attrStr(unix.NFTA_SET_NAME, s.name)...)
	return batchMsg{typ: unix.NFT_MSG_DELSET, attrs: a, what: fmt.Sprintf("delete %s %s", s.word(), s.name)}
}

// wireElems encodes one logical element as the kernel's element(s): a
// concatenated interval is one element with KEY and KEY_END; a single-type
// interval is a start element and, unless it runs to the type's maximum, an
// end element flagged INTERVAL_END at one past its end (nft's encoding).
func wireElems(s *set, e *elem, withData bool) [][]byte {
	lo := make([][]byte, len(e.key))
	hi := make([][]byte, len(e.key))
	for i, r := range e.key {
		lo[i], hi[i] = r.lo, r.hi
	}
	var data []byte
	if withData && e.verdict != nil {
		data = nested(unix.NFTA_SET_ELEM_DATA, verdictData(*e.verdict))
	}
	key := nested(unix.NFTA_SET_ELEM_KEY, attr(unix.NFTA_DATA_VALUE, joinKey(s.types, lo)))
	switch {
	case !s.interval:
		return [][]byte{append(key, data...)}
	case len(s.types) > 1:
		end := nested(attrElemKeyEnd, attr(unix.NFTA_DATA_VALUE, joinKey(s.types, hi)))
		return [][]byte{append(append(key, end...), data...)}
	}
	after, ok := next(hi[0])
	if !ok {
		ud := udU32(nil, udElemFlags, elemFlagOpenEnded)
		return [][]byte{append(append(key, data...), attr(unix.NFTA_SET_ELEM_USERDATA, ud)...)}
	}
	end := append(attrU32(unix.NFTA_SET_ELEM_FLAGS, unix.NFT_SET_ELEM_INTERVAL_END),
		nested(unix.NFTA_SET_ELEM_KEY, attr(unix.NFTA_DATA_VALUE, after))...)
	return [][]byte{append(key, data...), end}
}

func verdictData(v spec.NFTVerdict) []byte {
	var code int32
	switch v.Kind {
	case spec.VerdictAccept:
		code = nfAccept
	case spec.VerdictDrop:
		code = nfDrop
	case spec.VerdictReturn:
		code = int32(expr.VerdictReturn)
	case spec.VerdictJump:
		code = int32(expr.VerdictJump)
	case spec.VerdictGoto:
		code = int32(expr.VerdictGoto)
	}
	inner := attr(unix.NFTA_VERDICT_CODE, binary.BigEndian.AppendUint32(nil, uint32(code)))
	if v.Chain != "" {
		inner = append(inner, attrStr(unix.NFTA_VERDICT_CHAIN, v.Chain)...)
	}
	return nested(unix.NFTA_DATA_VERDICT, inner)
}

// elemMsgs adds (or deletes) elements in chunks small enough that the
// element list attribute never overflows its 16-bit length.
func elemMsgs(s *set, name string, setID uint32, elems []*elem, del bool) []batchMsg {
	typ, flags, verb := uint16(unix.NFT_MSG_NEWSETELEM), uint16(unix.NLM_F_CREATE), "add"
	if del {
		typ, flags, verb = unix.NFT_MSG_DELSETELEM, 0, "delete"
	}
	var out []batchMsg
	var list []byte
	count, first := 0, 0
	flush := func(last int) {
		if count == 0 {
			return
		}
		a := attrStr(unix.NFTA_SET_ELEM_LIST_TABLE, spec.NFTTable)
		a = append(a, attrStr(unix.NFTA_SET_ELEM_LIST_SET, name)...)
		if setID != 0 {
			a = append(a, attrU32(unix.NFTA_SET_ELEM_LIST_SET_ID, setID)...)
		}
		a = append(a, nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, list)...)
		what := fmt.Sprintf("%s %d elements of %s %s (%s … %s)", verb, last-first, s.word(), s.name,
			elems[first].String(), elems[last-1].String())
		if last-first == 1 {
			what = fmt.Sprintf("%s element %s of %s %s", verb, elems[first].String(), s.word(), s.name)
		}
		out = append(out, batchMsg{typ: typ, flags: flags, attrs: a, what: what})
		list, count, first = nil, 0, last
	}
	for i, e := range elems {
		var enc []byte
		for _, w := range wireElems(s, e, !del) {
			enc = append(enc, nested(unix.NFTA_LIST_ELEM, w)...)
		}
		if count > 0 && (count+1 > maxElemsPerMsg || len(list)+len(enc) > maxElemBytesPerMsg) {
			flush(i)
		}
		list = append(list, enc...)
		count++
	}
	flush(len(elems))
	return out
}
