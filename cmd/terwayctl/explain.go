package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

func explainCommand() *cobra.Command {
	var (
		files            []string
		configPath, node string
		from, to, proto  string
		output           string
		port             int
	)
	cmd := &cobra.Command{
		Use:   "explain -f PATH... --from NS/POD|IP|node --to NS/POD|IP|node --port N [--protocol tcp|udp|sctp] [-o text|json]",
		Short: "Say whether a connection is allowed, and why, from the rendered document",
		Long: "Renders the inputs (as render does), then walks the document's nftables table\n" +
			"the way the kernel does for the connection's first packet. The first line is\n" +
			"allowed or denied; then which policies isolate each end, the rule, peer and\n" +
			"port that admitted the connection or why each candidate rule did not, and the\n" +
			"chains, sets and elements that carry the decision. Exit 0 for either verdict,\n" +
			"1 on bad input.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 || from == "" || to == "" {
				return fmt.Errorf("explain: give -f PATH, --from and --to")
			}
			if port < 1 || port > 65535 {
				return fmt.Errorf("explain: --port %d: want 1-65535", port)
			}
			proto = strings.ToLower(proto)
			if proto != "tcp" && proto != "udp" && proto != "sctp" {
				return fmt.Errorf("explain: --protocol %q: want tcp, udp or sctp", proto)
			}
			if output != "text" && output != "json" {
				return fmt.Errorf("explain: -o %q: want text or json", output)
			}
			m, err := loadModel(files, configPath, node)
			if err != nil {
				return err
			}
			src, err := m.Resolve(from)
			if err != nil {
				return fmt.Errorf("explain: --from %w", err)
			}
			dst, err := m.Resolve(to)
			if err != nil {
				return fmt.Errorf("explain: --to %w", err)
			}
			rep, err := m.Explain(src, dst, proto, uint16(port))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(out, string(b))
				return err
			}
			rep.WriteText(out)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or folder of YAML/JSON inputs (repeatable)")
	cmd.Flags().StringVar(&configPath, "config", "", "agent configuration file (terway/v1 Config)")
	cmd.Flags().StringVar(&node, "node", "", "node to render for, when the inputs hold several Nodes")
	cmd.Flags().StringVar(&from, "from", "", "source: NAMESPACE/POD, an IPv4 address, or node")
	cmd.Flags().StringVar(&to, "to", "", "destination: NAMESPACE/POD, an IPv4 address, or node")
	cmd.Flags().IntVar(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&proto, "protocol", "tcp", "tcp, udp or sctp")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

// loadInputs loads render inputs from files and folders, as render does.
func loadInputs(files []string, configPath, node string) (render.Inputs, error) {
	objs, err := load.Paths(files...)
	if err != nil {
		return render.Inputs{}, err
	}
	var cfg *render.Config
	if configPath != "" {
		if cfg, err = load.ConfigFile(configPath); err != nil {
			return render.Inputs{}, err
		}
	}
	return objs.Inputs(node, cfg)
}

// loadModel renders the inputs and prepares explain's model of the result.
func loadModel(files []string, configPath, node string) (*explain.Model, error) {
	in, err := loadInputs(files, configPath, node)
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
