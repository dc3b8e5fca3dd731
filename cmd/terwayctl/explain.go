package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func explainCommand() *cobra.Command {
	var (
		in              inputFlags
		from, to, proto string
		output          string
		port            int
	)
	cmd := &cobra.Command{
		Use:   "explain (-f PATH... | --agent ADDR) --from NS/POD|IP|node --to NS/POD|IP|node --port N [--protocol tcp|udp|sctp] [-o text|json]",
		Short: "Say whether a connection is allowed, and why, from the rendered document",
		Long: "Renders the inputs (as render does, or a running agent's with --agent), then walks the document's nftables table\n" +
			"the way the kernel does for the connection's first packet. The first line is\n" +
			"allowed or denied; then which policies isolate each end, the rule, peer and\n" +
			"port that admitted the connection or why each candidate rule did not, and the\n" +
			"chains, sets and elements that carry the decision. Exit 0 for either verdict,\n" +
			"1 on bad input.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !in.given() || from == "" || to == "" {
				return fmt.Errorf("explain: give -f PATH (or --agent ADDR), --from and --to")
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
			m, err := in.load(cmd.Context())
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
	in.register(cmd, "YAML/JSON inputs")
	cmd.Flags().StringVar(&from, "from", "", "source: NAMESPACE/POD, an IPv4 address, or node")
	cmd.Flags().StringVar(&to, "to", "", "destination: NAMESPACE/POD, an IPv4 address, or node")
	cmd.Flags().IntVar(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&proto, "protocol", "tcp", "tcp, udp or sctp")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
