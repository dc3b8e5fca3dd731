package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

// inputFlags are where explain, matrix and what-if read the node's inputs
// from: files and folders (-f), as render does, or a running agent's live
// inputs (--agent), read-only.
type inputFlags struct {
	files            []string
	agent            string
	configPath, node string
}

func (f *inputFlags) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringArrayVarP(&f.files, "filename", "f", nil, "file or folder of "+what+" (repeatable)")
	cmd.Flags().StringVar(&f.agent, "agent", "", "read "+what+" from the running agent at this health address (host:port, e.g. "+
		"127.0.0.1:9482) instead of -f: its live inputs, read-only")
	cmd.Flags().StringVar(&f.configPath, "config", "", "agent configuration file (terway/v1 Config); overrides the inputs' own")
	cmd.Flags().StringVar(&f.node, "node", "", "node to render for, when the inputs hold several Nodes")
}

// given reports whether -f or --agent was given.
func (f *inputFlags) given() bool { return len(f.files) > 0 || f.agent != "" }

// objects reads the inputs from exactly one of -f and --agent.
func (f *inputFlags) objects(ctx context.Context) (*load.Objects, error) {
	switch {
	case len(f.files) > 0 && f.agent != "":
		return nil, fmt.Errorf("give -f or --agent, not both")
	case f.agent != "":
		return load.FromAgent(ctx, &http.Client{Timeout: 30 * time.Second}, f.agent)
	case len(f.files) > 0:
		return load.Paths(f.files...)
	}
	return nil, fmt.Errorf("give -f PATH or --agent ADDR")
}

// inputs builds render inputs from objs, with --config and --node.
func (f *inputFlags) inputs(objs *load.Objects) (render.Inputs, error) {
	var cfg *render.Config
	if f.configPath != "" {
		var err error
		if cfg, err = load.ConfigFile(f.configPath); err != nil {
			return render.Inputs{}, err
		}
	}
	return objs.Inputs(f.node, cfg)
}

// model renders objs and prepares explain's model of the result; the
// document's problems go to stderr.
func (f *inputFlags) model(objs *load.Objects) (*explain.Model, error) {
	in, err := f.inputs(objs)
	if err != nil {
		return nil, err
	}
	state, err := render.Render(in)
	if err != nil {
		return nil, err
	}
	for _, p := range state.Problems {
		fmt.Fprintln(os.Stderr, "problem:", p.String())
	}
	return explain.New(in, state)
}

// load reads the inputs and prepares the model.
func (f *inputFlags) load(ctx context.Context) (*explain.Model, error) {
	objs, err := f.objects(ctx)
	if err != nil {
		return nil, err
	}
	return f.model(objs)
}
