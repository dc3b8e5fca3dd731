package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/cloud/emulator"
	"github.com/terway-reconciler/terway/cloud/emulator/simlink"
)

func emulatorCommand() *cobra.Command {
	var (
		configPath, listen, metaListen string
		faults                         []string
		attach, detach, del            time.Duration
		verbose                        bool
		simNode, simVPC                string
	)
	cmd := &cobra.Command{
		Use:   "emulator [--config FILE] [--listen 127.0.0.1:PORT] [--metadata-listen 127.0.0.1:PORT]",
		Short: "Run the loopback Alibaba Cloud (ECS/VPC API + instance metadata) emulator in the foreground",
		Long: "Serves the ECS (2014-05-26) and VPC (2016-04-28) RPC API and the instance metadata service on\n" +
			"127.0.0.1 only, with the world from --config (JSON or YAML) or the default one. The first line on\n" +
			"stdout is a JSON object with the endpoint, region, access key, instance and metadata URL; point the\n" +
			"SDK's client.Domain at the endpoint. Stops on SIGINT or SIGTERM.\n\n" +
			"--fault ACTION=CODE:RATE fails that share of ACTION's calls with the cloud's error CODE;\n" +
			"CODE drop loses the response after the call took effect, CODE latency delays every call by RATE\n" +
			"(a duration). ACTION * means every action. The flag repeats.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := emulator.DefaultWorld()
			if configPath != "" {
				var err error
				if w, err = emulator.LoadWorld(configPath); err != nil {
					return err
				}
			}
			e, err := emulator.New(w)
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			e.SetLogger(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})))
			parsed, err := parseFaults(faults)
			if err != nil {
				return err
			}
			for action, f := range parsed {
				e.SetFault(action, f)
			}
			e.SetAsyncDelay(attach, detach, del)
			if simNode != "" || simVPC != "" {
				if simNode == "" || simVPC == "" {
					return fmt.Errorf("--sim-node and --sim-vpc: give both or neither")
				}
				linker := simlink.New(simNode, simVPC)
				defer linker.Close()
				e.SetHook(linker)
			}
			if err := e.Start(listen, metaListen); err != nil {
				_ = e.Close()
				return err
			}
			defer e.Close()

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			line, err := json.Marshal(e.Info())
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", line); err != nil {
				return fmt.Errorf("emulator: print info: %w", err)
			}
			<-ctx.Done()
			return e.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "world file (JSON or YAML); default: one region, two vSwitches, one 4x10 instance")
	f.StringVar(&listen, "listen", "127.0.0.1:0", "API address (127.0.0.1 only; port 0 picks one)")
	f.StringVar(&metaListen, "metadata-listen", "127.0.0.1:0", "metadata service address (127.0.0.1 only; empty for none)")
	f.StringArrayVar(&faults, "fault", nil, "inject a fault: ACTION=CODE:RATE, ACTION=drop:RATE or ACTION=latency:DURATION")
	f.DurationVar(&attach, "attach-delay", emulator.DefaultAttachDelay, "how long an ENI stays Attaching")
	f.DurationVar(&detach, "detach-delay", emulator.DefaultDetachDelay, "how long an ENI stays Detaching")
	f.DurationVar(&del, "delete-delay", emulator.DefaultDeleteDelay, "how long an ENI stays Deleting")
	f.BoolVarP(&verbose, "verbose", "v", false, "log every state change on stderr")
	f.StringVar(&simNode, "sim-node", "", "simulated node: plug attached ENIs into this network namespace (path) as links")
	f.StringVar(&simVPC, "sim-vpc", "", "simulated node: build the vSwitches as bridges in this network namespace (path)")
	f.String("sim-dir", "", "the simulated node's folder (names this process for terwayctl sim down)")
	cmd.AddCommand(emulatorDumpCommand())
	return cmd
}

// parseFaults reads --fault values into one Fault per action.
func parseFaults(specs []string) (map[string]emulator.Fault, error) {
	out := map[string]emulator.Fault{}
	for _, s := range specs {
		action, rest, ok := strings.Cut(s, "=")
		kind, value, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || action == "" || kind == "" {
			return nil, fmt.Errorf("--fault %q: want ACTION=CODE:RATE, ACTION=drop:RATE or ACTION=latency:DURATION", s)
		}
		f := out[action]
		if kind == "latency" {
			d, err := time.ParseDuration(value)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("--fault %q: latency %q is not a duration", s, value)
			}
			f.Latency = d
		} else {
			rate, err := strconv.ParseFloat(value, 64)
			if err != nil || rate < 0 || rate > 1 {
				return nil, fmt.Errorf("--fault %q: rate %q is not a number from 0 to 1", s, value)
			}
			switch {
			case kind == "drop":
				f.DropRate = rate
			case f.Code == "" || f.Code == kind:
				f.Code, f.Rate = kind, rate
			case f.SecondCode == "" || f.SecondCode == kind:
				f.SecondCode, f.SecondRate = kind, rate
			default:
				return nil, fmt.Errorf("--fault %q: %s already has two error codes (%s, %s)", s, action, f.Code, f.SecondCode)
			}
		}
		out[action] = f
	}
	return out, nil
}

func emulatorDumpCommand() *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:   "dump --endpoint 127.0.0.1:PORT",
		Short: "Print a running emulator's state (instances, ENIs, vSwitches, calls, faults) as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, _, err := net.SplitHostPort(endpoint)
			if err != nil || host != "127.0.0.1" {
				return fmt.Errorf("--endpoint %q: want 127.0.0.1:PORT (the emulator listens on loopback only)", endpoint)
			}
			// No proxy: the request must go straight to the loopback listener.
			client := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}
			resp, err := client.Get("http://" + endpoint + "/__emulator/dump")
			if err != nil {
				return fmt.Errorf("emulator dump: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				return fmt.Errorf("emulator dump: %s: %s", resp.Status, strings.TrimSpace(string(body)))
			}
			_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
			return err
		},
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "the emulator's endpoint, as printed on its first line")
	_ = cmd.MarkFlagRequired("endpoint")
	return cmd
}
