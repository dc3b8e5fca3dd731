// Package load reads the objects render needs from YAML or JSON files:
// Kubernetes objects (Node, Pod, Namespace, NetworkPolicy, and List of them)
// and this project's own kinds (Allocation, ENI, Config), in multi-document
// files and whole folders. It is the input side of `terwayctl render` and of
// the agent's standalone mode.
package load

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	yamlv3 "go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// Objects is everything read, in the order read.
type Objects struct {
	Nodes       []*corev1.Node
	Pods        []*corev1.Pod
	Namespaces  []*corev1.Namespace
	Policies    []*networkingv1.NetworkPolicy
	Allocations []*spec.Allocation
	ENIs        []spec.ENI
	// Config is the last terway/v1 Config document read, if any.
	Config *render.Config
	// Skipped names documents of kinds render does not use (a Service, a
	// Deployment), so a caller can mention them.
	Skipped []string
}

// Paths reads every file named; a folder means every .yaml, .yml and .json
// file in it, recursively, in name order.
func Paths(paths ...string) (*Objects, error) {
	objs := &Objects{}
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if err := objs.readFile(f); err != nil {
				return nil, err
			}
		}
	}
	return objs, nil
}

func expand(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	slices.Sort(files)
	return files, nil
}

func (o *Objects) readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	return o.Read(path, f)
}

// Read reads a stream of YAML documents (or one JSON document); name is used
// in errors.
func (o *Objects) Read(name string, r io.Reader) error {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for i := 1; ; i++ {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 || isOnlyComments(doc) {
			continue
		}
		if err := o.add(doc); err != nil {
			return fmt.Errorf("%s: document %d: %w", name, i, err)
		}
	}
}

func isOnlyComments(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

type typeMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Namespace string `yaml:"namespace"`
		Name      string `yaml:"name"`
	} `yaml:"metadata"`
}

// add decodes one YAML object by its apiVersion and kind. The object itself
// is decoded into its Go type (which knows that a name is a string even when
// it reads "y"); the kind is read with a YAML 1.2 parser for the same reason.
func (o *Objects) add(doc []byte) error {
	var node yamlv3.Node
	if err := yamlv3.Unmarshal(doc, &node); err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	var tm typeMeta
	if err := node.Decode(&tm); err != nil {
		return fmt.Errorf("not an object: %w", err)
	}
	// Quoting every string, keys included, keeps YAML 1.1 words (y, on, no)
	// strings when the typed decoder, which speaks YAML 1.1, reads them.
	quoteStrings(&node)
	doc, err := yamlv3.Marshal(&node)
	if err != nil {
		return fmt.Errorf("re-encode: %w", err)
	}
	if tm.Kind == "" || tm.APIVersion == "" {
		return fmt.Errorf("apiVersion and kind are required")
	}
	what := tm.Kind + " " + strings.TrimPrefix(tm.Metadata.Namespace+"/"+tm.Metadata.Name, "/")
	switch {
	case tm.Kind == "List" || strings.HasSuffix(tm.Kind, "List"):
		var list struct {
			Items []yamlv3.Node `yaml:"items"`
		}
		if err := node.Decode(&list); err != nil {
			return fmt.Errorf("%s: items: %w", tm.Kind, err)
		}
		for i := range list.Items {
			item, err := yamlv3.Marshal(&list.Items[i])
			if err == nil {
				err = o.add(item)
			}
			if err != nil {
				return fmt.Errorf("%s item %d: %w", tm.Kind, i, err)
			}
		}
		return nil
	case tm.APIVersion == spec.APIVersion:
		return o.addOwn(tm.Kind, what, doc)
	case tm.APIVersion == "v1" && tm.Kind == "Node":
		return decodeInto(doc, what, &o.Nodes)
	case tm.APIVersion == "v1" && tm.Kind == "Pod":
		return decodeInto(doc, what, &o.Pods)
	case tm.APIVersion == "v1" && tm.Kind == "Namespace":
		return decodeInto(doc, what, &o.Namespaces)
	case tm.APIVersion == "networking.k8s.io/v1" && tm.Kind == "NetworkPolicy":
		return decodeInto(doc, what, &o.Policies)
	}
	o.Skipped = append(o.Skipped, tm.APIVersion+" "+what)
	return nil
}

func quoteStrings(n *yamlv3.Node) {
	if n.Kind == yamlv3.ScalarNode && n.ShortTag() == "!!str" {
		n.Style = yamlv3.DoubleQuotedStyle
	}
	for _, c := range n.Content {
		quoteStrings(c)
	}
}

// addOwn decodes our own kinds strictly: an unknown field is a mistake.
func (o *Objects) addOwn(kind, what string, data []byte) error {
	strict := func(v any) error {
		if err := yaml.UnmarshalStrict(data, v); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	switch kind {
	case spec.KindAllocation:
		var a spec.Allocation
		if err := strict(&a); err != nil {
			return err
		}
		if a.Metadata.Namespace == "" || a.Metadata.Name == "" {
			return fmt.Errorf("%s: metadata.namespace and metadata.name (the pod) are required", what)
		}
		o.Allocations = append(o.Allocations, &a)
	case spec.KindENI:
		var e spec.ENI
		if err := strict(&e); err != nil {
			return err
		}
		o.ENIs = append(o.ENIs, e)
	case spec.KindConfig:
		var c render.Config
		if err := strict(&c); err != nil {
			return err
		}
		o.Config = &c
	default:
		return fmt.Errorf("%s: kind %q of %s is not Allocation, ENI or Config", what, kind, spec.APIVersion)
	}
	return nil
}

func decodeInto[T any](data []byte, what string, list *[]*T) error {
	obj := new(T)
	if err := yaml.Unmarshal(data, obj); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	*list = append(*list, obj)
	return nil
}

// Inputs builds render inputs for one node: the Node named, or the only
// Node when name is empty. cfg, when not nil, overrides a Config document.
func (o *Objects) Inputs(nodeName string, cfg *render.Config) (render.Inputs, error) {
	var node *corev1.Node
	for _, n := range o.Nodes {
		if nodeName == "" || n.Name == nodeName {
			if node != nil && nodeName == "" {
				return render.Inputs{}, fmt.Errorf("%d Node objects read; name one with --node", len(o.Nodes))
			}
			node = n
		}
	}
	if node == nil {
		if nodeName != "" {
			return render.Inputs{}, fmt.Errorf("no Node object named %q was read", nodeName)
		}
		return render.Inputs{}, fmt.Errorf("no Node object was read: the inputs must include this node")
	}
	in := render.Inputs{
		Node: node, Pods: o.Pods, Namespaces: o.Namespaces, Policies: o.Policies,
		Allocations: o.Allocations, ENIs: o.ENIs,
	}
	switch {
	case cfg != nil:
		in.Config = *cfg
	case o.Config != nil:
		in.Config = *o.Config
	}
	return in, nil
}

// ConfigFile reads a Config from a YAML or JSON file (apiVersion and kind
// optional), rejecting unknown fields.
func ConfigFile(path string) (*render.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var c render.Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &c, nil
}
