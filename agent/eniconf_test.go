package agent_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// metadataURL serves the emulator's metadata for its one instance, in zone
// cn-hangzhou-h with primary vswitch vsw-emu000000000000000h.
func metadataURL(t *testing.T) string {
	t.Helper()
	e, err := emulator.New(emulator.DefaultWorld())
	if err != nil {
		t.Fatal(err)
	}
	e.SetLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := e.Start("127.0.0.1:0", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e.Info().Metadata
}

// eniConfig is what terwayd builds for the ENI reconciler, without the
// parts that are functions or clients (not comparable).
func eniConfig(t *testing.T, cc *agent.CloudConfig, rc render.Config) eni.Config {
	t.Helper()
	c, err := cc.ENIConfig(context.Background(), rc, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c.Metadata, c.WaitLink, c.Logger = nil, nil, nil
	return c
}

// Terway's documented eni_conf examples (the shape of its own manifest
// terway-multiip.yml, and of ACK's eni-config with tags, service CIDR and
// the selection policy), with this test world's zone, load into the same
// reconciler configuration as the native configuration a user would write.
func TestENIConfTerwayExamplesMeanTheSame(t *testing.T) {
	md := metadataURL(t)
	for _, c := range []struct {
		name, eniConf, cloud, config string
		notApplied                   []string
	}{
		{
			name: "terway manifest",
			eniConf: `{
  "version": "1",
  "access_key": "ak",
  "access_secret": "ak",
  "security_group": "sg-xxx",
  "vswitches": {
    "cn-hangzhou-h": ["vsw-xxx"]
  },
  "max_pool_size": 5,
  "min_pool_size": 0
}`,
			cloud:  "apiVersion: terway/v1\nkind: CloudConfig\naccessKeyID: ak\naccessKeySecret: ak\nsecurityGroupID: sg-xxx\nvswitchIDs: [vsw-xxx]\n",
			config: "mode: eni-multi-ip\nmaxPoolSize: 5\n",
		},
		{
			name: "ack eni-config",
			eniConf: `{
  "version": "1",
  "max_pool_size": 25,
  "min_pool_size": 10,
  "credential_path": "/var/addon/token-config",
  "enable_eni_trunking": false,
  "vswitches": {"cn-hangzhou-h": ["vsw-a", "vsw-b"], "cn-hangzhou-i": ["vsw-c"]},
  "eni_tags": {"ack.aliyun.com": "c0ffee"},
  "service_cidr": "172.21.0.0/20",
  "security_group": "sg-1",
  "ip_stack": "ipv4",
  "vswitch_selection_policy": "ordered"
}`,
			cloud:      "apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroupID: sg-1\nvswitchIDs: [vsw-a, vsw-b]\ntags: {ack.aliyun.com: c0ffee}\n",
			config:     "mode: eni-multi-ip\nserviceCIDR: 172.21.0.0/20\nminPoolSize: 10\nmaxPoolSize: 25\n",
			notApplied: []string{"credential_path", "enable_eni_trunking", "ip_stack"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			mode, err := load.ConfigFile(writeFile(t, "mode.yaml", "mode: eni-multi-ip\n"))
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			cc, rc, err := agent.LoadCloudSources("", writeFile(t, "eni_conf", c.eniConf), *mode, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			cc.Metadata = md
			nativeCC, err := agent.LoadCloudConfig(writeFile(t, "cloud.yaml", c.cloud))
			if err != nil {
				t.Fatal(err)
			}
			nativeCC.Metadata = md
			nativeRC, err := load.ConfigFile(writeFile(t, "config.yaml", c.config))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := rc.WithDefaults(), nativeRC.WithDefaults(); got != want {
				t.Errorf("render config from eni_conf:\n%+v\nnative:\n%+v", got, want)
			}
			got, want := eniConfig(t, cc, rc), eniConfig(t, nativeCC, *nativeRC)
			// DeepEqual sees through eni.Secret: the secrets are compared too.
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ENI reconciler config from eni_conf:\n%#v\nnative:\n%#v", got, want)
			}
			for _, f := range c.notApplied {
				if n := strings.Count(logs.String(), "field="+f+" "); n != 1 {
					t.Errorf("field %s not applied: logged %d times, want once:\n%s", f, n, logs.String())
				}
			}
			if strings.Contains(logs.String(), "field=vswitches") || strings.Contains(logs.String(), "field=security_group ") {
				t.Errorf("an applied field was reported as not applied:\n%s", logs.String())
			}
		})
	}
}

// Each malformed or invalid field is its own error, naming the field.
func TestENIConfBadFields(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{`[1, 2]`, "not a JSON object"},
		{`{"version": "2"}`, "version"},
		{`{"version": 1}`, "version: want a string"},
		{`{"access_key": "ak"}`, "access_key/access_secret"},
		{`{"access_key": "ak", "access_secret": 42}`, "access_secret: want a string, got [redacted]"},
		{`{"max_pool_size": "5"}`, `max_pool_size: want an integer, got "5"`},
		{`{"min_pool_size": 1.5}`, "min_pool_size: want an integer"},
		{`{"min_pool_size": -1}`, "min_pool_size: -1 is negative"},
		{`{"min_pool_size": 6, "max_pool_size": 5}`, "min_pool_size/max_pool_size"},
		{`{"vswitches": ["vsw-a"]}`, "vswitches: want an object of zone to list"},
		{`{"vswitches": {"cn-hangzhou-h": "vsw-a"}}`, "vswitches: want"},
		{`{"vswitches": {"cn-hangzhou-h": ["vsw-a", "vsw-a"]}}`, "vswitches[cn-hangzhou-h][1]"},
		{`{"vswitches": {"": ["vsw-a"]}}`, "vswitches: empty zone"},
		{`{"security_groups": "sg-1"}`, "security_groups: want a list of strings"},
		{`{"security_groups": ["sg-1", ""]}`, "security_groups[1]: empty"},
		{`{"security_groups": ["sg-1", "sg-2"]}`, "2 groups (sg-1, sg-2)"},
		{`{"security_group": "sg-3", "security_groups": ["sg-1"]}`, "2 groups (sg-1, sg-3)"},
		{`{"service_cidr": "172.21.0.0"}`, `service_cidr: "172.21.0.0" is not a CIDR`},
		{`{"service_cidr": "10.0.0.0/16,10.1.0.0/16"}`, "service_cidr: two IPv4 ranges"},
		{`{"eni_tags": {"terway-reconciler.io/owner": "x"}}`, "eni_tags: key"},
		{`{"eni_tags": {"a": 1}}`, "eni_tags: want an object of string to string"},
		{`{"vswitch_selection_policy": "most"}`, `vswitch_selection_policy: "most"`},
	} {
		_, err := agent.ParseENIConf([]byte(c.body))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.body, err, c.want)
		}
	}
	// Without a security group from anywhere, no ENI can be made.
	_, _, err := agent.LoadCloudSources("", writeFile(t, "eni_conf", `{"vswitches": {"z": ["vsw-a"]}}`), render.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "security_group: empty") {
		t.Errorf("no security group: %v", err)
	}
	// A file that cannot be read names the path.
	if _, err := agent.LoadENIConf(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "eni.conf") {
		t.Errorf("missing file: %v", err)
	}
}

