// Command terwayd is the node agent (DaemonSet): it gives pods their
// network, enforces NetworkPolicy and bandwidth, and repairs drift. It acts
// on the network namespace it is started in as the node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"k8s.io/client-go/kubernetes"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/agent/deviceplugin"
	"github.com/terway-reconciler/terway/agent/inputs"
	"github.com/terway-reconciler/terway/cloud/eni"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

func main() {
	run := run
	// `terwayd install-cni ...` is the init container; without a
	// subcommand terwayd is the agent.
	if len(os.Args) > 1 && os.Args[1] == "install-cni" {
		run = func() error { return runInstallCNI(os.Args[2:]) }
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "terwayd:", err)
		os.Exit(1)
	}
}

// defaultGCPercent is the agent's GOGC unless told otherwise. At 250 pods
// and 1,000 policies the agent's live heap is about 80 MB, most of it the
// rendered policy groups and the nftables reconciler's view of the
// kernel's sets. With Go's default of 100 the collector's marking of that
// heap was a fifth of what grows in a CNI ADD from an empty node to that
// one (terwayctl bench --only scale, "agent's part of an ADD": 1.20 of the
// 10-pod ADD against 1.08 to 1.14 with 200). The price is memory: the
// agent's peak resident size there went from 200 to 260 MB (75 MB at 10
// pods either way).
const defaultGCPercent = 200

// collectorPercent is the GOGC the agent sets, and whether it sets one: the
// flag's when given, else none when the environment has GOGC (the runtime
// read it), else the default.
func collectorPercent(flagGiven bool, flagValue int, envGOGC string) (int, bool) {
	switch {
	case flagGiven:
		return flagValue, true
	case envGOGC != "":
		return 0, false
	}
	return defaultGCPercent, true
}

