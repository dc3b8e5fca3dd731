package emulator

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk"
	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/auth/credentials"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
)

var plainHTTP = &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 5 * time.Second}

// imds does one metadata request; token "" sends none.
func imds(t *testing.T, v *env, method, path, token string, headers ...string) (int, string) {
	t.Helper()
	r, err := http.NewRequest(method, v.info.Metadata+path, nil)
	must(t, err)
	if token != "" {
		r.Header.Set("X-aliyun-ecs-metadata-token", token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Header.Set(headers[i], headers[i+1])
	}
	resp, err := plainHTTP.Do(r)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func meta(t *testing.T, v *env, path string) string {
	t.Helper()
	status, body := imds(t, v, "GET", "/latest/meta-data/"+path, "")
	if status != 200 {
		t.Fatalf("GET meta-data/%s: %d %s", path, status, body)
	}
	return body
}

func TestMetadata(t *testing.T) {
	v := start(t, nil)
	w := DefaultWorld()
	primary := v.e.Dump().ENIs[0]
	for path, want := range map[string]string{
		"instance-id":              v.info.InstanceID,
		"region-id":                "cn-hangzhou",
		"zone-id":                  "cn-hangzhou-h",
		"instance/instance-type":   "ecs.emu.xlarge",
		"vpc-id":                   w.VPC.ID,
		"vpc-cidr-block":           "198.18.0.0/15",
		"vswitch-id":               w.VSwitches[0].ID,
		"vswitch-cidr-block":       "198.18.64.0/20",
		"mac":                      primary.MAC,
		"private-ipv4":             primary.PrimaryIP,
		"network/interfaces/macs/": primary.MAC + "/",
	} {
		if got := meta(t, v, path); got != want {
			t.Errorf("meta-data/%s: got %q, want %q", path, got, want)
		}
	}
	if status, _ := imds(t, v, "GET", "/latest/meta-data/no-such-thing", ""); status != 404 {
		t.Errorf("unknown path: got %d, want 404", status)
	}
	if got := meta(t, v, ""); !strings.Contains(got, "network/\n") || strings.HasSuffix(got, "\n") {
		t.Errorf("meta-data/ listing: %q", got)
	}

	// An ENI shows up in macs/ only once attached, with its IPs.
	created := v.create(t, 2)
	if got := meta(t, v, "network/interfaces/macs/"); strings.Contains(got, created.MacAddress) {
		t.Fatalf("unattached ENI listed in macs/: %q", got)
	}
	v.attach(t, created.NetworkInterfaceId)
	if got := meta(t, v, "network/interfaces/macs/"); got != primary.MAC+"/\n"+created.MacAddress+"/" {
		t.Errorf("macs/ after attach: %q", got)
	}
	base := "network/interfaces/macs/" + created.MacAddress + "/"
	for key, want := range map[string]string{
		"network-interface-id": created.NetworkInterfaceId,
		"primary-ip-address":   created.PrivateIpAddress,
		"gateway":              "198.18.64.1",
		"netmask":              "255.255.240.0",
		"vswitch-id":           w.VSwitches[0].ID,
		"vswitch-cidr-block":   "198.18.64.0/20",
		"vpc-cidr-block":       "198.18.0.0/15",
	} {
		if got := meta(t, v, base+key); got != want {
			t.Errorf("%s%s: got %q, want %q", base, key, got, want)
		}
	}
	var ips []string
	if err := json.Unmarshal([]byte(meta(t, v, base+"private-ipv4s")), &ips); err != nil || len(ips) != 3 || ips[0] != created.PrivateIpAddress {
		t.Errorf("private-ipv4s: %v %v", ips, err)
	}
	if status, _ := imds(t, v, "GET", "/latest/meta-data/"+base+"ipv6s", ""); status != 404 {
		t.Errorf("ipv6s of an ENI without IPv6: got %d, want 404", status)
	}

	// Assigned IPs appear after the metadata lag, unassigned ones go at once.
	v.e.SetMetadataLag(200 * time.Millisecond)
	resp, err := v.assign(created.NetworkInterfaceId, 1)
	must(t, err)
	added := resp.AssignedPrivateIpAddressesSet.PrivateIpSet.PrivateIpAddress[0]
	if got := meta(t, v, base+"private-ipv4s"); strings.Contains(got, added) {
		t.Errorf("IP visible before the metadata lag: %s", got)
	}
	time.Sleep(250 * time.Millisecond)
	if got := meta(t, v, base+"private-ipv4s"); !strings.Contains(got, `"`+added+`"`) {
		t.Errorf("IP not visible after the metadata lag: %s", got)
	}
	un := ecs.CreateUnassignPrivateIpAddressesRequest()
	un.NetworkInterfaceId, un.PrivateIpAddress = created.NetworkInterfaceId, &[]string{added}
	_, err = v.ecs.UnassignPrivateIpAddresses(un)
	must(t, err)
	if got := meta(t, v, base+"private-ipv4s"); strings.Contains(got, added) {
		t.Errorf("unassigned IP still listed: %s", got)
	}

	// The other prefix works too.
	if status, body := imds(t, v, "GET", "/2016-01-01/meta-data/instance-id", ""); status != 200 || body != v.info.InstanceID {
		t.Errorf("2016-01-01 prefix: %d %q", status, body)
	}
}

func TestMetadataIMDSv2(t *testing.T) {
	w := DefaultWorld()
	w.Instances[0].HTTPTokens = "required"
	v := start(t, w)
	ttl := "X-aliyun-ecs-metadata-token-ttl-seconds"

	if status, _ := imds(t, v, "GET", "/latest/meta-data/instance-id", ""); status != 401 {
		t.Errorf("tokenless GET with tokens required: got %d, want 401", status)
	}
	if status, _ := imds(t, v, "PUT", "/latest/api/token", ""); status != 400 {
		t.Errorf("PUT token without TTL: got %d, want 400", status)
	}
	if status, _ := imds(t, v, "PUT", "/latest/api/token", "", ttl, "21601"); status != 400 {
		t.Errorf("PUT token with TTL 21601: got %d, want 400", status)
	}
	if status, _ := imds(t, v, "PUT", "/latest/api/token", "", ttl, "60", "X-Forwarded-For", "10.0.0.1"); status != 403 {
		t.Errorf("PUT token with X-Forwarded-For: got %d, want 403", status)
	}
	status, token := imds(t, v, "PUT", "/latest/api/token", "", ttl, "60")
	if status != 200 || token == "" {
		t.Fatalf("PUT token: %d %q", status, token)
	}
	if status, body := imds(t, v, "GET", "/latest/meta-data/instance-id", token); status != 200 || body != v.info.InstanceID {
		t.Errorf("GET with token: %d %q", status, body)
	}
	if status, _ := imds(t, v, "GET", "/latest/meta-data/instance-id", "bogus"); status != 401 {
		t.Errorf("GET with a bogus token: got %d, want 401", status)
	}
	_, short := imds(t, v, "PUT", "/latest/api/token", "", ttl, "1")
	time.Sleep(1100 * time.Millisecond)
	if status, _ := imds(t, v, "GET", "/latest/meta-data/instance-id", short); status != 401 {
		t.Errorf("GET with an expired token: got %d, want 401", status)
	}
}

// The RAM role's STS credentials from the metadata service sign API calls:
// by hand, and through the SDK's own URL credentials provider.
func TestMetadataRAMRoleCredentials(t *testing.T) {
	v := start(t, nil)
	role := DefaultWorld().RAMRole
	if got := meta(t, v, "ram/security-credentials/"); got != role {
		t.Fatalf("ram/security-credentials/: got %q, want %q", got, role)
	}
	var creds struct{ AccessKeyId, AccessKeySecret, SecurityToken, Expiration, LastUpdated, Code string }
	must(t, json.Unmarshal([]byte(meta(t, v, "ram/security-credentials/"+role)), &creds))
	if creds.Code != "Success" || !strings.HasPrefix(creds.AccessKeyId, "STS.") || creds.SecurityToken == "" {
		t.Fatalf("role credentials: %+v", creds)
	}
	if exp, err := time.Parse("2006-01-02T15:04:05Z", creds.Expiration); err != nil || time.Until(exp) < time.Hour {
		t.Errorf("Expiration %q: %v", creds.Expiration, err)
	}

	c, err := ecs.NewClientWithStsToken(v.info.RegionID, creds.AccessKeyId, creds.AccessKeySecret, creds.SecurityToken)
	must(t, err)
	pointAt(c, v.info)
	req := ecs.CreateDescribeInstanceAttributeRequest()
	req.InstanceId = v.info.InstanceID
	_, err = c.DescribeInstanceAttribute(req)
	must(t, err)

	bad, err := ecs.NewClientWithStsToken(v.info.RegionID, creds.AccessKeyId, creds.AccessKeySecret, "other-token")
	must(t, err)
	pointAt(bad, v.info)
	req = ecs.CreateDescribeInstanceAttributeRequest()
	req.InstanceId = v.info.InstanceID
	_, err = bad.DescribeInstanceAttribute(req)
	wantCode(t, err, "InvalidSecurityToken.MismatchWithAccessKey", 400)

	provider, err := credentials.NewURLCredentialsProviderBuilderBuilder().
		WithUrl(v.info.Metadata + "/latest/meta-data/ram/security-credentials/" + role).Build()
	must(t, err)
	viaSDK, err := ecs.NewClientWithOptions(v.info.RegionID, sdk.NewConfig(), provider)
	must(t, err)
	pointAt(viaSDK, v.info)
	req = ecs.CreateDescribeInstanceAttributeRequest()
	req.InstanceId = v.info.InstanceID
	_, err = viaSDK.DescribeInstanceAttribute(req)
	must(t, err)
}

type recordingHook struct {
	t  *testing.T
	e  *Emulator
	mu sync.Mutex
	// events are "attach <eni> <status-while-hook-runs>" / "detach <eni>".
	events []string
	fail   error
}

func (h *recordingHook) ENIAttached(instanceID string, eni ENIInfo) error {
	n, _ := h.e.Dump().ENI(eni.ID)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, "attach "+eni.ID+" "+n.Status+" "+instanceID)
	if eni.GatewayIP != "198.18.64.1" || eni.VSwitchCIDR != "198.18.64.0/20" || eni.DeviceIndex != 1 || !strings.HasPrefix(eni.MAC, "00:16:3e:") {
		h.t.Errorf("hook got %+v", eni)
	}
	return h.fail
}

func (h *recordingHook) ENIDetached(instanceID string, eni ENIInfo) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, "detach "+eni.ID)
	return nil
}

