package nft

import (
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Netlink attribute encoding and decoding, and the nft userdata TLVs that
// carry comments. Attribute numbers missing from x/sys/unix are named here.

const (
	attrTableUserdata  = 6      // NFTA_TABLE_USERDATA
	attrChainUserdata  = 12     // NFTA_CHAIN_USERDATA
	attrSetDescConcat  = 2      // NFTA_SET_DESC_CONCAT
	attrSetFieldLen    = 1      // NFTA_SET_FIELD_LEN
	attrElemKeyEnd     = 10     // NFTA_SET_ELEM_KEY_END
	attrHookDevs       = 4      // NFTA_HOOK_DEVS
	attrSetExpr        = 17     // NFTA_SET_EXPR
	attrSetExpressions = 18     // NFTA_SET_EXPRESSIONS
	nlaTypeMask        = 0x3fff // NLA_TYPE_MASK: the type without nested/byteorder bits
	nfDrop             = 0      // NF_DROP
	nfAccept           = 1      // NF_ACCEPT
	setFlagConcat      = 0x80

	// Userdata TLV types as libnftnl defines them (what nft reads).
	udComment          = 0 // NFTNL_UDATA_{TABLE,CHAIN,RULE}_COMMENT
	udSetKeyByteorder  = 0 // NFTNL_UDATA_SET_KEYBYTEORDER
	udSetComment       = 7 // NFTNL_UDATA_SET_COMMENT
	udElemFlags        = 1 // NFTNL_UDATA_SET_ELEM_FLAGS
	elemFlagOpenEnded  = 1 // NFTNL_SET_ELEM_F_INTERVAL_OPEN
	byteorderBigEndian = 2
	byteorderHost      = 1
)

// attr encodes one attribute, padded to 4 bytes.
func attr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(b[0:2], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:4], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func attrStr(typ uint16, s string) []byte { return attr(typ, append([]byte(s), 0)) }

func attrU32(typ uint16, v uint32) []byte { return attr(typ, binary.BigEndian.AppendUint32(nil, v)) }

func nested(typ uint16, parts ...[]byte) []byte {
	var data []byte
	for _, p := range parts {
		data = append(data, p...)
	}
	return attr(typ|unix.NLA_F_NESTED, data)
}

// rawAttr is one decoded attribute (type without the nested/byteorder bits).
type rawAttr struct {
	typ  uint16
	data []byte
}

// parseAttrs splits attributes; a malformed buffer is an error, never a panic.
func parseAttrs(b []byte) ([]rawAttr, error) {
	var out []rawAttr
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("truncated netlink attribute (%d bytes left)", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return nil, fmt.Errorf("netlink attribute length %d outside 4..%d", l, len(b))
		}
		out = append(out, rawAttr{typ: binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask, data: b[4:l]})
		b = b[min(len(b), (l+3)&^3):]
	}
	return out, nil
}

func (a rawAttr) str() string { return strings.TrimRight(string(a.data), "\x00") }

func (a rawAttr) u32() uint32 {
	if len(a.data) < 4 {
		return 0
	}
	return binary.BigEndian.Uint32(a.data)
}

// dataValue unwraps NFTA_DATA_VALUE from an NFTA_SET_ELEM_KEY-style nest.
func dataValue(b []byte) ([]byte, error) {
	as, err := parseAttrs(b)
	if err != nil {
		return nil, err
	}
	for _, a := range as {
		if a.typ == unix.NFTA_DATA_VALUE {
			return a.data, nil
		}
	}
	return nil, fmt.Errorf("no data value")
}

// udAppend appends one userdata TLV (type, length, value); strings carry
// their NUL like libnftnl writes them.
func udAppend(ud []byte, typ byte, val []byte) []byte {
	return append(append(ud, typ, byte(len(val))), val...)
}

func udString(ud []byte, typ byte, s string) []byte {
	if s == "" {
		return ud
	}
	return udAppend(ud, typ, append([]byte(s), 0))
}

func udU32(ud []byte, typ byte, v uint32) []byte {
	return udAppend(ud, typ, binary.NativeEndian.AppendUint32(nil, v))
}

// udGet returns the value of a userdata TLV, or nil.
func udGet(ud []byte, typ byte) []byte {
	for len(ud) >= 2 {
		t, l := ud[0], int(ud[1])
		if 2+l > len(ud) {
			return nil
		}
		if t == typ {
			return ud[2 : 2+l]
		}
		ud = ud[2+l:]
	}
	return nil
}

func udGetString(ud []byte, typ byte) string {
	return strings.TrimRight(string(udGet(ud, typ)), "\x00")
}
