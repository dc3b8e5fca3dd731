package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/golden"
)

func goldenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "golden", Short: "Compare or update the golden render cases"}
	run := func(update bool) func(*cobra.Command, []string) error {
		return func(_ *cobra.Command, args []string) error {
			root := "golden"
			if len(args) == 1 {
				root = args[0]
			}
			cases, err := golden.Cases(root)
			if err != nil {
				return err
			}
			differ := 0
			for _, dir := range cases {
				res, err := golden.Check(dir, update)
				if err != nil {
					return fmt.Errorf("%s: %w", dir, err)
				}
				for _, d := range res.Diff {
					fmt.Print(d)
				}
				if len(res.Diff) > 0 {
					differ++
				}
			}
			verb := "match"
			if update {
				verb = "updated"
			}
			if differ > 0 {
				fmt.Fprintf(os.Stderr, "%d of %d cases differ\n", differ, len(cases))
				return &exitError{code: 1, err: fmt.Errorf("golden files differ")}
			}
			fmt.Fprintf(os.Stderr, "%d cases %s\n", len(cases), verb)
			return nil
		}
	}
	cmd.AddCommand(&cobra.Command{
		Use: "diff [DIR]", Short: "Render every case under DIR (default golden) and print a unified diff; exit 1 when any differs",
		Args: cobra.MaximumNArgs(1), RunE: run(false),
	}, &cobra.Command{
		Use: "update [DIR]", Short: "Rewrite the expected files of every case under DIR (review the diff afterwards)",
		Args: cobra.MaximumNArgs(1), RunE: run(true),
	})
	return cmd
}