func TestHook(t *testing.T) {
	v := start(t, nil)
	h := &recordingHook{t: t, e: v.e}
	v.e.SetHook(h)
	id := v.create(t, 1).NetworkInterfaceId
	v.attach(t, id)
	det := ecs.CreateDetachNetworkInterfaceRequest()
	det.NetworkInterfaceId, det.InstanceId = id, v.info.InstanceID
	_, err := v.ecs.DetachNetworkInterface(det)
	must(t, err)
	v.waitStatus(t, id, "Available")
	h.mu.Lock()
	got := slices.Clone(h.events)
	h.mu.Unlock()
	want := []string{"attach " + id + " Attaching " + v.info.InstanceID, "detach " + id}
	if !slices.Equal(got, want) {
		t.Errorf("hook events: got %q, want %q", got, want)
	}

	// A failing hook fails the attach: the ENI is Available again.
	h.mu.Lock()
	h.fail = errors.New("no room on the node")
	h.mu.Unlock()
	att := ecs.CreateAttachNetworkInterfaceRequest()
	att.NetworkInterfaceId, att.InstanceId = id, v.info.InstanceID
	_, err = v.ecs.AttachNetworkInterface(att)
	must(t, err)
	time.Sleep(testAttach + 100*time.Millisecond)
	if n := v.waitStatus(t, id, "Available"); n.InstanceId != "" {
		t.Errorf("failed attach left instance %q", n.InstanceId)
	}
}

func TestAdminDump(t *testing.T) {
	v := start(t, nil)
	v.create(t, 1)
	resp, err := plainHTTP.Get("http://" + v.info.Endpoint + "/__emulator/dump")
	must(t, err)
	defer resp.Body.Close()
	var d Dump
	must(t, json.NewDecoder(resp.Body).Decode(&d))
	if len(d.ENIs) != 2 || len(d.Instances) != 1 || len(d.VSwitches) != 2 || d.Calls["CreateNetworkInterface"] != 1 {
		t.Errorf("dump: %+v", d)
	}
	if d.ENIs[1].Status != "Available" || len(d.ENIs[1].IPs) != 1 {
		t.Errorf("dump ENI: %+v", d.ENIs[1])
	}
}
