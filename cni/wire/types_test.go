package wire

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleResult is a CNI 1.1.0 result as the agent encodes one.
const sampleResult = `{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/p1"}],` +
	`"ips":[{"interface":0,"address":"198.18.0.10/32","gateway":"169.254.1.1"}],` +
	`"routes":[{"dst":"0.0.0.0/0","gw":"169.254.1.1"}],"dns":{"nameservers":["198.18.255.10"],"search":["svc.cluster.local"]}}`

func sampleRequest() *Request {
	return &Request{
		Command:     CmdCheck,
		CNIVersion:  "1.1.0",
		ContainerID: "c0ffee",
		Netns:       "/var/run/netns/p1",
		IfName:      "eth0",
		Args:        PodArgs{Namespace: "default", Name: "web-0", UID: "u-1", InfraContainerID: "c0ffee", Other: map[string]string{"X": "y"}},
		NetConf: NetConf{
			CNIVersion: "1.1.0", Name: "terway", Type: "terway", Socket: "/run/t.sock",
			Timeout:      Duration(30 * time.Second),
			Capabilities: map[string]bool{"bandwidth": true},
			Raw:          json.RawMessage(`{"cniVersion":"1.1.0","name":"terway","type":"terway"}`),
		},
		PrevResult: json.RawMessage(sampleResult),
	}
}

