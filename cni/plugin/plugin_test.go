package plugin

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cni/wire"
)

func TestRunTurnsPanicIntoCNIError(t *testing.T) {
	var out bytes.Buffer
	p := &Plugin{Stdout: &out}
	err := p.Run(wire.CmdAdd, nil) // a nil invocation: the plugin's own bug
	var ce *wire.Error
	if !errors.As(err, &ce) || ce.Code != wire.ErrInternal || !strings.Contains(ce.Details, "nil pointer") {
		t.Fatalf("got %v, want code 999 with the panic in details", err)
	}
}

func TestAddRefusesThePluginsOwnNetns(t *testing.T) {
	args := &Args{
		ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0",
		Args:      "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"n","type":"terway","socket":"/nonexistent/t.sock"}`),
	}
	err := (&Plugin{}).Run(wire.CmdAdd, args)
	var ce *wire.Error
	if !errors.As(err, &ce) || ce.Code != wire.ErrInvalidNetNS {
		t.Fatalf("got %v, want code 8 before any call to the agent", err)
	}
	// CNI_NETNS_OVERRIDE lets it through to the agent (unreachable here).
	args.NetnsOverride = "true"
	err = (&Plugin{}).Run(wire.CmdAdd, args)
	if !errors.As(err, &ce) || ce.Code != wire.ErrTryAgainLater {
		t.Fatalf("with the override: got %v, want code 11 from the unreachable agent", err)
	}
}

func TestCheckInvocation(t *testing.T) {
	env := map[string]string{"CNI_CONTAINERID": "c1", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		cmd     wire.Command
		version string
		drop    string
		code    uint
		want    string
	}{
		{wire.CmdAdd, "1.1.0", "", 0, ""},
		{wire.CmdDel, "0.4.0", "CNI_NETNS", 0, ""},
		{wire.CmdAdd, "1.1.0", "CNI_NETNS", 4, "CNI_NETNS"},
		{wire.CmdDel, "1.1.0", "CNI_PATH", 4, "CNI_PATH"},
		{wire.CmdStatus, "1.1.0", "CNI_CONTAINERID", 0, ""},
		{"FROB", "1.1.0", "", 4, "FROB"},
		{wire.CmdAdd, "0.3.1", "", 1, "incompatible"},
		{wire.CmdAdd, "2.0.0", "", 1, "incompatible"},
		{wire.CmdGC, "1.0.0", "", 1, "does not allow GC"},
		{wire.CmdStatus, "0.4.0", "", 1, "does not allow STATUS"},
		{wire.CmdCheck, "0.4.0", "", 0, ""},
	} {
		get := func(k string) string {
			if k == tc.drop {
				return ""
			}
			return getenv(k)
		}
		e := checkInvocation(tc.cmd, get, tc.version)
		if tc.code == 0 {
			if e != nil {
				t.Errorf("%s %s without %s: %v", tc.cmd, tc.version, tc.drop, e)
			}
			continue
		}
		if e == nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%s %s without %s: got %v, want code %d with %q", tc.cmd, tc.version, tc.drop, e, tc.code, tc.want)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"0.4.0", "1.1.0", true}, {"1.0.0", "1.1.0", true}, {"1.1.0", "1.1.0", false},
		{"1.10.0", "1.9.0", false}, {"1.1", "1.1.0", true},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.less {
			t.Errorf("versionLess(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}

func TestRunWithoutCommandOrForVersion(t *testing.T) {
	var out, errb bytes.Buffer
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if code := run(context.Background(), getenv, strings.NewReader(""), &out, &errb); code != 0 || out.Len() != 0 ||
		!strings.Contains(errb.String(), "CNI plugin terway") {
		t.Errorf("no command: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	env["CNI_COMMAND"] = "VERSION"
	out.Reset()
	if code := run(context.Background(), getenv, strings.NewReader("garbage"), &out, &errb); code != 0 ||
		out.String() != `{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}`+"\n" {
		t.Errorf("VERSION: exit %d, stdout %q", code, out.String())
	}
}

func TestPrintable(t *testing.T) {
	result := []byte(`{"cniVersion":"1.1.0","ips":[{"address":"198.18.0.7/32"}]}`)
	out, e := printable(&wire.Response{Result: result, Output: []byte(`{"cniVersion":"0.4.0","ips":[{"version":"4","address":"198.18.0.7/32"}]}`)}, "0.4.0", "c1")
	if e != nil || !strings.Contains(string(out), "\n    \"ips\": [") || !strings.Contains(string(out), `"version": "4"`) {
		t.Errorf("output: %s, %v", out, e)
	}
	// An older agent sends no output: 1.0.0 is the same form, relabelled;
	// 0.4.0 is not.
	out, e = printable(&wire.Response{Result: result}, "1.0.0", "c1")
	if e != nil || !strings.Contains(string(out), `"cniVersion": "1.0.0"`) {
		t.Errorf("relabelled: %s, %v", out, e)
	}
	if _, e := printable(&wire.Response{Result: result}, "0.4.0", "c1"); e == nil || !strings.Contains(e.Details, "upgrade terwayd") {
		t.Errorf("0.4.0 from an older agent: %v", e)
	}
}
