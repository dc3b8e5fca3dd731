package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/agent"
)

// statusCommand prints a running agent's status: readiness with its
// reasons and every item of the document it could not realise.
func statusCommand() *cobra.Command {
	var addr string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print a running agent's readiness and failing items (GET /status)",
		Long: "Print a running terwayd's readiness and the items of its document it could not realise\n" +
			"(kind, key, last error, attempts), from GET /status on its health address. Exit code 3\n" +
			"when the agent is not ready.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 10 * time.Second}
			resp, err := client.Get("http://" + addr + "/status")
			if err != nil {
				return fmt.Errorf("agent at %s: %w", addr, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			if err != nil {
				return fmt.Errorf("agent at %s: read /status: %w", addr, err)
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("agent at %s: /status answered %s: %s", addr, resp.Status, body)
			}
			var st agent.Status
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("agent at %s: /status: %w", addr, err)
			}
			if asJSON {
				_, _ = cmd.OutOrStdout().Write(body)
			} else {
				fmt.Fprint(cmd.OutOrStdout(), agent.FormatStatus(st))
			}
			if !st.Ready {
				return &exitError{code: 3, err: fmt.Errorf("")}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "agent", agent.DefaultHealthAddr, "the agent's health address (host:port)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's JSON as it is")
	return cmd
}
