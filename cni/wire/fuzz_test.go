package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// FuzzParseCNIArgs: no panic; an accepted CNI_ARGS, written back as
// KEY=VALUE pairs, parses to the same PodArgs; a refused one is code 4 and
// quotes the pair.
func FuzzParseCNIArgs(f *testing.F) {
	for _, s := range []string{
		"", " ", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=u-1;K8S_POD_INFRA_CONTAINER_ID=c0ffee",
		"IgnoreUnknown=1;K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;", "X=y=z;;K8S_POD_NAME=", "=v", "novalue", "A=1;A=2", ";;;",
		"K8S_POD_NAME=a b\x00c;Other=é",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, e := ParseCNIArgs(s)
		if e != nil {
			if e.Code != 4 || !strings.Contains(e.Msg, "CNI_ARGS pair") {
				t.Fatalf("ParseCNIArgs(%q): error %v, want code 4 naming the pair", s, e)
			}
			return
		}
		back, e := ParseCNIArgs(formatCNIArgs(a))
		if e != nil || !reflect.DeepEqual(back, a) {
			t.Fatalf("ParseCNIArgs(%q) = %+v; written back as %q it reads %+v, %v", s, a, formatCNIArgs(a), back, e)
		}
	})
}

// formatCNIArgs writes PodArgs as CNI_ARGS, known keys first, the others
// sorted.
func formatCNIArgs(a PodArgs) string {
	var pairs []string
	for _, kv := range [][2]string{{ArgPodNamespace, a.Namespace}, {ArgPodName, a.Name}, {ArgPodUID, a.UID}, {ArgPodInfraContainerID, a.InfraContainerID}} {
		if kv[1] != "" {
			pairs = append(pairs, kv[0]+"="+kv[1])
		}
	}
	var other []string
	for k, v := range a.Other {
		other = append(other, k+"="+v)
	}
	sort.Strings(other)
	return strings.Join(append(pairs, other...), ";")
}

// FuzzReadAnswer feeds raw bytes to the plugin's side of the wire, as if
// the agent had answered them: the hand-written HTTP reader, then decode.
// Properties: no panic, the same outcome twice, and an ADD that succeeds
// has a result in ResultVersion; other commands never return a result.
func FuzzReadAnswer(f *testing.F) {
	ok := `{"result":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p"}],"ips":[{"address":"198.18.0.10/32","gateway":"169.254.1.1","interface":0}]}}`
	old := `{"result":{"cniVersion":"1.0.0","ips":[{"address":"198.18.0.10/32"}]}}`
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: " + itoa(len(ok)) + "\r\n\r\n" + ok,
		"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + old,
		"HTTP/1.1 400 Bad Request\r\nContent-Length: 45\r\n\r\n" + `{"error":{"code":7,"msg":"bad","details":"d"}}`,
		"HTTP/1.1 500 x\r\n\r\nnot json",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{}",
		"HTTP/1.0 200\n\n{}", "SSH-2.0\r\n", "", "HTTP/1.1 200 OK\r\n",
		"HTTP/1.1 200 OK\r\n\r\n" + `{"result":{"cniVersion":"9.9.9"}}`,
		"HTTP/1.1 200 OK\r\n\r\n" + `{"result":null,"error":null}`,
	} {
		for _, cmd := range []uint8{0, 1, 4} {
			f.Add(cmd, []byte(s))
		}
	}
	c := &Client{SocketPath: "/nonexistent/fuzz.sock"}
	f.Fuzz(func(t *testing.T, cmdIndex uint8, data []byte) {
		cmd := Commands[int(cmdIndex)%len(Commands)]
		answer := func() (string, error) {
			status, body, err := readAnswer(bufio.NewReader(bytes.NewReader(data)))
			if err != nil {
				return "", err
			}
			res, err := c.decode(cmd, status, body)
			if res == nil {
				return "", err
			}
			var v struct {
				CNIVersion string `json:"cniVersion"`
			}
			if err != nil || (cmd == CmdAdd) != (len(res.Result) > 0) || cmd == CmdAdd && (json.Unmarshal(res.Result, &v) != nil || v.CNIVersion == "") {
				t.Fatalf("%s answer %q: response %+v with error %v; want a CNI result for ADD only", cmd, data, res, err)
			}
			out, jerr := json.Marshal(res)
			if jerr != nil {
				t.Fatalf("%s answer %q: result does not encode: %v", cmd, data, jerr)
			}
			return string(out), nil
		}
		r1, err1 := answer()
		r2, err2 := answer()
		if r1 != r2 || (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("answer %q read twice: %s, %v then %s, %v", data, r1, err1, r2, err2)
		}
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
