package eni

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cloud/metadata"
)

func validConfig() Config {
	return Config{
		RegionID: "cn-hangzhou", InstanceID: "i-1", VSwitchIDs: []string{"vsw-a"}, SecurityGroupID: "sg-1",
		MaxIdle: 5, Metadata: metadata.New("http://127.0.0.1:1"),
		Credentials: Credentials{AccessKeyID: "LTAIkeyid", AccessKeySecret: "topsecret-value"},
	}
}

func TestSecretNeverPrints(t *testing.T) {
	cfg := validConfig().WithDefaults()
	cfg.Credentials.SecurityToken = "sts-token-value"
	var buf bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		fmt.Fprintf(&buf, verb+"\n", cfg.Credentials)
		fmt.Fprintf(&buf, verb+"\n", cfg.Credentials.AccessKeySecret)
	}
	js, _ := json.Marshal(cfg.Credentials)
	buf.Write(js)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "credentials", cfg.Credentials, "secret", cfg.Credentials.AccessKeySecret)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "secret", cfg.Credentials.SecurityToken)
	out := buf.String()
	for _, s := range []string{"topsecret-value", "sts-token-value", "746f70"} {
		if strings.Contains(out, s) {
			t.Fatalf("a secret printed:\n%s", out)
		}
	}
	if cfg.Credentials.AccessKeySecret.Reveal() != "topsecret-value" {
		t.Fatal("Reveal lost the value")
	}
}

func TestCredentialsFromEnvironment(t *testing.T) {
	t.Setenv(EnvAccessKeyID, "LTAIenv")
	t.Setenv(EnvAccessKeySecret, "env-secret")
	t.Setenv(EnvECSEndpoint, "127.0.0.1:9999")
	cfg := validConfig()
	cfg.Credentials = Credentials{}
	cfg = cfg.WithDefaults()
	if cfg.Credentials.AccessKeyID != "LTAIenv" || cfg.Credentials.AccessKeySecret.Reveal() != "env-secret" || cfg.ECSEndpoint != "127.0.0.1:9999" {
		t.Fatalf("environment not read: %+v %s", cfg.Credentials, cfg.ECSEndpoint)
	}
	cfg = validConfig().WithDefaults()
	if cfg.Credentials.AccessKeyID != "LTAIkeyid" {
		t.Fatalf("the configuration's key must win over the environment: %s", cfg.Credentials.AccessKeyID)
	}
	if src := cfg.credentialSource(); src != "access key" {
		t.Fatalf("source = %q", src)
	}
}

func TestCredentialsFallBackToRAMRole(t *testing.T) {
	t.Setenv(EnvAccessKeyID, "")
	t.Setenv(EnvAccessKeySecret, "")
	cfg := validConfig()
	cfg.Credentials = Credentials{RAMRole: "NodeRole"}
	cfg = cfg.WithDefaults()
	p, err := credentialsProvider(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*metadata.RoleCredentials); !ok || cfg.credentialSource() != "ram role NodeRole via metadata" {
		t.Fatalf("provider %T, source %q", p, cfg.credentialSource())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().WithDefaults().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	tests := []struct {
		field string
		edit  func(*Config)
	}{
		{"regionID", func(c *Config) { c.RegionID = "" }},
		{"instanceID", func(c *Config) { c.InstanceID = "" }},
		{"vswitchIDs", func(c *Config) { c.VSwitchIDs = nil }},
		{"vswitchIDs[1]", func(c *Config) { c.VSwitchIDs = []string{"vsw-a", "vsw-a"} }},
		{"securityGroupID", func(c *Config) { c.SecurityGroupID = "" }},
		{"minIdle/maxIdle", func(c *Config) { c.MinIdle, c.MaxIdle = 6, 5 }},
		{"metadata", func(c *Config) { c.Metadata = nil }},
		{"limits", func(c *Config) { c.Limits = Limits{MaxENIs: 4} }},
		{"tags", func(c *Config) { c.Tags = map[string]string{TagOwner: "x"} }},
		{"credentials", func(c *Config) { c.Credentials = Credentials{AccessKeyID: "LTAI"} }},
		{"ecsEndpoint", func(c *Config) { c.ECSEndpoint = "ftp://x" }},
		{"vpcEndpoint", func(c *Config) { c.VPCEndpoint = "http://x/path" }},
	}
	for _, tt := range tests {
		c := validConfig().WithDefaults()
		tt.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.field) {
			t.Errorf("%s: error %v does not name the field", tt.field, err)
		}
	}
}

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in, host, scheme string
		bad              bool
	}{
		{"", "", "HTTPS", false},
		{"127.0.0.1:8080", "127.0.0.1:8080", "HTTP", false},
		{"localhost:8080", "localhost:8080", "HTTP", false},
		{"[::1]:8080", "[::1]:8080", "HTTP", false},
		{"ecs-vpc.cn-hangzhou.aliyuncs.com", "ecs-vpc.cn-hangzhou.aliyuncs.com", "HTTPS", false},
		{"http://10.0.0.1:80", "10.0.0.1:80", "HTTP", false},
		{"https://127.0.0.1:443/", "127.0.0.1:443", "HTTPS", false},
		{"ftp://x", "", "", true},
		{"http://x/path", "", "", true},
		{"x/y", "", "", true},
	}
	for _, tt := range tests {
		host, scheme, err := parseEndpoint(tt.in)
		if (err != nil) != tt.bad || host != tt.host || scheme != tt.scheme {
			t.Errorf("parseEndpoint(%q) = %q %q %v", tt.in, host, scheme, err)
		}
	}
}
