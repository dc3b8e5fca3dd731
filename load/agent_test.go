package load

import (
	"bytes"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/render"
)

// TestEncodeReadsBack: what Encode writes, Read reads back into inputs
// that render to the same document, byte for byte, also for objects that
// carry no apiVersion and kind (as an informer's do). This is the contract
// of an agent's /inputs: explain --agent must see what the agent renders.
func TestEncodeReadsBack(t *testing.T) {
	for _, paths := range [][]string{
		{"../golden/eni-multi-ip/input.yaml"},
		{"../golden/exclusive-eni-policy/input.yaml"},
		{"../examples/cluster", "../examples/policy.yaml", "../examples/allocations.yaml"},
	} {
		objs, err := Paths(paths...)
		if err != nil {
			t.Fatal(err)
		}
		if dir, ok := strings.CutSuffix(paths[0], "/input.yaml"); ok {
			if objs.Config, err = ConfigFile(dir + "/config.yaml"); err != nil {
				t.Fatal(err)
			}
		}
		want := renderYAML(t, objs)
		// An informer's objects have no TypeMeta.
		for _, p := range objs.Pods {
			p.APIVersion, p.Kind = "", ""
		}
		for _, p := range objs.Policies {
			p.APIVersion, p.Kind = "", ""
		}
		for _, n := range objs.Nodes {
			n.APIVersion, n.Kind = "", ""
		}
		var buf bytes.Buffer
		if err := objs.Encode(&buf); err != nil {
			t.Fatalf("%v: encode: %v", paths, err)
		}
		if objs.Pods[0].Kind != "" {
			t.Errorf("%v: Encode wrote kind into the caller's pod", paths)
		}
		back := &Objects{}
		if err := back.Read("stream", &buf); err != nil {
			t.Fatalf("%v: read back: %v\n%s", paths, err, buf.String())
		}
		if len(back.Skipped) > 0 {
			t.Errorf("%v: read back skipped %v", paths, back.Skipped)
		}
		if got := renderYAML(t, back); !bytes.Equal(got, want) {
			t.Errorf("%v: document rendered from the stream differs:\n%s\nwant:\n%s", paths, got, want)
		}
	}
}

func renderYAML(t *testing.T, objs *Objects) []byte {
	t.Helper()
	in, err := objs.Inputs("", nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := render.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := doc.MarshalYAML()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
