package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
)

func TestCheckStdin(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code uint
		want string
	}{
		{``, 6, "no network config"},
		{"  \n", 6, "no network config"},
		{"\x00\x01garbage", 6, "not a JSON object"},
		{`[1,2]`, 6, "not a JSON object"},
		{`{"name":"n"`, 6, "not a JSON object"},
		{`{"name":"n","type":"terway"}`, 7, `"cniVersion" is missing`},
		{`{"cniVersion":null,"name":"n"}`, 7, `"cniVersion" is missing`},
		{`{"cniVersion":1,"name":"n"}`, 7, `"cniVersion" is not a string`},
		{`{"cniVersion":"1.1.0","type":"terway"}`, 7, `"name" is missing`},
		{`{"cniVersion":"1.1.0","name":"n"}`, 0, ""},
	} {
		_, e := CheckStdin([]byte(tc.in))
		if tc.code == 0 {
			if e != nil {
				t.Errorf("%q: %v", tc.in, e)
			}
			continue
		}
		if e == nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%q: got %v, want code %d with %q", tc.in, e, tc.code, tc.want)
		}
	}
}

const prev040 = `{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/n"}],` +
	`"ips":[{"version":"4","address":"198.18.0.7/32","gateway":"169.254.1.1","interface":0}]}`