func TestRequestJSONRoundTrip(t *testing.T) {
	in := sampleRequest()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	// The wire names are part of the contract: people read them with curl.
	for _, key := range []string{`"command":"CHECK"`, `"containerID":"c0ffee"`, `"ifName":"eth0"`,
		`"K8S_POD_NAMESPACE":"default"`, `"K8S_POD_NAME":"web-0"`, `"K8S_POD_UID":"u-1"`,
		`"K8S_POD_INFRA_CONTAINER_ID":"c0ffee"`, `"timeout":"30s"`, `"socket":"/run/t.sock"`,
		`"prevResult":{"cniVersion":"1.1.0"`, `"198.18.0.10/32"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("encoded request lacks %s:\n%s", key, b)
		}
	}
	if strings.Contains(string(b), "validAttachments") {
		t.Errorf("a non-GC request carries validAttachments:\n%s", b)
	}
	var out Request
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(&out)
	if string(b) != string(b2) {
		t.Errorf("round trip changed the request:\n%s\n%s", b, b2)
	}
}

func TestGCEmptyAttachmentListSurvivesTheWire(t *testing.T) {
	in := &Request{Command: CmdGC, NetConf: NetConf{CNIVersion: "1.1.0", Name: "n", Type: "terway"}, ValidAttachments: []Attachment{}}
	b, _ := json.Marshal(in)
	if !strings.Contains(string(b), `"validAttachments":[]`) {
		t.Fatalf("empty list not sent as []: %s", b)
	}
	var out Request
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.ValidAttachments == nil {
		t.Fatal("empty list decoded as nil: the agent could not tell it from a missing list")
	}
	if e := out.Validate(); e != nil {
		t.Fatalf("GC with an empty list refused: %v", e)
	}
	out.ValidAttachments = nil
	if e := out.Validate(); e == nil || !strings.Contains(e.Msg, "cni.dev/valid-attachments") {
		t.Fatalf("GC without a list: got %v, want an error naming cni.dev/valid-attachments", e)
	}
}

func TestResponseJSON(t *testing.T) {
	b, _ := json.Marshal(&Response{Error: NewError(11, "busy", "later")})
	if got, want := string(b), `{"error":{"code":11,"msg":"busy","details":"later"}}`; got != want {
		t.Errorf("error response = %s, want %s", got, want)
	}
	b, _ = json.Marshal(&Response{})
	if string(b) != `{}` {
		t.Errorf("empty response = %s, want {}", b)
	}
	b, _ = json.Marshal(&Response{Result: json.RawMessage(sampleResult), Output: json.RawMessage(sampleResult)})
	var r Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if string(r.Result) != sampleResult || string(r.Output) != sampleResult {
		t.Errorf("result changed on the wire:\n%s\n%s\n%s", r.Result, r.Output, sampleResult)
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{`"90s"`, 90 * time.Second, ""},
		{`"1m30s"`, 90 * time.Second, ""},
		{`"250ms"`, 250 * time.Millisecond, ""},
		{`30`, 0, "want a string"},
		{`"soon"`, 0, `duration "soon"`},
	} {
		var d Duration
		err := json.Unmarshal([]byte(tc.in), &d)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || time.Duration(d) != tc.want {
			t.Errorf("%s: got %v, %v; want %v", tc.in, time.Duration(d), err, tc.want)
		}
	}
	b, _ := json.Marshal(Duration(90 * time.Second))
	if string(b) != `"1m30s"` {
		t.Errorf("marshal = %s", b)
	}
}

func TestParseCNIArgs(t *testing.T) {
	a, e := ParseCNIArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-9;FOO=bar=baz;")
	if e != nil {
		t.Fatal(e)
	}
	want := PodArgs{Namespace: "kube-system", Name: "coredns-1", UID: "u-9", InfraContainerID: "abc", Other: map[string]string{"FOO": "bar=baz"}}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("got %+v, want %+v", a, want)
	}
	if a.Key() != "kube-system/coredns-1" {
		t.Errorf("Key = %q", a.Key())
	}
	if a, e := ParseCNIArgs(""); e != nil || !reflect.DeepEqual(a, PodArgs{}) {
		t.Errorf("empty: %+v %v", a, e)
	}
	for _, bad := range []string{"K8S_POD_NAME", "=x", "A=1;junk;B=2"} {
		_, e := ParseCNIArgs(bad)
		if e == nil || e.Code != ErrInvalidEnvironmentVariables || !strings.Contains(e.Msg, "CNI_ARGS pair") {
			t.Errorf("%q: got %v, want code 4 naming the pair", bad, e)
		}
	}
}

func TestValidate(t *testing.T) {
	conf := NetConf{CNIVersion: "1.1.0", Name: "terway", Type: "terway"}
	pod := PodArgs{Namespace: "default", Name: "p"}
	for _, tc := range []struct {
		name string
		req  Request
		code uint
		want string
	}{
		{"add ok", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "eth0", Args: pod, NetConf: conf}, 0, ""},
		{"del without netns ok", Request{Command: CmdDel, ContainerID: "c1", IfName: "eth0", NetConf: conf}, 0, ""},
		{"status ok", Request{Command: CmdStatus, NetConf: conf}, 0, ""},
		{"unknown command", Request{Command: "VERSION", NetConf: conf}, 4, "CNI_COMMAND"},
		{"add no container", Request{Command: CmdAdd, Netns: "/n", IfName: "eth0", Args: pod, NetConf: conf}, 4, "CNI_CONTAINERID"},
		{"add bad container", Request{Command: CmdAdd, ContainerID: "a b", Netns: "/n", IfName: "eth0", Args: pod, NetConf: conf}, 4, "CNI_CONTAINERID"},
		{"add no ifname", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", Args: pod, NetConf: conf}, 4, "CNI_IFNAME"},
		{"add long ifname", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "a-very-long-ifname", Args: pod, NetConf: conf}, 4, "CNI_IFNAME"},
		{"add no netns", Request{Command: CmdAdd, ContainerID: "c1", IfName: "eth0", Args: pod, NetConf: conf}, 4, "CNI_NETNS"},
		{"add no pod", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "eth0", NetConf: conf}, 4, "K8S_POD_NAME"},
		// JSON would turn each bad byte into U+FFFD: the agent would open
		// another path or name another interface (found by FuzzBuildRequest).
		{"ifname not utf-8", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "en\x90th0", Args: pod, NetConf: conf}, 4, "CNI_IFNAME"},
		{"netns not utf-8", Request{Command: CmdDel, ContainerID: "c1", Netns: "/var/run/netns/\xff", IfName: "eth0", NetConf: conf}, 4, "CNI_NETNS"},
		{"pod name not utf-8", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "eth0", Args: PodArgs{Namespace: "default", Name: "p\xc3"}, NetConf: conf}, 4, "CNI_ARGS"},
		{"other arg not utf-8", Request{Command: CmdAdd, ContainerID: "c1", Netns: "/n", IfName: "eth0", Args: PodArgs{Namespace: "default", Name: "p", Other: map[string]string{"X": "\xfe"}}, NetConf: conf}, 4, "CNI_ARGS"},
		{"check no prev", Request{Command: CmdCheck, ContainerID: "c1", Netns: "/n", IfName: "eth0", NetConf: conf}, 7, "prevResult"},
		{"no version", Request{Command: CmdStatus, NetConf: NetConf{Name: "n", Type: "t"}}, 7, `"cniVersion"`},
		{"no name", Request{Command: CmdStatus, NetConf: NetConf{CNIVersion: "1.1.0", Type: "t"}}, 7, `"name"`},
		{"bad name", Request{Command: CmdStatus, NetConf: NetConf{CNIVersion: "1.1.0", Name: "a/b", Type: "t"}}, 7, `"name"`},
		{"no type", Request{Command: CmdStatus, NetConf: NetConf{CNIVersion: "1.1.0", Name: "n"}}, 7, `"type"`},
		{"relative socket", Request{Command: CmdStatus, NetConf: NetConf{CNIVersion: "1.1.0", Name: "n", Type: "t", Socket: "t.sock"}}, 7, `"socket"`},
		{"negative timeout", Request{Command: CmdStatus, NetConf: NetConf{CNIVersion: "1.1.0", Name: "n", Type: "t", Timeout: -1}}, 7, `"timeout"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.req.Validate()
			if tc.code == 0 {
				if e != nil {
					t.Fatalf("refused: %v", e)
				}
				if tc.req.CNIVersion != conf.CNIVersion {
					t.Errorf("CNIVersion not filled from the netconf: %q", tc.req.CNIVersion)
				}
				return
			}
			if e == nil || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
				t.Fatalf("got %v, want code %d naming %s", e, tc.code, tc.want)
			}
		})
	}
}

func TestCommandPath(t *testing.T) {
	if CmdGC.Path() != "/v1/cni/gc" || CmdStatus.Path() != "/v1/cni/status" {
		t.Errorf("paths: %s %s", CmdGC.Path(), CmdStatus.Path())
	}
	if Command("VERSION").Valid() || !CmdDel.Valid() {
		t.Error("Valid is wrong")
	}
}
