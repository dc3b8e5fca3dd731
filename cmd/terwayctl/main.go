// Command terwayctl renders, plans and applies a node's desired network
// state, compares golden files, and runs a simulated node.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// exitError carries a specific exit code (plan uses 2 for "changes").
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() { os.Exit(run(os.Stdin, os.Stdout, os.Stderr, os.Args[1:]...)) }

// run runs terwayctl with args and the given streams and returns its exit
// code.
func run(stdin io.Reader, stdout, stderr io.Writer, args ...string) int {
	root := &cobra.Command{
		Use:           "terwayctl",
		Short:         "Render, plan and apply a node's network: the declarative Terway",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(renderCommand(), goldenCommand(), planCommand(), applyCommand(), simCommand(), benchCommand())
	root.AddCommand(emulatorCommand(), statusCommand(), explainCommand(), matrixCommand(), whatIfCommand())
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if ee == nil || ee.err != nil && ee.err.Error() != "" {
		fmt.Fprintln(stderr, "terwayctl:", err)
	}
	return code
}
