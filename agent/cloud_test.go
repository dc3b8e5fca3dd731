package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/render"
)

func TestLoadCloudConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "apiVersion: terway/v1\nkind: CloudConfig\nvswitchIDs: [vsw-a, vsw-b]\nsecurityGroupID: sg-1\naccessKeySecret: s3cret\n")
	c, err := agent.LoadCloudConfig(good)
	if err != nil || len(c.VSwitchIDs) != 2 || c.SecurityGroupID != "sg-1" {
		t.Fatalf("good config: %+v, %v", c, err)
	}
	reserved := write("reserved.yaml", "apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroupID: sg-1\nreservedENIsForMultiIP: 2\n")
	if c, err := agent.LoadCloudConfig(reserved); err != nil || c.ReservedENIsForMultiIP == nil || *c.ReservedENIsForMultiIP != 2 {
		t.Fatalf("reservedENIsForMultiIP: %+v, %v", c, err)
	}
	for _, bad := range []struct{ body, want string }{
		{"apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroup: sg-1\n", "securityGroup"},          // a typo is an error, naming the field
		{"apiVersion: terway/v1\nkind: CloudConfig\nvswitchIDs: [vsw-a]\n", "securityGroupID: empty"}, // required
		{"apiVersion: terway/v1\nkind: Config\nsecurityGroupID: sg-1\n", "kind"},
		{"apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroupID: sg-1\nreservedENIsForMultiIP: -1\n", "reservedENIsForMultiIP: -1 is negative"},
	} {
		_, err := agent.LoadCloudConfig(write("bad.yaml", bad.body))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want an error naming %s", bad.body, err, bad.want)
		}
	}
}

// The ENI manifest's cloud and agent configurations load as terwayd reads them.
func TestMultiIPManifestConfigs(t *testing.T) {
	data, err := os.ReadFile("../manifests/terway-multiip.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Kind != "ConfigMap" {
			continue
		}
		p := filepath.Join(t.TempDir(), "cloud.yaml")
		os.WriteFile(p, []byte(cm.Data["cloud.yaml"]), 0o600)
		if _, err := agent.LoadCloudConfig(p); err != nil {
			t.Fatalf("terway-multiip.yml cloud.yaml: %v", err)
		}
		if !strings.Contains(cm.Data["config.yaml"], "mode: eni-multi-ip") {
			t.Fatal("terway-multiip.yml config.yaml is not in eni-multi-ip mode")
		}
		return
	}
	t.Fatal("no ConfigMap in terway-multiip.yml")
}

// The ENI reconciler's reservation and pool per mode: in VPC mode (here
// from Terway's eni_conf alone) it serves exclusive ENIs only, with no warm
// pool and nothing kept for multi-IP pods unless configured; in
// eni-multi-ip mode an unset reservedENIsForMultiIP keeps every secondary
// ENI for multi-IP pods, said in the log.
func TestENIConfigReservationPerMode(t *testing.T) {
	md := metadataURL(t)
	eniConf := writeFile(t, "eni_conf", `{"access_key": "ak", "access_secret": "ak", "security_group": "sg-1", "vswitches": {"cn-hangzhou-h": ["vsw-a"]}, "min_pool_size": 2, "max_pool_size": 5}`)
	for _, c := range []struct {
		name, mode, cloud string
		want              int
		minIdle, maxIdle  int
		log               string
	}{
		{name: "vpc, eni_conf only", mode: "vpc", want: 0},
		{name: "vpc, 1 reserved", mode: "vpc", cloud: "reservedENIsForMultiIP: 1\n", want: 1},
		{name: "eni-multi-ip, unset", mode: "eni-multi-ip", want: eni.AllSlots, minIdle: 2, maxIdle: 5, log: "reservedENIsForMultiIP unset: every secondary ENI is kept for multi-IP pods"},
		{name: "eni-multi-ip, 1 reserved", mode: "eni-multi-ip", cloud: "reservedENIsForMultiIP: 1\n", want: 1, minIdle: 2, maxIdle: 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			cloud := ""
			if c.cloud != "" {
				cloud = writeFile(t, "cloud.yaml", "apiVersion: terway/v1\nkind: CloudConfig\nsecurityGroupID: sg-1\n"+c.cloud)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			cc, rc, err := agent.LoadCloudSources(cloud, eniConf, render.Config{Mode: c.mode}, log)
			if err != nil || cc == nil {
				t.Fatalf("LoadCloudSources: %+v, %v", cc, err)
			}
			cc.Metadata = md
			ec, err := cc.ENIConfig(context.Background(), rc, log)
			if err != nil {
				t.Fatal(err)
			}
			if ec.ReservedShared == nil || *ec.ReservedShared != c.want || ec.MinIdle != c.minIdle || ec.MaxIdle != c.maxIdle {
				t.Errorf("reservedShared %v, pool %d-%d; want %d, pool %d-%d", ptrString(ec.ReservedShared), ec.MinIdle, ec.MaxIdle, c.want, c.minIdle, c.maxIdle)
			}
			if c.log != "" && strings.Count(logs.String(), c.log) != 1 {
				t.Errorf("the log does not say once %q:\n%s", c.log, logs.String())
			}
		})
	}
}

func ptrString(p *int) string {
	if p == nil {
		return "nil"
	}
	return strconv.Itoa(*p)
}