// Fields this agent does not apply are read past and reported by name, each
// once, with values that still parse; IPv6 service ranges and the random
// selection policy too.
func TestENIConfNotApplied(t *testing.T) {
	c, err := agent.ParseENIConf([]byte(`{
  "security_group": "sg-1",
  "service_cidr": "192.168.0.0/16,fc00::/112",
  "vswitch_selection_policy": "random",
  "ipam_type": "crd",
  "some_future_field": {"x": 1}
}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range c.NotApplied {
		got = append(got, n.Field)
	}
	want := []string{"ipam_type", "service_cidr", "some_future_field", "vswitch_selection_policy"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("not applied: %v, want %v", got, want)
	}
	if c.ServiceCIDR != "192.168.0.0/16" {
		t.Errorf("service CIDR %q, want the IPv4 part", c.ServiceCIDR)
	}
}

// With both files, terwayd's own settings win field by field, with a log
// line each; eni_conf fills what ours leaves unset.
func TestENIConfPrecedence(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cloud := writeFile(t, "cloud.yaml", "apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroupID: sg-ours\naccessKeyID: id-ours\naccessKeySecret: secret-ours\n")
	eniConf := writeFile(t, "eni_conf", `{"security_group": "sg-terway", "access_key": "id-terway", "access_secret": "secret-terway",
  "vswitches": {"cn-hangzhou-h": ["vsw-terway"]}, "eni_tags": {"k": "v"},
  "service_cidr": "172.21.0.0/20", "min_pool_size": 2, "max_pool_size": 9}`)
	rc := render.Config{Mode: "eni-multi-ip", ServiceCIDR: "10.96.0.0/12", MaxPoolSize: 7}
	cc, rc, err := agent.LoadCloudSources(cloud, eniConf, rc, log)
	if err != nil {
		t.Fatal(err)
	}
	if cc.SecurityGroupID != "sg-ours" || cc.AccessKeyID != "id-ours" || cc.AccessKeySecret != "secret-ours" {
		t.Errorf("ours did not win: %+v", cc)
	}
	if !reflect.DeepEqual(cc.ZoneVSwitchIDs, map[string][]string{"cn-hangzhou-h": {"vsw-terway"}}) || cc.Tags["k"] != "v" {
		t.Errorf("eni_conf did not fill what ours leaves unset: %+v", cc)
	}
	if rc.ServiceCIDR != "10.96.0.0/12" || rc.MaxPoolSize != 7 || rc.MinPoolSize != 2 {
		t.Errorf("render config %+v, want ours (serviceCIDR, maxPoolSize) and eni_conf's minPoolSize", rc)
	}
	for _, f := range []string{"security_group", "access_key/access_secret", "service_cidr", "max_pool_size"} {
		if !strings.Contains(logs.String(), "eniConfField="+f+" ") {
			t.Errorf("no log line for eni_conf's %s overridden:\n%s", f, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "both --cloud-config and --eni-conf given") {
		t.Errorf("no log line for both sources:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "secret-") {
		t.Errorf("a secret reached the log:\n%s", logs.String())
	}
	// Only eni_conf: its values apply.
	cc, _, err = agent.LoadCloudSources("", eniConf, render.Config{}, log)
	if err != nil || cc.SecurityGroupID != "sg-terway" || cc.AccessKeyID != "id-terway" {
		t.Errorf("eni_conf alone: %+v, %v", cc, err)
	}
}
