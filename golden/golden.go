// Package golden renders the cases under golden/ and compares the results
// with the expected files kept beside their inputs.
//
// A case is a folder holding input.yaml (Kubernetes objects and our own
// Allocation and ENI kinds), optionally config.yaml, and the expected outputs
// nodestate.yaml and ruleset.nft. `go test ./golden/...` and
// `terwayctl golden diff` compare; `-update` and `terwayctl golden update`
// rewrite the expected files, to be reviewed in the diff.
package golden

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

// File names inside a case folder.
const (
	InputFile     = "input.yaml"
	ConfigFile    = "config.yaml"
	NodeStateFile = "nodestate.yaml"
	RulesetFile   = "ruleset.nft"
)

// Cases lists the case folders under root (those holding an input.yaml).
func Cases(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var cases []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, e.Name(), InputFile)); err == nil {
			cases = append(cases, filepath.Join(root, e.Name()))
		}
	}
	slices.Sort(cases)
	if len(cases) == 0 {
		return nil, fmt.Errorf("%s: no case folders with %s", root, InputFile)
	}
	return cases, nil
}

// Inputs reads a case's inputs.
func Inputs(dir string) (render.Inputs, error) {
	objs, err := load.Paths(filepath.Join(dir, InputFile))
	if err != nil {
		return render.Inputs{}, err
	}
	var cfg *render.Config
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		if cfg, err = load.ConfigFile(filepath.Join(dir, ConfigFile)); err != nil {
			return render.Inputs{}, err
		}
	}
	return objs.Inputs("", cfg)
}

// Outputs renders inputs into the files a case keeps, by file name.
func Outputs(in render.Inputs) (map[string][]byte, error) {
	state, err := render.Render(in)
	if err != nil {
		return nil, err
	}
	if err := state.Validate(); err != nil {
		return nil, fmt.Errorf("rendered document is invalid: %w", err)
	}
	doc, err := state.MarshalYAML()
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		NodeStateFile: doc,
		RulesetFile:   []byte(spec.PrintRuleset(state)),
	}, nil
}

// Result is the comparison of one case.
type Result struct {
	Case string
	// Diff is a unified diff per differing file (expected → rendered).
	Diff []string
}

// Check renders one case and compares, or with update rewrites the expected
// files.
func Check(dir string, update bool) (Result, error) {
	res := Result{Case: dir}
	in, err := Inputs(dir)
	if err != nil {
		return res, err
	}
	got, err := Outputs(in)
	if err != nil {
		return res, fmt.Errorf("%s: %w", dir, err)
	}
	for _, name := range []string{NodeStateFile, RulesetFile} {
		path := filepath.Join(dir, name)
		if update {
			if err := os.WriteFile(path, got[name], 0o644); err != nil {
				return res, err
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return res, err
		}
		if !bytes.Equal(want, got[name]) {
			res.Diff = append(res.Diff, UnifiedDiff(path+" (expected)", path+" (rendered)", string(want), string(got[name])))
		}
	}
	return res, nil
}

// UnifiedDiff returns a unified diff of two texts with three lines of context.
func UnifiedDiff(fromName, toName, from, to string) string {
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(from), B: difflib.SplitLines(to),
		FromFile: fromName, ToFile: toName, Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("--- %s\n+++ %s\n(diff failed: %v)\n", fromName, toName, err)
	}
	return text
}
