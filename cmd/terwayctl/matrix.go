package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/explain"
	"github.com/terway-reconciler/terway/sim"
)

func matrixCommand() *cobra.Command {
	var (
		in    inputFlags
		ports []int
		proto string
	)
	cmd := &cobra.Command{
		Use:   "matrix (-f PATH... | --agent ADDR) [--port N...] [--protocol tcp|udp|sctp]",
		Short: "The offline reachability matrix of the node's pods, from the rendered document",
		Long: "Renders the inputs and prints, per port, which pod reaches which, printed like\n" +
			"`terwayctl sim matrix`. Every cell comes from explain's evaluator, which walks\n" +
			"the document's nftables table. Without --port, the ports are every pod's\n" +
			"container ports and the numeric ports the policies name.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !in.given() {
				return fmt.Errorf("matrix: give at least one -f PATH, or --agent ADDR")
			}
			m, err := in.load(cmd.Context())
			if err != nil {
				return err
			}
			keys := m.Ports()
			if len(ports) > 0 {
				keys = keys[:0]
				for _, p := range ports {
					if p < 1 || p > 65535 {
						return fmt.Errorf("matrix: --port %d: want 1-65535", p)
					}
					keys = append(keys, explain.PortKey{Protocol: strings.ToLower(proto), Port: uint16(p)})
				}
			}
			mxs, err := m.Matrices(keys)
			if err != nil {
				return err
			}
			for i, mx := range mxs {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				fmt.Fprint(cmd.OutOrStdout(), simMatrixOf(mx).String())
			}
			return nil
		},
	}
	in.register(cmd, "YAML/JSON inputs")
	cmd.Flags().IntSliceVar(&ports, "port", nil, "ports to show (default: every pod's container ports and the policies' ports)")
	cmd.Flags().StringVar(&proto, "protocol", "tcp", "protocol of --port: tcp, udp or sctp")
	return cmd
}

// simMatrixOf converts for printing exactly as `sim matrix` does.
func simMatrixOf(mx explain.Matrix) *sim.Matrix {
	return &sim.Matrix{Port: int(mx.Port), Protocol: mx.Protocol, Pods: mx.Pods, Reachable: mx.Reachable}
}
