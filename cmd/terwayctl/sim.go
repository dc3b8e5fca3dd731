package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/terway-reconciler/terway/sim"
)

func simCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "A simulated node made of network namespaces and the real terwayd and terway binaries",
	}
	cmd.PersistentFlags().StringVar(&name, "name", sim.DefaultName, "the sim's name (several can run side by side)")
	cmd.AddCommand(simUp(&name), simDown(&name), simApply(&name, false), simApply(&name, true),
		simPods(&name), simExec(&name), simProbe(&name), simMatrix(&name), simRate(&name), simAgent(&name), simServe(), simSupervise())
	return cmd
}

// binDir is where terwayctl itself lives: make build puts the three
// binaries side by side.
func binDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	return filepath.Dir(exe), nil
}

func simUp(name *string) *cobra.Command {
	var (
		cluster, mode, bin string
		resync             time.Duration
		backoff, backoffMx time.Duration
		verbose, keep      bool
		cloud              bool
		reserved           int
	)
	cmd := &cobra.Command{
		Use:   "up --cluster DIR [--mode vpc|eni-multi-ip] [--cloud] [--reserved-enis-for-multi-ip N]",
		Short: "Start a simulated node running DIR's pods; returns when all are ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cluster == "" {
				return fmt.Errorf("--cluster: required")
			}
			if bin == "" {
				var err error
				if bin, err = binDir(); err != nil {
					return err
				}
			}
			o := sim.Options{Cluster: cluster, Mode: mode, Name: *name, BinDir: bin, Resync: resync, KeepOnFailure: keep,
				RestartBackoff: backoff, RestartBackoffMax: backoffMx, Cloud: cloud}
			if cmd.Flags().Changed("reserved-enis-for-multi-ip") {
				o.ReservedENIsForMultiIP = &reserved
			}
			if verbose {
				o.Log = cmd.ErrOrStderr()
			}
			start := time.Now()
			st, err := sim.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), st.Summary(time.Since(start)))
			return nil
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "folder of Kubernetes YAML: Node, Namespaces, Pods, NetworkPolicies")
	cmd.Flags().StringVar(&mode, "mode", "vpc", "vpc or eni-multi-ip")
	cmd.Flags().StringVar(&bin, "bin-dir", "", "folder of terwayd, terway and terwayctl (default: terwayctl's own)")
	cmd.Flags().DurationVar(&resync, "resync-interval", 5*time.Second, "the agent's full-resync interval")
	cmd.Flags().DurationVar(&backoff, "restart-backoff", sim.DefaultRestartBackoff, "delay before the agent is restarted after it dies; doubles on each crash")
	cmd.Flags().DurationVar(&backoffMx, "restart-backoff-max", sim.DefaultRestartBackoffMax, "the restart delay's ceiling")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print progress on stderr")
	cmd.Flags().BoolVar(&cloud, "cloud", false, "vpc mode: also start the cloud emulator, so that pods requesting aliyun/eni get a whole ENI")
	cmd.Flags().IntVar(&reserved, "reserved-enis-for-multi-ip", 0, "the cloud config's reservedENIsForMultiIP (unset: every secondary ENI for multi-IP pods in eni-multi-ip mode, none in vpc mode)")
	cmd.Flags().BoolVar(&keep, "keep-on-failure", false, "leave a failed sim in place for inspection (logs in its folder)")
	return cmd
}

func simDown(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace, process and file of the sim (twice is fine)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := sim.Down(*name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "sim %s down\n", *name)
			return nil
		},
	}
}

func simApply(name *string, del bool) *cobra.Command {
	var files []string
	use, short := "apply -f FILE", "Create or change objects as kubectl apply would"
	if del {
		use, short = "delete -f FILE", "Delete objects as kubectl delete would"
	}
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fmt.Errorf("-f: required")
			}
			if del {
				return sim.Delete(cmd.Context(), *name, cmd.OutOrStdout(), files...)
			}
			return sim.Apply(cmd.Context(), *name, cmd.OutOrStdout(), files...)
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file or folder of Kubernetes YAML (repeatable)")
	return cmd
}

func simPods(name *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "pods [-o json]",
		Short: "List the simulated pods: namespace, name, netns path, IP, node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return err
			}
			type entry struct {
				Namespace string `json:"namespace"`
				Name      string `json:"name"`
				Netns     string `json:"netns"`
				IP        string `json:"ip"`
				Node      string `json:"node"`
			}
			list := []entry{}
			for _, p := range st.Pods {
				list = append(list, entry{p.Namespace, p.Name, p.Netns, p.IP, p.Node})
			}
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			case "", "wide":
				fmt.Fprintf(cmd.OutOrStdout(), "%-30s %-16s %-12s %s\n", "POD", "IP", "NODE", "NETNS")
				for _, e := range list {
					fmt.Fprintf(cmd.OutOrStdout(), "%-30s %-16s %-12s %s\n", e.Namespace+"/"+e.Name, e.IP, e.Node, e.Netns)
				}
				return nil
			}
			return fmt.Errorf("-o %q: want json", output)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}

func simExec(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "exec NS/POD -- CMD...",
		Short: "Run a command inside a pod's network namespace",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return err
			}
			p := st.Pod(args[0])
			if p == nil {
				return fmt.Errorf("pod %s: not in sim %s", args[0], *name)
			}
			c := exec.Command("nsenter", append([]string{"--net=" + p.Netns, "--"}, args[1:]...)...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := c.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					return &exitError{code: ee.ExitCode(), err: fmt.Errorf("")}
				}
				return err
			}
			return nil
		},
	}
}

