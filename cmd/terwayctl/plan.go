package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/apply/engine"
	"github.com/terway-reconciler/terway/apply/netns"
	"github.com/terway-reconciler/terway/spec"
)

// readState reads a NodeState document from a file or "-" (stdin).
func readState(path string, stdin io.Reader) (*spec.NodeState, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	s, err := spec.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func planCommand() *cobra.Command {
	var statePath, netnsName string
	cmd := &cobra.Command{
		Use:   "plan --state FILE [--netns NAME]",
		Short: "Print what apply would change; exit 0 when nothing, 2 when there are changes, 1 on error",
		Long: "Observes the kernel objects this project owns in the node's namespace (the current one,\n" +
			"or NAME with --netns) and in the pod namespaces the document names, and prints one line per\n" +
			"change: + create, - delete, ~ update. Reads only.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			state, err := readState(statePath, cmd.InOrStdin())
			if err != nil {
				return err
			}
			reg := netns.NewRegistry(netnsName)
			defer reg.Close()
			p, err := engine.New(reg).Plan(context.Background(), state, engine.PlanOptions{Full: true})
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), p.String())
			if p.Empty() {
				fmt.Fprintln(cmd.ErrOrStderr(), "no changes")
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d changes: %s\n", len(p.Ops), formatCounts(p.Counts()))
			return &exitError{code: 2, err: fmt.Errorf("")}
		},
	}
	cmd.Flags().StringVar(&statePath, "state", "", "NodeState document (YAML or JSON; - for stdin)")
	cmd.Flags().StringVar(&netnsName, "netns", "", "network namespace (name or path) that plays the node")
	_ = cmd.MarkFlagRequired("state")
	return cmd
}

func applyCommand() *cobra.Command {
	var statePath, netnsName string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "apply --state FILE [--netns NAME]",
		Short: "Converge the node's kernel state to the document and print counts per kind",
		RunE: func(cmd *cobra.Command, _ []string) error {
			state, err := readState(statePath, cmd.InOrStdin())
			if err != nil {
				return err
			}
			reg := netns.NewRegistry(netnsName)
			defer reg.Close()
			rep, err := engine.New(reg).Apply(context.Background(), state, engine.PlanOptions{Full: true})
			if err != nil {
				return err
			}
			if !quiet {
				for _, r := range rep.Results {
					status := "ok"
					if r.Err != nil {
						status = "FAILED: " + r.Err.Error()
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s  [%s]\n", r.Op.String(), status)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied: %s; failed: %s; rounds %d, kernel writes %d, %s\n",
				formatCounts(rep.Applied()), formatCounts(rep.Failed()), rep.Rounds, rep.Writes, rep.Duration.Round(1e5))
			if err := rep.Err(); err != nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&statePath, "state", "", "NodeState document (YAML or JSON; - for stdin)")
	cmd.Flags().StringVar(&netnsName, "netns", "", "network namespace (name or path) that plays the node")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the counts")
	_ = cmd.MarkFlagRequired("state")
	return cmd
}

func formatCounts(c map[string]int) string {
	if len(c) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c[k])
	}
	return strings.Join(parts, ", ")
}
