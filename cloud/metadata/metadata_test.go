package metadata

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeIMDS serves a fixed tree, optionally requiring IMDSv2 tokens.
type fakeIMDS struct {
	mu        sync.Mutex
	tree      map[string]string
	noTokens  bool // no token endpoint (IMDSv1 only)
	required  bool // tokenless GETs get 401
	valid     map[string]bool
	tokenPuts int
	gets      int
}

func (f *fakeIMDS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == "/latest/api/token" {
		if f.noTokens {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPut || r.Header.Get(tokenTTLHeader) == "" {
			http.Error(w, "bad token request", http.StatusBadRequest)
			return
		}
		f.tokenPuts++
		tok := "tok-" + strings.Repeat("x", f.tokenPuts)
		f.valid[tok] = true
		_, _ = w.Write([]byte(tok))
		return
	}
	f.gets++
	tok := r.Header.Get(tokenHeader)
	if (tok != "" && !f.valid[tok]) || (tok == "" && f.required) {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	body, ok := f.tree[strings.TrimPrefix(r.URL.Path, "/latest/meta-data/")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	_, _ = w.Write([]byte(body))
}

func newFake(t *testing.T) (*fakeIMDS, *Client) {
	f := &fakeIMDS{valid: map[string]bool{}, tree: map[string]string{
		"instance-id":               "i-1",
		"region-id":                 "cn-hangzhou",
		"zone-id":                   "cn-hangzhou-h",
		"mac":                       "00:16:3E:00:00:01",
		"vswitch-id":                "vsw-a",
		"instance/instance-type":    "ecs.g7.xlarge",
		"vswitch-cidr-block":        "198.18.64.0/20",
		"private-ipv4":              "198.18.64.10",
		"network/interfaces/macs/":  "00:16:3e:00:00:01/\n00:16:3e:00:00:02/",
		"ram/security-credentials/": "NodeRole",
		"ram/security-credentials/NodeRole": `{"Code":"Success","AccessKeyId":"STS.id","AccessKeySecret":"sts-secret",` +
			`"SecurityToken":"sts-token","Expiration":"` + time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z") + `"}`,
	}}
	for mac, id := range map[string]string{"00:16:3e:00:00:01": "eni-primary", "00:16:3e:00:00:02": "eni-2"} {
		p := "network/interfaces/macs/" + mac + "/"
		f.tree[p+"network-interface-id"] = id
		f.tree[p+"gateway"] = "198.18.64.1"
		f.tree[p+"vswitch-cidr-block"] = "198.18.64.0/20"
		f.tree[p+"vswitch-id"] = "vsw-a"
		f.tree[p+"primary-ip-address"] = "198.18.64.20"
		f.tree[p+"private-ipv4s"] = `["198.18.64.20","198.18.64.21"]`
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, New(srv.URL)
}

func TestInstance(t *testing.T) {
	f, c := newFake(t)
	f.required = true
	in, err := c.Instance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Instance{ID: "i-1", Type: "ecs.g7.xlarge", RegionID: "cn-hangzhou", ZoneID: "cn-hangzhou-h", VSwitchID: "vsw-a",
		VSwitchCIDR: "198.18.64.0/20", PrimaryMAC: "00:16:3e:00:00:01", PrimaryENIID: "eni-primary", PrimaryIP: "198.18.64.10"}
	if in != want {
		t.Fatalf("instance:\n got %+v\nwant %+v", in, want)
	}
	if f.tokenPuts != 1 {
		t.Fatalf("token PUTs = %d, want 1 (one token serves every GET)", f.tokenPuts)
	}
}

func TestENIAndMACs(t *testing.T) {
	_, c := newFake(t)
	macs, err := c.MACs(context.Background())
	if err != nil || len(macs) != 2 || macs[1] != "00:16:3e:00:00:02" {
		t.Fatalf("MACs = %v, %v", macs, err)
	}
	e, err := c.ENI(context.Background(), "00:16:3E:00:00:02")
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != "eni-2" || e.Gateway != "198.18.64.1" || e.VSwitchCIDR != "198.18.64.0/20" || len(e.IPv4s) != 2 {
		t.Fatalf("ENI = %+v", e)
	}
	_, err = c.ENI(context.Background(), "00:16:3e:00:00:09")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown MAC: %v, want ErrNotFound", err)
	}
}

func TestTokenRenewedOn401(t *testing.T) {
	f, c := newFake(t)
	f.required = true
	if _, err := c.Get(context.Background(), "instance-id"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.valid = map[string]bool{} // the service restarted: every token is invalid
	f.mu.Unlock()
	if v, err := c.Get(context.Background(), "instance-id"); err != nil || v != "i-1" {
		t.Fatalf("after token loss: %q %v", v, err)
	}
	if f.tokenPuts != 2 {
		t.Fatalf("token PUTs = %d, want 2", f.tokenPuts)
	}
}

func TestIMDSv1Fallback(t *testing.T) {
	f, c := newFake(t)
	f.noTokens = true
	for range 3 {
		if v, err := c.Get(context.Background(), "region-id"); err != nil || v != "cn-hangzhou" {
			t.Fatalf("IMDSv1: %q %v", v, err)
		}
	}
	if f.tokenPuts != 0 {
		t.Fatalf("token PUTs = %d", f.tokenPuts)
	}
}

func TestRoleCredentials(t *testing.T) {
	f, c := newFake(t)
	p := NewRoleCredentials(c, "")
	for range 3 {
		cr, err := p.GetCredentials()
		if err != nil {
			t.Fatal(err)
		}
		if cr.AccessKeyId != "STS.id" || cr.AccessKeySecret != "sts-secret" || cr.SecurityToken != "sts-token" || cr.ProviderName != "ecs_ram_role" {
			t.Fatalf("credentials = %+v", cr)
		}
	}
	f.mu.Lock()
	gets := f.gets
	f.mu.Unlock()
	if gets != 2 { // role discovery + one document; then the cache
		t.Fatalf("GETs = %d, want 2", gets)
	}
	// A failing document never shows its content.
	f.mu.Lock()
	f.tree["ram/security-credentials/NodeRole"] = `{"Code":"Failure","AccessKeySecret":"leak-me"}`
	f.mu.Unlock()
	p2 := NewRoleCredentials(c, "NodeRole")
	_, err := p2.GetCredentials()
	if err == nil || strings.Contains(err.Error(), "leak-me") || !strings.Contains(err.Error(), "Failure") {
		t.Fatalf("error = %v", err)
	}
}
