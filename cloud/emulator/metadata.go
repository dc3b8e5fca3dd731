package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metadataServer is the instance metadata service (100.100.100.200 in the
// cloud) of one instance. Bodies are plain text without a trailing newline;
// directory listings have one entry per line, sub-directories ending in "/";
// unknown paths are 404. An ENI's MAC is listed only while the NIC is
// plugged into the instance (after the attach completed, until the detach
// completed), which is what clients poll for.
type metadataServer struct {
	e          *Emulator
	instanceID string
}

// IMDSv2 headers and limits.
const (
	imdsTokenHeader = "X-aliyun-ecs-metadata-token"
	imdsTTLHeader   = "X-aliyun-ecs-metadata-token-ttl-seconds"
	imdsMaxTTL      = 21600
)

// STS credentials of the RAM role live 6 hours; a new one is handed out
// when less than 30 minutes remain, as in the cloud.
const (
	stsLifetime = 6 * time.Hour
	stsRenewal  = 30 * time.Minute
)

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (m *metadataServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e := m.e
	now := e.now()
	if r.URL.Path == "/latest/api/token" {
		m.serveToken(w, r, now)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var rest string
	var ok bool
	for _, base := range []string{"/latest/meta-data", "/2016-01-01/meta-data"} {
		if rest, ok = strings.CutPrefix(r.URL.Path, base); ok && (rest == "" || rest[0] == '/') {
			break
		}
		ok = false
	}
	if !ok {
		http.NotFound(w, r)
		return
	}

	e.mu.Lock()
	in := e.instances[m.instanceID]
	status := http.StatusOK
	if tok := r.Header.Get(imdsTokenHeader); tok != "" {
		if exp, valid := e.imdsTokens[tok]; !valid || now.After(exp) {
			status = http.StatusUnauthorized
		}
	} else if in.HTTPTokens == "required" {
		status = http.StatusUnauthorized
	}
	body, found := "", false
	if status == http.StatusOK {
		body, found = m.lookup(strings.Trim(rest, "/"), now)
	}
	e.mu.Unlock()

	switch {
	case status != http.StatusOK:
		http.Error(w, "the metadata token is missing, invalid or expired", status)
	case !found:
		http.NotFound(w, r)
	default:
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	}
}

// serveToken hands out an IMDSv2 token.
func (m *metadataServer) serveToken(w http.ResponseWriter, r *http.Request, now time.Time) {
	if r.Method != http.MethodPut {
		http.Error(w, "the token is created with PUT", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("X-Forwarded-For") != "" {
		// The cloud refuses tokens to anything that looks proxied.
		http.Error(w, "X-Forwarded-For is not allowed when creating a token", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(imdsTTLHeader))
	if err != nil || ttl < 1 || ttl > imdsMaxTTL {
		http.Error(w, imdsTTLHeader+" must be an integer from 1 to 21600", http.StatusBadRequest)
		return
	}
	tok := randomHex(24)
	m.e.mu.Lock()
	for t, exp := range m.e.imdsTokens {
		if now.After(exp) {
			delete(m.e.imdsTokens, t)
		}
	}
	m.e.imdsTokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	m.e.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(tok))
}

func listing(entries ...string) string { return strings.Join(entries, "\n") }

var perENIKeys = []string{
	"gateway", "mac", "netmask", "network-interface-id", "primary-ip-address", "private-ipv4s",
	"vpc-cidr-block", "vpc-id", "vswitch-cidr-block", "vswitch-id",
}

// lookup answers one metadata path (without the meta-data prefix and
// slashes). Called with the lock held.
func (m *metadataServer) lookup(path string, now time.Time) (string, bool) {
	e := m.e
	in := e.instances[m.instanceID]
	primary := e.primaryENIOf(in.ID)
	host := in.Hostname
	if host == "" {
		host = in.ID
	}
	simple := map[string]string{
		"instance-id":            in.ID,
		"instance/instance-type": in.typ.ID,
		"region-id":              e.world.RegionID,
		"zone-id":                in.ZoneID,
		"vpc-id":                 e.world.VPC.ID,
		"vpc-cidr-block":         e.world.VPC.CIDR,
		"vswitch-id":             in.VSwitchID,
		"vswitch-cidr-block":     e.vswitches[in.VSwitchID].CIDR,
		"mac":                    primary.mac,
		"private-ipv4":           primary.primaryIP.String(),
		"hostname":               host,
		"owner-account-id":       emulatorOwnerID,
		"network-type":           "vpc",
	}
	if v, ok := simple[path]; ok {
		return v, true
	}
	switch path {
	case "":
		top := []string{"hostname", "instance-id", "instance/", "mac", "network-type", "network/", "owner-account-id",
			"private-ipv4", "region-id", "vpc-cidr-block", "vpc-id", "vswitch-cidr-block", "vswitch-id", "zone-id"}
		if e.world.RAMRole != "" {
			top = append(top, "ram/")
		}
		slices.Sort(top)
		return listing(top...), true
	case "instance":
		return listing("instance-type"), true
	case "network":
		return listing("interfaces/"), true
	case "network/interfaces":
		return listing("macs/"), true
	case "network/interfaces/macs":
		var macs []string
		for _, n := range e.pluggedENIs(in.ID) {
			macs = append(macs, n.mac+"/")
		}
		return listing(macs...), true
	}
	if rest, ok := strings.CutPrefix(path, "network/interfaces/macs/"); ok {
		mac, key, _ := strings.Cut(rest, "/")
		for _, n := range e.pluggedENIs(in.ID) {
			if strings.EqualFold(n.mac, mac) {
				return m.eniValue(n, key, now)
			}
		}
		return "", false
	}
	if e.world.RAMRole == "" {
		return "", false
	}
	switch path {
	case "ram":
		return listing("security-credentials/"), true
	case "ram/security-credentials":
		return e.world.RAMRole, true
	case "ram/security-credentials/" + e.world.RAMRole:
		return e.roleCredentials(now), true
	}
	return "", false
}

func (m *metadataServer) eniValue(n *eniState, key string, now time.Time) (string, bool) {
	e := m.e
	switch key {
	case "":
		return listing(perENIKeys...), true
	case "network-interface-id":
		return n.id, true
	case "mac":
		return n.mac, true
	case "primary-ip-address":
		return n.primaryIP.String(), true
	case "gateway":
		return n.vsw.pool.gateway.String(), true
	case "netmask":
		bits := prefixOf(n.vsw).Bits()
		mask := net.CIDRMask(bits, 32)
		return net.IP(mask).String(), true
	case "vswitch-id":
		return n.vsw.ID, true
	case "vswitch-cidr-block":
		return n.vsw.CIDR, true
	case "vpc-id":
		return e.world.VPC.ID, true
	case "vpc-cidr-block":
		return e.world.VPC.CIDR, true
	case "private-ipv4s":
		// A JSON array with quoted strings, primary first: clients
		// json.Unmarshal it.
		ips := []string{n.primaryIP.String()}
		for _, a := range n.secondary {
			if at, ok := n.assignedAt[a]; ok && now.Sub(at) < e.metadataLag {
				continue // not yet visible to the guest
			}
			ips = append(ips, a.String())
		}
		b, _ := json.Marshal(ips)
		return string(b), true
	}
	// ipv6s, ipv4-prefixes and the rest: this ENI has none, which the
	// cloud answers with 404.
	return "", false
}

func (e *Emulator) primaryENIOf(instanceID string) *eniState {
	for _, n := range e.enis {
		if n.instanceID == instanceID && n.typ == typePrimary {
			return n
		}
	}
	panic("emulator: instance " + instanceID + " has no primary ENI") // New made one; nothing deletes it
}

// pluggedENIs are the NICs the instance's guest sees, by device index.
func (e *Emulator) pluggedENIs(instanceID string) []*eniState {
	var out []*eniState
	for _, n := range e.enis {
		if n.instanceID == instanceID && n.plugged {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *eniState) int { return a.deviceIndex - b.deviceIndex })
	return out
}

type roleCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	AccessKeySecret string `json:"AccessKeySecret"`
	Expiration      string `json:"Expiration"`
	SecurityToken   string `json:"SecurityToken"`
	LastUpdated     string `json:"LastUpdated"`
	Code            string `json:"Code"`
}

// roleCredentials returns the RAM role's current STS credential, issuing
// a new one when the current one is close to expiry. Old credentials stay
// valid until they expire. Called with the lock held.
func (e *Emulator) roleCredentials(now time.Time) string {
	var bestID string
	var best *stsCredential
	for id, c := range e.sts {
		if best == nil || c.Expires.After(best.Expires) {
			bestID, best = id, c
		}
	}
	if best == nil || best.Expires.Sub(now) < stsRenewal {
		bestID = stsPrefix + "emu" + randomHex(10)
		token := make([]byte, 96)
		_, _ = rand.Read(token)
		best = &stsCredential{
			Secret: randomHex(16), Token: base64.StdEncoding.EncodeToString(token),
			Expires: now.Add(stsLifetime).Truncate(time.Second), Issued: now.Truncate(time.Second),
		}
		e.sts[bestID] = best
		for id, c := range e.sts {
			if now.After(c.Expires) {
				delete(e.sts, id)
			}
		}
		e.log.Debug("issued RAM role credentials", "role", e.world.RAMRole, "accessKeyId", bestID, "expires", best.Expires)
	}
	b, _ := json.MarshalIndent(roleCredentials{
		AccessKeyID: bestID, AccessKeySecret: best.Secret, SecurityToken: best.Token,
		Expiration: best.Expires.UTC().Format(cloudTime), LastUpdated: best.Issued.UTC().Format(cloudTime), Code: "Success",
	}, "", "  ")
	return string(b)
}