func TestParseConf(t *testing.T) {
	base := `"cniVersion":"0.4.0","name":"terway","type":"terway"`
	for _, tc := range []struct {
		name string
		cmd  wire.Command
		in   string
		code uint
		want string
	}{
		{"minimal", wire.CmdAdd, `{` + base + `}`, 0, ""},
		{"no type", wire.CmdAdd, `{"cniVersion":"1.1.0","name":"n"}`, 7, `"type" is missing`},
		{"version not spoken", wire.CmdAdd, `{"cniVersion":"0.3.1","name":"n","type":"terway"}`, 1, "incompatible"},
		{"version without GC", wire.CmdGC, `{"cniVersion":"1.0.0","name":"n","type":"terway","cni.dev/valid-attachments":[]}`, 1, "does not allow GC"},
		{"bad name", wire.CmdAdd, `{"cniVersion":"1.1.0","name":"a b","type":"terway"}`, 7, `"name"`},
		{"socket not string", wire.CmdAdd, `{` + base + `,"socket":5}`, 6, `field "socket"`},
		{"socket relative", wire.CmdAdd, `{` + base + `,"socket":"run/t.sock"}`, 7, `"socket"`},
		{"timeout number", wire.CmdAdd, `{` + base + `,"timeout":30}`, 7, `field "timeout"`},
		{"timeout garbage", wire.CmdAdd, `{` + base + `,"timeout":"soon"}`, 7, `field "timeout"`},
		{"timeout negative", wire.CmdAdd, `{` + base + `,"timeout":"-1s"}`, 7, `"timeout"`},
		{"capabilities wrong", wire.CmdAdd, `{` + base + `,"capabilities":[1]}`, 6, `field "capabilities"`},
		{"check prev ok", wire.CmdCheck, `{` + base + `,"prevResult":` + prev040 + `}`, 0, ""},
		{"check prev not an object", wire.CmdCheck, `{` + base + `,"prevResult":[1]}`, 6, `"prevResult"`},
		{"del prev not an object is ignored", wire.CmdDel, `{` + base + `,"prevResult":"x"}`, 0, ""},
		// Whether a prevResult is a usable result is the agent's to say
		// (cni/server converts it).
		{"check prev broken", wire.CmdCheck, `{` + base + `,"prevResult":{"ips":[{"address":"nope"}]}}`, 0, ""},
		{"gc list", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway","cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`, 0, ""},
		{"gc legacy key", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway","cni.dev/attachments":[]}`, 0, ""},
		{"gc null list", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway","cni.dev/valid-attachments":null}`, 0, ""},
		{"gc no list", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway"}`, 7, `"cni.dev/valid-attachments" is missing`},
		{"gc bad list", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway","cni.dev/valid-attachments":{}}`, 6, `"cni.dev/valid-attachments"`},
		{"gc empty item", wire.CmdGC, `{"cniVersion":"1.1.0","name":"n","type":"terway","cni.dev/valid-attachments":[{"containerID":"c1"}]}`, 7, "item 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, e := ParseConf(tc.cmd, []byte(tc.in))
			if tc.code != 0 {
				if e == nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
					t.Fatalf("got %v, want code %d with %q", e, tc.code, tc.want)
				}
				return
			}
			if e != nil {
				t.Fatal(e)
			}
			if string(c.NetConf.Raw) != tc.in {
				t.Errorf("Raw = %s", c.NetConf.Raw)
			}
			if tc.cmd == wire.CmdGC && c.ValidAttachments == nil {
				t.Error("GC list is nil")
			}
		})
	}
}

// TestCheckPrevResultReachesTheAgentConverted: the plugin sends the
// prevResult as written in 0.4.0; the agent's decoder hands it on in 1.1.0.
func TestCheckPrevResultReachesTheAgentConverted(t *testing.T) {
	stdin := `{"cniVersion":"0.4.0","name":"n","type":"terway","prevResult":` + prev040 + `}`
	_, req, err := buildRequest(wire.CmdCheck, &Args{ContainerID: "c1", Netns: "/var/run/netns/p", IfName: "eth0", StdinData: []byte(stdin)})
	if err != nil {
		t.Fatal(err)
	}
	if string(req.PrevResult) != prev040 {
		t.Errorf("prevResult sent as %s, want it as written", req.PrevResult)
	}
	body, _ := json.Marshal(req)
	got, e := server.DecodeRequest(httptest.NewRequest("POST", wire.CmdCheck.Path(), bytes.NewReader(body)))
	if e != nil {
		t.Fatal(e)
	}
	res, err := server.PrevResult(got)
	if err != nil || res.CNIVersion != wire.ResultVersion || res.IPs[0].Address.String() != "198.18.0.7/32" {
		t.Fatalf("the agent sees prevResult %+v, %v", res, err)
	}
}

// TestDelWithAddresslessPrevResultReachesTheAgent: a prevResult IP without
// an address converted fine but encoded as "<nil>", so the agent refused the
// whole DEL as undecodable and the runtime retried it forever (found by
// FuzzBuildRequest). DEL now goes without the broken prevResult.
func TestDelWithAddresslessPrevResultReachesTheAgent(t *testing.T) {
	stdin := `{"cniVersion":"1.1.0","name":"n","type":"terway","prevResult":{"cniVersion":"1.1.0","ips":[{"gateway":"169.254.1.1"}]}}`
	_, req, err := buildRequest(wire.CmdDel, &Args{ContainerID: "c1", Netns: "/var/run/netns/p", IfName: "eth0", StdinData: []byte(stdin)})
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	got, e := server.DecodeRequest(httptest.NewRequest("POST", wire.CmdDel.Path(), bytes.NewReader(body)))
	if e != nil {
		t.Fatalf("the agent refuses the DEL: %v\n%s", e, body)
	}
	if got.PrevResult != nil {
		t.Errorf("the agent's handler sees the broken prevResult %s", got.PrevResult)
	}
}

func TestTimeouts(t *testing.T) {
	c, _ := ParseConf(wire.CmdAdd, []byte(`{"cniVersion":"1.1.0","name":"n","type":"terway"}`))
	for _, cmd := range wire.Commands {
		if c.Timeout(cmd) <= 0 {
			t.Errorf("%s has no default timeout", cmd)
		}
	}
	c, _ = ParseConf(wire.CmdAdd, []byte(`{"cniVersion":"1.1.0","name":"n","type":"terway","timeout":"3s"}`))
	if c.Timeout(wire.CmdStatus) != 3*time.Second || c.Timeout(wire.CmdAdd) != 3*time.Second {
		t.Errorf("timeout override ignored: %v", c.Timeout(wire.CmdAdd))
	}
}

func TestCNIError(t *testing.T) {
	agentErr := wire.NewError(7, "bad annotation", "k8s.aliyun.com/ingress-bandwidth=fast")
	unreachable := &wire.CallError{Socket: "/s.sock", Command: wire.CmdAdd, Kind: wire.Unreachable, Err: errors.New("connect: no such file or directory")}
	for _, tc := range []struct {
		name string
		cmd  wire.Command
		err  error
		code uint
		want string
	}{
		{"agent error passes through", wire.CmdAdd, fmt.Errorf("x: %w", agentErr), 7, "bad annotation"},
		{"add unreachable", wire.CmdAdd, unreachable, 11, "/s.sock"},
		{"del unreachable", wire.CmdDel, unreachable, 11, "unreachable"},
		{"status unreachable", wire.CmdStatus, unreachable, 50, "/s.sock"},
		{"timeout", wire.CmdAdd, &wire.CallError{Socket: "/s.sock", Kind: wire.TimedOut, Timeout: time.Second, Err: errors.New("deadline")}, 11, "within 1s"},
		{"broken", wire.CmdCheck, &wire.CallError{Socket: "/s.sock", Kind: wire.Broken, Err: errors.New("EOF")}, 11, "EOF"},
		{"protocol", wire.CmdAdd, &wire.CallError{Socket: "/s.sock", Kind: wire.Protocol, Err: errors.New("HTML")}, 999, "protocol error"},
		{"other", wire.CmdGC, errors.New("weird"), 999, "weird"},
	} {
		e := CNIError(tc.cmd, tc.err)
		if e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("%s: got %d %q (%s), want %d with %q", tc.name, e.Code, e.Msg, e.Details, tc.code, tc.want)
		}
	}
	if e := CNIError(wire.CmdAdd, agentErr); e != agentErr {
		t.Error("agent error was rewritten")
	}
}
