package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

func renderCommand() *cobra.Command {
	var (
		files      []string
		configPath string
		output     string
		node       string
		strict     bool
	)
	cmd := &cobra.Command{
		Use:   "render -f PATH [-f PATH...] [--config FILE] [-o yaml|json|nft] [--strict]",
		Short: "Render the node's desired state from Kubernetes YAML",
		Long: "Reads Kubernetes objects (Node, Pod, Namespace, NetworkPolicy, List) and terway/v1\n" +
			"Allocation, ENI and Config documents from files and folders, and prints the\n" +
			"NodeState document. Problems in the inputs are printed to stderr; with --strict\n" +
			"they make the exit code 1.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("render: give at least one -f PATH")
			}
			state, err := renderFiles(files, configPath, node)
			if err != nil {
				return err
			}
			var out []byte
			switch output {
			case "yaml":
				out, err = state.MarshalYAML()
			case "json":
				out, err = state.MarshalJSONIndent()
			case "nft":
				out = []byte(spec.PrintRuleset(state))
			default:
				return fmt.Errorf("render: -o %q: want yaml, json or nft", output)
			}
			if err != nil {
				return err
			}
			if _, err := os.Stdout.Write(out); err != nil {
				return err
			}
			for _, p := range state.Problems {
				fmt.Fprintln(os.Stderr, "problem:", p.String())
			}
			if strict && len(state.Problems) > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d problems in the inputs (--strict)", len(state.Problems))}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or folder of YAML/JSON inputs (repeatable)")
	cmd.Flags().StringVar(&configPath, "config", "", "agent configuration file (terway/v1 Config)")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml, json or nft")
	cmd.Flags().StringVar(&node, "node", "", "node to render for, when the inputs hold several Nodes")
	cmd.Flags().BoolVar(&strict, "strict", false, "exit 1 when the inputs have problems")
	return cmd
}

// renderFiles loads inputs and renders them; shared by render, plan and apply.
func renderFiles(files []string, configPath, node string) (*spec.NodeState, error) {
	objs, err := load.Paths(files...)
	if err != nil {
		return nil, err
	}
	for _, s := range objs.Skipped {
		fmt.Fprintln(os.Stderr, "skipped (not used by render):", s)
	}
	var cfg *render.Config
	if configPath != "" {
		if cfg, err = load.ConfigFile(configPath); err != nil {
			return nil, err
		}
	}
	in, err := objs.Inputs(node, cfg)
	if err != nil {
		return nil, err
	}
	return render.Render(in)
}
