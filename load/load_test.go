package load

import (
	"strings"
	"testing"
)

func TestYAML11WordsStayStrings(t *testing.T) {
	const doc = `apiVersion: v1
kind: Pod
metadata: {namespace: y, name: n, labels: {on: yes, off: "no"}, annotations: {k8s.aliyun.com/ingress-bandwidth: 1000}}
spec: {nodeName: node-1, containers: [{name: c, image: i}]}
---
apiVersion: terway/v1
kind: Allocation
metadata: {namespace: y, name: n}
spec: {ip: 198.18.0.1, netns: /x}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: y, labels: {ns: y}}}
`
	o := &Objects{}
	if err := o.Read("test", strings.NewReader(doc)); err != nil {
		t.Fatal(err)
	}
	p := o.Pods[0]
	if p.Namespace != "y" || p.Name != "n" || p.Labels["on"] != "yes" || p.Labels["off"] != "no" {
		t.Errorf("pod decoded as %s/%s labels %v, want y/n with on=yes off=no", p.Namespace, p.Name, p.Labels)
	}
	if got := p.Annotations["k8s.aliyun.com/ingress-bandwidth"]; got != "1000" {
		t.Errorf("unquoted number annotation = %q, want \"1000\"", got)
	}
	if a := o.Allocations[0]; a.Metadata.Namespace != "y" {
		t.Errorf("allocation namespace = %q, want y", a.Metadata.Namespace)
	}
	if ns := o.Namespaces[0]; ns.Name != "y" || ns.Labels["ns"] != "y" {
		t.Errorf("namespace from List = %s %v, want y with ns=y", ns.Name, ns.Labels)
	}
}

func TestErrorsNameFileDocumentAndReason(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"kind: Pod\n", "document 1: apiVersion and kind are required"},
		{"apiVersion: v1\nkind: Pod\n---\n[1, 2\n", "document 2: not YAML"},
		{"apiVersion: terway/v1\nkind: Allocation\nmetadata: {namespace: x, name: a}\nspec: {ip: 1.2.3.4, bogus: 1}\n", `unknown field "bogus"`},
		{"apiVersion: terway/v1\nkind: Allocation\nmetadata: {name: a}\nspec: {ip: 1.2.3.4}\n", "metadata.namespace and metadata.name (the pod) are required"},
		{"apiVersion: terway/v1\nkind: Widget\nmetadata: {name: a}\n", `kind "Widget" of terway/v1 is not`},
		{"apiVersion: v1\nkind: Pod\nmetadata: {name: [a]}\n", "document 1: not an object"},
	} {
		err := (&Objects{}).Read("in.yaml", strings.NewReader(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "in.yaml: ") {
			t.Errorf("Read(%q) error = %v, want it to start with the file name and contain %q", tc.doc, err, tc.want)
		}
	}
}

func TestUnknownKindsAreSkippedAndNamed(t *testing.T) {
	o := &Objects{}
	if err := o.Read("in", strings.NewReader("apiVersion: v1\nkind: Service\nmetadata: {namespace: x, name: s}\n")); err != nil {
		t.Fatal(err)
	}
	if len(o.Skipped) != 1 || o.Skipped[0] != "v1 Service x/s" {
		t.Errorf("Skipped = %v", o.Skipped)
	}
}