func simProbe(name *string) *cobra.Command {
	var (
		from, to, protocol string
		port               int
		timeout            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe --from NS/POD --to NS/POD --port N",
		Short: "Print reachable (exit 0) or unreachable (exit 1)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ok, err := st.Probe(from, to, port, protocol, timeout)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if !ok {
				fmt.Fprintln(cmd.OutOrStdout(), "unreachable")
				return &exitError{code: 1, err: fmt.Errorf("")}
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reachable")
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "source pod NS/POD")
	cmd.Flags().StringVar(&to, "to", "", "destination pod NS/POD")
	cmd.Flags().IntVar(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&protocol, "protocol", "tcp", "tcp or udp")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Second, "how long to wait for the echo")
	return cmd
}

func simMatrix(name *string) *cobra.Command {
	var (
		protocol, output string
		port             int
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "matrix --port N [--protocol tcp|udp]",
		Short: "The reachability matrix of all pods, probed in parallel",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return err
			}
			m, err := st.Matrix(port, protocol, timeout)
			if err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(m)
			}
			fmt.Fprint(cmd.OutOrStdout(), m.String())
			return nil
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "destination port")
	cmd.Flags().StringVar(&protocol, "protocol", "tcp", "tcp or udp")
	cmd.Flags().DurationVar(&timeout, "timeout", 500*time.Millisecond, "per probe")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}

func simRate(name *string) *cobra.Command {
	var (
		from, to  string
		port      int
		duration  time.Duration
		tolerance float64
	)
	cmd := &cobra.Command{
		Use:   "rate --from NS/POD --to NS/POD --port N",
		Short: "Measure a TCP transfer between two pods against their bandwidth annotations",
		Long: "Measure a TCP transfer between two pods against their bandwidth annotations.\n" +
			"Exits 1 when a limited transfer is off its annotation by more than --tolerance.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return err
			}
			r, err := st.MeasureRate(from, to, port, duration)
			if err != nil {
				return err
			}
			if r.ExpectedBits == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s: %.2f Mbit/s (no bandwidth limit)\n", from, to, r.MeasuredBits/1e6)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s -> %s: %.2f Mbit/s measured, %.2f Mbit/s configured (%s): ratio %.3f\n",
				from, to, r.MeasuredBits/1e6, float64(r.ExpectedBits)/1e6, r.Limit, r.Ratio())
			if r.Ratio() < 1-tolerance || r.Ratio() > 1+tolerance {
				return &exitError{code: 1, err: fmt.Errorf("rate off its annotation by more than %.0f%%", tolerance*100)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "sending pod NS/POD")
	cmd.Flags().StringVar(&to, "to", "", "receiving pod NS/POD (serves an echo on --port)")
	cmd.Flags().IntVar(&port, "port", 0, "TCP port")
	cmd.Flags().DurationVar(&duration, "duration", 3*time.Second, "measurement time after a 1s warm-up")
	cmd.Flags().Float64Var(&tolerance, "tolerance", 0.15, "accepted relative error")
	return cmd
}

func simAgent(name *string) *cobra.Command {
	return &cobra.Command{
		Use:   "agent PATH",
		Short: "GET a path of the sim's agent: /applied, /plan, /readyz, /metrics",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := sim.Load(*name)
			if err != nil {
				return err
			}
			code, body, err := st.AgentGet(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), body)
			if code != 200 {
				return fmt.Errorf("agent answered %d", code)
			}
			return nil
		},
	}
}

// simServe is the pod server sim starts in each pod's namespace; hidden
// because people never run it themselves.
func simServe() *cobra.Command {
	var netnsPath, ip, dir, tcp, udp string
	cmd := &cobra.Command{
		Use:    "serve",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = dir // on the command line so that sim down finds this process
			t, err := parsePorts(tcp)
			if err != nil {
				return fmt.Errorf("--tcp: %w", err)
			}
			u, err := parsePorts(udp)
			if err != nil {
				return fmt.Errorf("--udp: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return sim.Serve(ctx, netnsPath, ip, t, u)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the sim's folder")
	cmd.Flags().StringVar(&netnsPath, "netns", "", "the pod's namespace")
	cmd.Flags().StringVar(&ip, "ip", "", "the pod's address")
	cmd.Flags().StringVar(&tcp, "tcp", "", "TCP ports, comma separated")
	cmd.Flags().StringVar(&udp, "udp", "", "UDP ports, comma separated")
	return cmd
}

// simSupervise runs the sim's agent and restarts it when it dies, as the
// kubelet restarts a DaemonSet's container; `sim up` starts it and `sim
// down` ends it first. Hidden: people never run it themselves.
func simSupervise() *cobra.Command {
	var (
		dir                 string
		backoff, backoffMax time.Duration
	)
	cmd := &cobra.Command{
		Use:    "supervise --dir DIR -- AGENT-COMMAND...",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return fmt.Errorf("--dir: required")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return sim.Supervise(ctx, dir, args, sim.SuperviseOptions{Backoff: backoff, BackoffMax: backoffMax, Log: cmd.ErrOrStderr()})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the sim's folder")
	cmd.Flags().DurationVar(&backoff, "backoff", sim.DefaultRestartBackoff, "delay before the first restart; doubles on each crash")
	cmd.Flags().DurationVar(&backoffMax, "backoff-max", sim.DefaultRestartBackoffMax, "the delay's ceiling; it resets once the agent ran this long")
	return cmd
}

func parsePorts(s string) ([]int, error) {
	if s == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q is not a port", f)
		}
		out = append(out, n)
	}
	return out, nil
}
