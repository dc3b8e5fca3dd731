package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/terway-reconciler/terway/spec"
)

// Decoders of what the kernel dumps for our table. Anything we could not
// have written is not an error: it is marked foreign (or decoded as an
// unrecognised rule), differs from the desired state, and gets replaced.

var hookNames = map[uint32]string{
	unix.NF_INET_LOCAL_IN:    spec.HookInput,
	unix.NF_INET_FORWARD:     spec.HookForward,
	unix.NF_INET_LOCAL_OUT:   spec.HookOutput,
	unix.NF_INET_PRE_ROUTING: spec.HookPrerouting,
}

func decodeChain(m msg) (*chain, error) {
	as, err := parseAttrs(m.attrs)
	if err != nil {
		return nil, err
	}
	c := &chain{}
	typ := ""
	var foreign []string
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_CHAIN_NAME:
			c.name = a.str()
		case unix.NFTA_CHAIN_TYPE:
			typ = a.str()
		case unix.NFTA_CHAIN_POLICY:
			switch a.u32() {
			case nfAccept:
				c.policy = spec.VerdictAccept
			case nfDrop:
				c.policy = spec.VerdictDrop
			}
		case unix.NFTA_CHAIN_HOOK:
			hs, err := parseAttrs(a.data)
			if err != nil {
				return nil, err
			}
			for _, h := range hs {
				switch h.typ {
				case unix.NFTA_HOOK_HOOKNUM:
					name, ok := hookNames[h.u32()]
					if !ok {
						foreign = append(foreign, fmt.Sprintf("hook %d", h.u32()))
					}
					c.hook = name
				case unix.NFTA_HOOK_PRIORITY:
					c.priority = int(int32(h.u32()))
				case unix.NFTA_HOOK_DEV, attrHookDevs:
					foreign = append(foreign, "device hook")
				}
			}
		case attrChainUserdata:
			c.comment = udGetString(a.data, udComment)
		}
	}
	if c.hook != "" && typ != "filter" {
		foreign = append(foreign, "type "+typ)
	}
	c.foreign = strings.Join(foreign, ", ")
	return c, nil
}

// decodeSet parses a set; anonymous reports a rule's anonymous set.
func decodeSet(m msg) (s *set, anonymous bool, err error) {
	as, err := parseAttrs(m.attrs)
	if err != nil {
		return nil, false, err
	}
	s = &set{elems: elemMap{}}
	var flags, magic, keyLen, dataType uint32
	var foreign []string
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_SET_NAME:
			s.name = a.str()
		case unix.NFTA_SET_FLAGS:
			flags = a.u32()
		case unix.NFTA_SET_KEY_TYPE:
			magic = a.u32()
		case unix.NFTA_SET_KEY_LEN:
			keyLen = a.u32()
		case unix.NFTA_SET_DATA_TYPE:
			dataType = a.u32()
		case unix.NFTA_SET_USERDATA:
			s.comment = udGetString(a.data, udSetComment)
		case unix.NFTA_SET_TIMEOUT, attrSetExpr, attrSetExpressions:
			foreign = append(foreign, "timeouts or expressions")
		}
	}
	anonymous = flags&unix.NFT_SET_ANONYMOUS != 0
	s.interval = flags&unix.NFT_SET_INTERVAL != 0
	s.verdict = flags&unix.NFT_SET_MAP != 0
	if extra := flags &^ (unix.NFT_SET_ANONYMOUS | unix.NFT_SET_CONSTANT | unix.NFT_SET_INTERVAL | unix.NFT_SET_MAP | setFlagConcat); extra != 0 {
		foreign = append(foreign, fmt.Sprintf("flags %#x", extra))
	}
	if flags&unix.NFT_SET_CONSTANT != 0 && !anonymous {
		foreign = append(foreign, "constant")
	}
	if s.verdict && dataType != unix.NFT_DATA_VERDICT {
		foreign = append(foreign, fmt.Sprintf("map data type %#x", dataType))
	}
	// A key type packs up to five 6-bit datatype ids, first part highest.
	for m := magic; m != 0; m >>= 6 {
		id := m & 0x3f
		var t *dtype
		for _, d := range dtypes {
			if d.magic == id {
				t = &d
			}
		}
		if t == nil {
			foreign = append(foreign, fmt.Sprintf("datatype %d", id))
			break
		}
		s.types = append([]dtype{*t}, s.types...)
		s.typeNames = append([]string{t.name}, s.typeNames...)
	}
	if len(s.types) == 0 || uint32(concatLen(s.types)) != keyLen {
		foreign = append(foreign, fmt.Sprintf("key type %#x of %d bytes", magic, keyLen))
		s.types = nil
	}
	s.foreign = strings.Join(foreign, ", ")
	return s, anonymous, nil
}

