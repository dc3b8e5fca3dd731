package emulator

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// params are a request's parameters: query string plus form body, one value
// per name (the SDK never repeats a name; lists are Name.1, Name.2, ...).
type params map[string]string

func (p params) str(name string) string { return p[name] }

func (p params) required(name string) (string, *apiError) {
	v := p[name]
	if v == "" {
		return "", missing(name)
	}
	return v, nil
}

// integer reads an optional integer in [lo, hi]; def when absent.
func (p params) integer(name string, def, lo, hi int) (int, *apiError) {
	v, ok := p[name]
	if !ok || v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalid(name, v, "not an integer")
	}
	if n < lo || n > hi {
		return 0, invalid(name, v, "must be between "+strconv.Itoa(lo)+" and "+strconv.Itoa(hi))
	}
	return n, nil
}

// list reads a repeated parameter Name.1 ... Name.N in index order.
func (p params) list(name string) ([]string, *apiError) {
	type item struct {
		i int
		v string
	}
	var items []item
	prefix := name + "."
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok || strings.Contains(rest, ".") {
			continue
		}
		i, err := strconv.Atoi(rest)
		if err != nil || i < 1 {
			return nil, invalid(k, v, "the index of a repeated parameter must be a positive integer")
		}
		items = append(items, item{i, v})
	}
	sort.Slice(items, func(a, b int) bool { return items[a].i < items[b].i })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out, nil
}

// addrs reads a repeated parameter of IPv4 addresses.
func (p params) addrs(name string, max int) ([]netip.Addr, *apiError) {
	vs, err := p.list(name)
	if err != nil {
		return nil, err
	}
	if len(vs) > max {
		return nil, invalid(name+".N", strconv.Itoa(len(vs)), "at most "+strconv.Itoa(max)+" addresses per call")
	}
	out := make([]netip.Addr, 0, len(vs))
	for i, v := range vs {
		a, perr := netip.ParseAddr(v)
		if perr != nil || !a.Is4() {
			return nil, invalid(name+"."+strconv.Itoa(i+1), v, "not an IPv4 address")
		}
		out = append(out, a)
	}
	return out, nil
}

// maxTags is the cloud's limit of tags per resource and per filter.
const maxTags = 20

// tags reads Tag.N.Key / Tag.N.Value. A filter may give a key without a
// value (match any value); a value without a key is an error.
func (p params) tags() ([]tag, *apiError) {
	byIndex := map[int]*tag{}
	for k, v := range p {
		rest, ok := strings.CutPrefix(k, "Tag.")
		if !ok {
			continue
		}
		idx, field, ok := strings.Cut(rest, ".")
		i, err := strconv.Atoi(idx)
		if !ok || err != nil || i < 1 || (field != "Key" && field != "Value") {
			return nil, invalid(k, v, "tags are Tag.N.Key and Tag.N.Value with N from 1")
		}
		t := byIndex[i]
		if t == nil {
			t = &tag{}
			byIndex[i] = t
		}
		if field == "Key" {
			t.Key = v
		} else {
			t.Value = v
		}
	}
	if len(byIndex) > maxTags {
		return nil, invalid("Tag.N", strconv.Itoa(len(byIndex)), "at most 20 tags")
	}
	idx := make([]int, 0, len(byIndex))
	for i := range byIndex {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]tag, 0, len(idx))
	seen := map[string]bool{}
	for _, i := range idx {
		t := byIndex[i]
		if t.Key == "" {
			return nil, missing("Tag." + strconv.Itoa(i) + ".Key")
		}
		if seen[t.Key] {
			return nil, invalid("Tag."+strconv.Itoa(i)+".Key", t.Key, "duplicate tag key")
		}
		seen[t.Key] = true
		out = append(out, *t)
	}
	return out, nil
}

// commonParams are the protocol's own parameters: they do not take part in
// deciding whether a ClientToken is reused with the same request.
var commonParams = map[string]bool{
	"AccessKeyId": true, "Action": true, "Version": true, "Format": true, "Timestamp": true,
	"Signature": true, "SignatureMethod": true, "SignatureVersion": true, "SignatureType": true,
	"SignatureNonce": true, "SecurityToken": true, "BearerToken": true, "RegionId": true,
	"ClientToken": true, "OwnerId": true, "OwnerAccount": true, "ResourceOwnerId": true,
	"ResourceOwnerAccount": true,
}

// fingerprint identifies a request's own parameters for idempotency.
func (p params) fingerprint() string {
	keys := make([]string, 0, len(p))
	for k := range p {
		if !commonParams[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k + "=" + p[k] + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))
}