func run() error {
	var (
		cfg        agent.Config
		kubeInputs string
		kubeconfig string
		configPath string
		cloudPath  string
		eniConf    string
		logLevel   string
		dpMode     string
		dpDir      string
	)
	flag.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME)")
	flag.StringVar(&cfg.StateDir, "state-dir", agent.DefaultStateDir, "directory of the allocation store")
	flag.StringVar(&cfg.Socket, "socket", agent.DefaultSocket, "unix socket the CNI plugin calls")
	flag.StringVar(&kubeInputs, "kube-inputs", "", "standalone mode: read Node, Pods, Namespaces and NetworkPolicies from YAML files in DIR and follow changes")
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: in-cluster config)")
	flag.StringVar(&configPath, "config", "", "agent configuration file (terway/v1 Config: mode, mtu, serviceCIDR, pool sizes)")
	flag.StringVar(&cloudPath, "cloud-config", "", "cloud configuration file (terway/v1 CloudConfig: metadata URL, endpoints, credentials, vswitches, security group); in eni-multi-ip mode this or --eni-conf is required; in vpc mode either one enables whole ENIs for pods requesting aliyun/eni")
	flag.StringVar(&eniConf, "eni-conf", "", "Terway's eni_conf (ConfigMap eni-config, key eni_conf) as cloud configuration; --cloud-config and --config win where they set the same field")
	flag.DurationVar(&cfg.ResyncInterval, "resync-interval", agent.DefaultResyncInterval, "period of the full resync that repairs drift")
	flag.DurationVar(&cfg.MinSyncInterval, "min-sync-interval", agent.DefaultMinSyncInterval, "least time between two syncs; changes meanwhile are coalesced")
	flag.StringVar(&cfg.HealthAddr, "health-addr", agent.DefaultHealthAddr, "address of /healthz, /readyz, /status, /metrics, /plan and /applied (empty disables)")
	flag.DurationVar(&cfg.PeerAdmissionDelay, "peer-admission-delay", agent.DefaultPeerAdmissionDelay, "most a new pod waits, while ADDs keep coming, to be admitted by its local peers' policies")
	flag.BoolVar(&cfg.AdmitBeforeAnswer, "admit-before-answer", false, "a CNI ADD admits its pod as its local peers' policy peer before answering (slower ADDs at scale)")
	flag.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "also serve /debug/pprof on the health address")
	flag.StringVar(&dpMode, "device-plugin", "auto", "serve the aliyun/eni kubelet device plugin: auto (when --device-plugin-dir holds kubelet.sock at start), on or off")
	flag.StringVar(&dpDir, "device-plugin-dir", deviceplugin.DefaultDir, "the kubelet's device-plugins folder")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	gcPercent := flag.Int("gc-percent", defaultGCPercent, "the Go collector's GOGC for the agent: heap growth, in percent of the live heap, before a collection (a GOGC in the environment wins over the default, not over this flag)")
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "gc-percent" })
	if percent, set := collectorPercent(explicit, *gcPercent, os.Getenv("GOGC")); set {
		debug.SetGCPercent(percent)
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if configPath != "" {
		c, err := load.ConfigFile(configPath)
		if err != nil {
			return err
		}
		cfg.Render = *c
	} else {
		cfg.Render = render.Config{}
	}

	var err error
	if cfg.DevicePluginDir, err = devicePluginDir(dpMode, dpDir, cfg.Logger); err != nil {
		return err
	}

	var src inputs.Source
	switch {
	case kubeInputs != "":
		files, err := inputs.NewFiles(kubeInputs, cfg.NodeName, inputs.FilesOptions{Logger: cfg.Logger})
		if err != nil {
			return err
		}
		src = files
	default:
		restConfig, err := inputs.BuildConfig(kubeconfig)
		if err != nil {
			return err
		}
		client, err := kubernetes.NewForConfig(restConfig)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		kube, err := inputs.NewKubernetes(client, cfg.NodeName, inputs.KubernetesOptions{Logger: cfg.Logger})
		if err != nil {
			return err
		}
		src = kube
		cfg.Events = client.CoreV1()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := setupCloud(ctx, &cfg, cloudPath, eniConf); err != nil {
		return err
	}
	a, err := agent.New(cfg, src)
	if err != nil {
		return err
	}
	defer a.Close()
	err = a.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// setupCloud builds the ENI reconciler: in eni-multi-ip mode (required
// there) for every pod, in VPC mode, when cloud configuration is given, for
// the pods that take a whole ENI (aliyun/eni). The instance comes from the
// metadata service, the rest from the cloud configuration (ours, Terway's
// eni_conf, or both).
func setupCloud(ctx context.Context, cfg *agent.Config, path, eniConf string) error {
	cc, rc, err := agent.LoadCloudSources(path, eniConf, cfg.Render, cfg.Logger)
	if err != nil {
		return err
	}
	if cc == nil {
		if cfg.Render.Mode == spec.PodModeENIMultiIP {
			return fmt.Errorf("mode %s: --cloud-config or --eni-conf: required (pod addresses come from the cloud)", cfg.Render.Mode)
		}
		return nil
	}
	cfg.Render = rc
	ec, err := cc.ENIConfig(ctx, cfg.Render, cfg.Logger)
	if err != nil {
		return err
	}
	if cfg.Render.Mode != spec.PodModeENIMultiIP {
		cfg.Logger.Info("VPC mode with cloud configuration: pods requesting aliyun/eni get a whole ENI; the others keep their podCIDR addresses")
	}
	cfg.ENI, err = eni.New(ec)
	return err
}

// devicePluginDir resolves --device-plugin: the folder to serve the device
// plugin in, or "" for none. auto serves only where a kubelet is (its
// socket is there at start), so runs without a kubelet (standalone, tests)
// never write into a folder no one reads; on serves and waits for the
// kubelet.
func devicePluginDir(mode, dir string, log *slog.Logger) (string, error) {
	switch mode {
	case "off":
		return "", nil
	case "on":
		return dir, nil
	case "auto":
		sock := filepath.Join(dir, deviceplugin.KubeletSocketName)
		if _, err := os.Stat(sock); err != nil {
			log.Info("device plugin off: no kubelet socket (--device-plugin=on to wait for one)", "socket", sock)
			return "", nil
		}
		return dir, nil
	}
	return "", fmt.Errorf("--device-plugin: %q is not auto, on or off", mode)
}