// rawElem is one element as the kernel holds it.
type rawElem struct {
	key, keyEnd []byte
	end         bool
	verdict     *spec.NFTVerdict
}

// decodeElems adds the elements listed in ms to s and returns how many
// were listed, each kernel element counted once (an interval of a
// one-field set is two).
func decodeElems(s *set, ms []msg) (int, error) {
	var raws []rawElem
	for _, m := range ms {
		as, err := parseAttrs(m.attrs)
		if err != nil {
			return 0, err
		}
		for _, a := range as {
			if a.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			list, err := parseAttrs(a.data)
			if err != nil {
				return 0, err
			}
			for _, le := range list {
				r, err := decodeElem(le.data)
				if err != nil {
					return 0, err
				}
				raws = append(raws, r)
			}
		}
	}
	if s.types == nil {
		return len(raws), nil // foreign key type: the set is replaced, its elements do not matter
	}
	return len(raws), s.addRaw(raws)
}

func decodeElem(b []byte) (rawElem, error) {
	as, err := parseAttrs(b)
	if err != nil {
		return rawElem{}, err
	}
	var r rawElem
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_SET_ELEM_KEY:
			if r.key, err = dataValue(a.data); err != nil {
				return r, err
			}
		case attrElemKeyEnd:
			if r.keyEnd, err = dataValue(a.data); err != nil {
				return r, err
			}
		case unix.NFTA_SET_ELEM_FLAGS:
			r.end = a.u32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
		case unix.NFTA_SET_ELEM_DATA:
			v, err := decodeVerdictData(a.data)
			if err != nil {
				return r, err
			}
			r.verdict = v
		}
	}
	return r, nil
}

func decodeVerdictData(b []byte) (*spec.NFTVerdict, error) {
	as, err := parseAttrs(b)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if a.typ != unix.NFTA_DATA_VERDICT {
			continue
		}
		vs, err := parseAttrs(a.data)
		if err != nil {
			return nil, err
		}
		var code int32
		chainName := ""
		for _, v := range vs {
			switch v.typ {
			case unix.NFTA_VERDICT_CODE:
				code = int32(v.u32())
			case unix.NFTA_VERDICT_CHAIN:
				chainName = v.str()
			}
		}
		vd := verdictOf(expr.VerdictKind(code), chainName)
		return &vd, nil
	}
	return nil, nil
}

func verdictOf(k expr.VerdictKind, chainName string) spec.NFTVerdict {
	switch k {
	case expr.VerdictAccept:
		return spec.NFTVerdict{Kind: spec.VerdictAccept}
	case expr.VerdictDrop:
		return spec.NFTVerdict{Kind: spec.VerdictDrop}
	case expr.VerdictReturn:
		return spec.NFTVerdict{Kind: spec.VerdictReturn}
	case expr.VerdictJump:
		return spec.NFTVerdict{Kind: spec.VerdictJump, Chain: chainName}
	case expr.VerdictGoto:
		return spec.NFTVerdict{Kind: spec.VerdictGoto, Chain: chainName}
	}
	return spec.NFTVerdict{Kind: fmt.Sprintf("verdict(%d)", k)}
}

