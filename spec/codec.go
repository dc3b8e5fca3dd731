package spec

import (
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"
)

// New returns an empty document for a node.
func New(node, mode string) *NodeState {
	return &NodeState{APIVersion: APIVersion, Kind: KindNodeState, Node: node, Mode: mode}
}

// MarshalYAML returns the canonical YAML form of the document.
func (s *NodeState) MarshalYAML() ([]byte, error) {
	c := s.Clone()
	c.Canonicalize()
	data, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return orderedYAML(data)
}

// MarshalJSONIndent returns the canonical, indented JSON form of the document.
func (s *NodeState) MarshalJSONIndent() ([]byte, error) {
	c := s.Clone()
	c.Canonicalize()
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// Parse reads a document from YAML or JSON, rejecting unknown fields and a
// wrong apiVersion or kind, and validates it.
func Parse(data []byte) (*NodeState, error) {
	var s NodeState
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		return nil, fmt.Errorf("parse NodeState: %w", err)
	}
	if s.APIVersion != APIVersion || s.Kind != KindNodeState {
		return nil, fmt.Errorf("parse NodeState: apiVersion/kind is %q/%q, want %q/%q", s.APIVersion, s.Kind, APIVersion, KindNodeState)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Clone returns a deep copy of the document.
func (s *NodeState) Clone() *NodeState {
	data, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("spec: NodeState is always serialisable: %v", err))
	}
	var c NodeState
	if err := json.Unmarshal(data, &c); err != nil {
		panic(fmt.Sprintf("spec: NodeState always round-trips: %v", err))
	}
	return &c
}
