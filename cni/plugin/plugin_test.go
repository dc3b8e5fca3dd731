package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/terway-reconciler/terway/cni/server"
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

func TestCheckEnvAndVersion(t *testing.T) {
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
		e := checkEnv(tc.cmd, get)
		if e == nil {
			e = checkVersion(tc.cmd, tc.version)
		}
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
	// An older agent sends no output: the plugin converts.
	out, e = printable(&wire.Response{Result: result}, "1.0.0", "c1")
	if e != nil || !strings.Contains(string(out), `"cniVersion": "1.0.0"`) {
		t.Errorf("relabelled: %s, %v", out, e)
	}
	if _, e := printable(&wire.Response{Result: result}, "0.3.1", "c1"); e == nil || !strings.Contains(e.Details, "upgrade terwayd") {
		t.Errorf("0.3.1 from an older agent: %v", e)
	}
}

// TestFromResultVersionIsTheLibrarys: the plugin's conversion for an older
// agent gives what the agent's (the CNI library's) gives.
func TestFromResultVersionIsTheLibrarys(t *testing.T) {
	result := `{"cniVersion":"1.1.0",` +
		`"interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1500,"sandbox":"/var/run/netns/p","socketPath":"/s","pciID":"0000:00:01.0"},{"name":"veth1"}],` +
		`"ips":[{"interface":0,"address":"198.18.0.7/32","gateway":"169.254.1.1"},{"address":"fd00::7/128"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1","mtu":1400,"advmss":1360,"priority":5,"table":100,"scope":0}],` +
		`"dns":{"nameservers":["198.18.255.10"],"search":["svc.cluster.local"]}}`
	for _, version := range SupportedVersions {
		var lib types100.Result
		if err := json.Unmarshal([]byte(result), &lib); err != nil {
			t.Fatal(err)
		}
		conv, err := lib.GetAsVersion(version)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(conv)
		got, err := fromResultVersion([]byte(result), version)
		if err != nil {
			t.Fatalf("%s: %v", version, err)
		}
		var g, w any
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %s\nwant %s", version, got, want)
		}
	}
}

// TestDelWithoutPrevResultForAnOlderAgent: an agent older than the plugin
// decodes the prevResult itself and refuses a DEL it cannot decode (code
// 6); the plugin asks again without it.
func TestDelWithoutPrevResultForAnOlderAgent(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := server.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var calls []wire.Request
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req wire.Request
		_ = json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		calls = append(calls, req)
		mu.Unlock()
		if req.PrevResult != nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"code":6,"msg":"terway agent: DEL: request body is not a valid request: invalid CIDR address"}}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	stdin := fmt.Sprintf(`{"cniVersion":"0.4.0","name":"n","type":"terway","socket":%q,"prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"198.18.0.5"}]}}`, sock)
	err = (&Plugin{}).Run(wire.CmdDel, &Args{ContainerID: "c1", IfName: "eth0", Path: "/opt/cni/bin", StdinData: []byte(stdin)})
	if err != nil {
		t.Fatalf("DEL: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || calls[0].PrevResult == nil || calls[1].PrevResult != nil {
		t.Fatalf("the agent saw %d calls; want the DEL with its prevResult, then without", len(calls))
	}
}
