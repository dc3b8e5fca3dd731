package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/spec"
)

// AgentInputsPath is where a running agent serves, on its health address,
// the inputs it renders from as a stream Encode writes (GET only).
const AgentInputsPath = "/inputs"

// Encode writes the objects as one YAML stream that Read reads back into
// the same objects: the Config first, then Nodes, Namespaces, Pods,
// NetworkPolicies, Allocations and ENIs, in the order held. Objects from
// an informer carry no apiVersion and kind; Encode gives them theirs on a
// copy, never on the object itself (an informer's objects are shared).
func (o *Objects) Encode(w io.Writer) error {
	enc := &streamWriter{w: w}
	if o.Config != nil {
		c := *o.Config
		c.APIVersion, c.Kind = spec.APIVersion, spec.KindConfig
		enc.write(c)
	}
	for _, n := range o.Nodes {
		c := *n
		c.APIVersion, c.Kind = "v1", "Node"
		enc.write(&c)
	}
	for _, n := range o.Namespaces {
		c := *n
		c.APIVersion, c.Kind = "v1", "Namespace"
		enc.write(&c)
	}
	for _, p := range o.Pods {
		c := *p
		c.APIVersion, c.Kind = "v1", "Pod"
		enc.write(&c)
	}
	for _, p := range o.Policies {
		c := *p
		c.APIVersion, c.Kind = networkingv1.SchemeGroupVersion.String(), "NetworkPolicy"
		enc.write(&c)
	}
	for _, a := range o.Allocations {
		c := *a // the list's is the caller's
		c.APIVersion, c.Kind = spec.APIVersion, spec.KindAllocation
		enc.write(c)
	}
	for _, e := range o.ENIs {
		e.APIVersion, e.Kind = spec.APIVersion, spec.KindENI
		enc.write(e)
	}
	return enc.err
}

// streamWriter writes YAML documents separated by "---" and keeps the
// first error.
type streamWriter struct {
	w   io.Writer
	n   int
	err error
}

func (s *streamWriter) write(v any) {
	if s.err != nil {
		return
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		s.err = fmt.Errorf("encode document %d: %w", s.n+1, err)
		return
	}
	if s.n > 0 {
		_, s.err = io.WriteString(s.w, "---\n")
	}
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
	s.n++
}

// FromAgent reads the inputs a running agent renders from: GET
// AgentInputsPath on its health address addr (host:port). What it returns
// is what Paths returns for files holding the same objects, so every
// command that takes -f can ask a live agent instead. client may be nil.
func FromAgent(ctx context.Context, client *http.Client, addr string) (*Objects, error) {
	if client == nil {
		client = http.DefaultClient
	}
	url := "http://" + addr + AgentInputsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", addr, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("agent at %s: %s answered %s: %s", addr, AgentInputsPath, resp.Status, strings.TrimSpace(string(body)))
	}
	objs := &Objects{}
	if err := objs.Read("agent "+addr+AgentInputsPath, resp.Body); err != nil {
		return nil, err
	}
	return objs, nil
}
