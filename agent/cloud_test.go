package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/agent"
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
