package eni_test

import (
	"context"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cloud/eni"
)

// RAM role credentials come from the configured metadata service (the
// SDK's own provider would ask 100.100.100.200).
func TestRAMRoleCredentials(t *testing.T) {
	t.Setenv(eni.EnvAccessKeyID, "")
	t.Setenv(eni.EnvAccessKeySecret, "")
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	cfg.Credentials = eni.Credentials{}
	r := start(t, cfg, nil)
	allocate(t, r, "pod", 2, 1)
}

// A wrong secret fails Start with the cloud's code, and neither the secret
// nor the string the cloud signed (access key id, token) is in the error.
func TestBadSecretNeverPrinted(t *testing.T) {
	e := startEmulator(t, nil)
	cfg := e.config(0, 0)
	cfg.Credentials.AccessKeySecret = "wrong-secret-value"
	r, err := eni.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Start(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "SignatureDoesNotMatch") {
		t.Fatalf("Start with a wrong secret: %v", err)
	}
	for _, s := range []string{"wrong-secret-value", e.info.AccessKeySecret, e.info.AccessKeyID} {
		if strings.Contains(err.Error(), s) {
			t.Fatalf("error shows a credential: %v", err)
		}
	}
	t.Logf("error: %v", err)
}

// Configured vswitches the cloud does not know, or in another zone than
// the instance, are refused at Start, naming the field and the vswitch.
func TestBadVSwitchRefusedAtStart(t *testing.T) {
	e := startEmulator(t, nil)
	for _, tt := range []struct{ vsw, want string }{
		{"vsw-nosuch", "vswitchIDs: vswitch vsw-nosuch: not found"},
		{"vsw-emu000000000000000i", "vswitchIDs: vswitch vsw-emu000000000000000i: in zone cn-hangzhou-i"},
	} {
		cfg := e.config(0, 0)
		cfg.VSwitchIDs = []string{tt.vsw}
		r, err := eni.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Start(context.Background(), nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Start with vswitch %s: %v, want %q", tt.vsw, err, tt.want)
		}
	}
}
