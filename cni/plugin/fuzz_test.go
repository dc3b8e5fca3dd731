package plugin

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cni/server"
	"github.com/terway-reconciler/terway/cni/wire"
)

// FuzzBuildRequest drives the plugin's parsing of one invocation (stdin
// config, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS) and sends what
// it builds through the agent's decoder. Properties: no panic; the same
// outcome twice; a refusal is a CNI error with a code; a request the plugin
// accepts, the agent accepts too (but for a CHECK whose prevResult is not a
// usable result, which only the agent can tell), and it survives the wire
// unchanged but for the prevResult, which the agent converts.
func FuzzBuildRequest(f *testing.F) {
	base := `"cniVersion":"1.1.0","name":"terway","type":"terway"`
	for _, s := range []string{
		`{` + base + `}`,
		`{` + base + `,"socket":"/run/terway/cni.sock","timeout":"30s","capabilities":{"bandwidth":true},"runtimeConfig":{"bandwidth":{"ingressRate":1000}}}`,
		`{"cniVersion":"0.4.0","name":"terway","type":"terway","prevResult":` + prev040 + `}`,
		`{` + base + `,"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"198.18.0.7/32"}]}}`,
		`{` + base + `,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}`,
		`{` + base + `,"cni.dev/attachments":null}`,
		`{` + base + `,"timeout":5}`, `{` + base + `,"timeout":"-1s"}`, `{` + base + `,"socket":"rel"}`,
		`{"cniVersion":"1.1.0","name":"a b","type":"terway"}`, `{"name":"n"}`, `[]`, ``, "\x00",
		`{` + base + `,"prevResult":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"1.2.3.4/32"}]}}`,
	} {
		for _, cmd := range []uint8{0, 1, 2, 3, 4} {
			f.Add(cmd, []byte(s), "c0ffee", "/var/run/netns/p", "eth0", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
		}
	}
	f.Add(uint8(0), []byte(`{`+base+`}`), "", "", "", "")
	f.Add(uint8(0), []byte(`{`+base+`}`), "bad id!", "/n", "eth0/x", "K8S_POD_NAME")
	f.Fuzz(func(t *testing.T, cmdIndex uint8, stdin []byte, containerID, netns, ifName, cniArgs string) {
		cmd := wire.Commands[int(cmdIndex)%len(wire.Commands)]
		args := &Args{ContainerID: containerID, Netns: netns, IfName: ifName, Args: cniArgs, StdinData: stdin}
		build := func() ([]byte, error) {
			_, req, err := buildRequest(cmd, args)
			if err != nil {
				return nil, err
			}
			body, jerr := json.Marshal(req)
			if jerr != nil {
				t.Fatalf("the %s request the plugin built does not encode: %v", cmd, jerr)
			}
			return body, nil
		}
		body, err := build()
		again, err2 := build()
		if !bytes.Equal(body, again) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("buildRequest twice: %s, %v then %s, %v", body, err, again, err2)
		}
		if err != nil {
			if e := CNIError(cmd, err); e == nil || e.Code == 0 || e.Msg == "" {
				t.Fatalf("refusal %v is not a CNI error with a code and a message", err)
			}
			return
		}
		got, e := server.DecodeRequest(httptest.NewRequest("POST", cmd.Path(), bytes.NewReader(body)))
		if e != nil {
			if cmd == wire.CmdCheck && e.Code == wire.ErrDecodingFailure && strings.Contains(e.Msg, `"prevResult"`) {
				return
			}
			t.Fatalf("the agent refuses the %s request the plugin built: %v\n%s", cmd, e, body)
		}
		var sentReq wire.Request
		if err := json.Unmarshal(body, &sentReq); err != nil {
			t.Fatal(err)
		}
		sentReq.PrevResult, got.PrevResult = nil, nil
		sent, _ := json.Marshal(&sentReq)
		seen, jerr := json.Marshal(got)
		if jerr != nil || !bytes.Equal(sent, seen) {
			t.Fatalf("request changed across the wire (%v):\n%s\n---\n%s", jerr, sent, seen)
		}
	})
}