// addRaw turns kernel elements into logical ones. A single-type interval
// set holds a start element and an end element (flagged, one past the end)
// per interval, or only a start when it runs to the maximum; sorting by key
// with ends first on ties pairs them up again.
func (s *set) addRaw(raws []rawElem) error {
	add := func(lo, hi []byte, v *spec.NFTVerdict) error {
		los, err := splitKey(s.types, lo)
		if err != nil {
			return err
		}
		his, err := splitKey(s.types, hi)
		if err != nil {
			return err
		}
		e := &elem{verdict: v}
		texts := make([]string, len(s.types))
		for i, t := range s.types {
			e.key = append(e.key, keyRange{los[i], his[i]})
			texts[i] = formatPart(t, e.key[i])
		}
		e.text = strings.Join(texts, " . ")
		s.elems.put(e.text, e)
		return nil
	}
	if !s.interval || len(s.types) > 1 {
		for _, r := range raws {
			hi := r.keyEnd
			if hi == nil {
				hi = r.key
			}
			if err := add(r.key, hi, r.verdict); err != nil {
				return err
			}
		}
		return nil
	}
	slices.SortFunc(raws, func(a, b rawElem) int {
		if c := bytes.Compare(a.key, b.key); c != 0 {
			return c
		}
		if a.end != b.end {
			if a.end {
				return -1
			}
			return 1
		}
		return 0
	})
	var open *rawElem
	for i := range raws {
		r := &raws[i]
		switch {
		case r.end && open != nil:
			if err := add(open.key, prev(r.key), open.verdict); err != nil {
				return err
			}
			open = nil
		case r.end:
			// nft writes an end at 0 before the first interval; nothing to pair.
		default:
			if open != nil {
				if err := add(open.key, open.key, open.verdict); err != nil {
					return err
				}
			}
			open = r
		}
	}
	if open != nil {
		top := bytes.Repeat([]byte{0xff}, len(open.key))
		return add(open.key, top, open.verdict)
	}
	return nil
}

// decodeRule parses a rule message into its chain name, expressions and
// comment. Expressions we never write decode as nil entries (named in
// unknown) so that the rule is reported as unrecognised.
func decodeRule(m msg) (chainName string, exprs []expr.Any, unknown []string, comment string, err error) {
	as, err := parseAttrs(m.attrs)
	if err != nil {
		return "", nil, nil, "", err
	}
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_RULE_CHAIN:
			chainName = a.str()
		case unix.NFTA_RULE_USERDATA:
			comment = udGetString(a.data, udComment)
		case unix.NFTA_RULE_EXPRESSIONS:
			list, err := parseAttrs(a.data)
			if err != nil {
				return "", nil, nil, "", err
			}
			for _, le := range list {
				e, name, err := decodeExpr(le.data)
				if err != nil {
					return "", nil, nil, "", err
				}
				if e == nil {
					unknown = append(unknown, name)
				}
				exprs = append(exprs, e)
			}
		}
	}
	return chainName, exprs, unknown, comment, nil
}

func decodeExpr(b []byte) (expr.Any, string, error) {
	as, err := parseAttrs(b)
	if err != nil {
		return nil, "", err
	}
	name := ""
	var data []byte
	for _, a := range as {
		switch a.typ {
		case unix.NFTA_EXPR_NAME:
			name = a.str()
		case unix.NFTA_EXPR_DATA:
			data = a.data
		}
	}
	var e expr.Any
	switch name {
	case "meta":
		e = &expr.Meta{}
	case "payload":
		e = &expr.Payload{}
	case "cmp":
		e = &expr.Cmp{}
	case "lookup":
		e = &expr.Lookup{}
	case "bitwise":
		e = &expr.Bitwise{}
	case "ct":
		e = &expr.Ct{}
	case "byteorder":
		e = &expr.Byteorder{}
	case "counter":
		e = &expr.Counter{}
	case "immediate":
		imm := &expr.Immediate{}
		if err := expr.Unmarshal(familyInet, data, imm); err != nil {
			return nil, name, fmt.Errorf("decode %s expression: %w", name, err)
		}
		if imm.Register != unix.NFT_REG_VERDICT || len(imm.Data) != 0 {
			return nil, name, nil
		}
		e = &expr.Verdict{}
	default:
		return nil, name, nil
	}
	if err := expr.Unmarshal(familyInet, data, e); err != nil {
		return nil, name, fmt.Errorf("decode %s expression: %w", name, err)
	}
	return e, name, nil
}

// nativeU32 reads a host-order u32 (ct state masks), tolerating short data.
func nativeU32(b []byte) uint32 {
	var buf [4]byte
	copy(buf[:], b)
	return binary.NativeEndian.Uint32(buf[:])
}
