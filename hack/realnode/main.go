// Command realnode is the front door of the real-node harness
// (internal/realnode): `make node-up` / `make node-down`.
//
//	realnode up   -image NAME -image-archive bin/terway-reconciler.tar
//	realnode up   ... -manifest manifests/terway-multiip.yml -emulator bin/terwayctl   (ENI multi-IP mode)
//	realnode up   ... -nodes 2   (a second node, NAME-2, joins; both behind the vpc namespace rc-NAME)
//	realnode up   -cni ptp -cni-plugins DIR  (the reference ptp chain instead of our DaemonSet)
//	realnode down                  (removes the workers and the vpc namespace too)
//	realnode exec -- kubectl get pods -A     (any command inside the node)
//	realnode e2e  -focus REGEXP -skip REGEXP  (Kubernetes' e2e.test against the node)
//
// up builds the pause and agnhost images into the asset cache, starts the
// node, imports the images, applies manifests/terway.yml with the image set
// and waits for the node Ready and the DaemonSet rolled out. With -emulator
// the node has a cloud: the ECS/VPC emulator runs in its network namespace
// and plugs the ENIs it attaches into the node as links.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var c realnode.Config
	fs.StringVar(&c.Name, "name", "realnode", "node name (netns rn-NAME, cgroup /NAME)")
	fs.StringVar(&c.StateDir, "state-dir", "", "folder of the nodes' folders (default /var/tmp/terway-realnode)")
	image := fs.String("image", "", "the agent's image name (as `make image IMAGE=...` built it)")
	archive := fs.String("image-archive", "bin/terway-reconciler.tar", "the agent's image archive")
	manifest := fs.String("manifest", "manifests/terway.yml", "the manifest to apply")
	fs.StringVar(&c.Emulator, "emulator", "", "up: a terwayctl binary; run its cloud emulator inside the node and point the manifest's cloud.yaml at it (manifests/terway-multiip.yml)")
	fs.IntVar(&c.Nodes, "nodes", 1, "up: how many nodes (the first runs the control plane; the others, NAME-2 ..., join it through a vpc namespace rc-NAME)")
	cni := fs.String("cni", "terway", "up: terway (our DaemonSet) or ptp (the reference ptp + host-local + bandwidth chain, the baseline of CONFORMANCE.md's figures)")
	cniPlugins := fs.String("cni-plugins", "", "up -cni ptp: the folder of the reference plugins (hack/cni-plugins.sh prints it)")
	focus := fs.String("focus", `\[sig-network\] Netpol`, "e2e: the specs to run (ginkgo focus)")
	skip := fs.String("skip", `\[Feature:SCTPConnectivity\]`, "e2e: the specs to leave out (ginkgo skip)")
	report := fs.String("report-dir", "bin/e2e-upstream", "e2e: where e2e.test writes its junit report and log")
	_ = fs.Parse(os.Args[2:])
	c.Defaults()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	t0 := time.Now()
	switch os.Args[1] {
	case "up":
		switch *cni {
		case "terway":
			err = up(ctx, &c, *image, *archive, *manifest)
		case "ptp":
			if c.Nodes > 1 {
				// InstallPTP configures the first node only.
				err = fmt.Errorf("-cni ptp: one node only, not -nodes %d", c.Nodes)
				break
			}
			err = upPTP(ctx, &c, *cniPlugins)
		default:
			err = fmt.Errorf("-cni %q: want terway or ptp", *cni)
		}
	case "down":
		err = realnode.Down(&c)
	case "e2e":
		var res *realnode.E2EResult
		res, err = realnode.RunE2E(ctx, &c, realnode.E2EOptions{Focus: *focus, Skip: *skip, ReportDir: *report})
		if res != nil {
			fmt.Println(res)
			if err == nil && len(res.Failed) > 0 {
				err = fmt.Errorf("%d specs failed; log: %s", len(res.Failed), res.Log)
			}
		}
	case "exec":
		var cmd *exec.Cmd
		cmd, err = (&c).Command(ctx, fs.Args()...)
		if err == nil {
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			err = cmd.Run()
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		os.Exit(1)
	}
	if os.Args[1] != "exec" {
		slog.Info("realnode: "+os.Args[1]+" done", "node", c.Name, "wall", time.Since(t0).Round(time.Millisecond))
	}
}

func up(ctx context.Context, c *realnode.Config, image, archive, manifest string) error {
	if image == "" {
		return fmt.Errorf("-image: the agent's image name is required")
	}
	if _, err := os.Stat(archive); err != nil {
		return fmt.Errorf("-image-archive: %w (make image)", err)
	}
	c.Defaults()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	imgs, err := realnode.BuildImages(ctx, c, root)
	if err != nil {
		return err
	}
	c.Images = append(imgs, archive)
	if err := realnode.Up(ctx, c); err != nil {
		return err
	}
	return realnode.ApplyAgent(ctx, c, manifest, image)
}

// upPTP starts the node with the reference chain: no agent image, no
// DaemonSet.
func upPTP(ctx context.Context, c *realnode.Config, plugins string) error {
	if plugins == "" {
		return fmt.Errorf("-cni-plugins: the reference plugins' folder is required with -cni ptp (hack/cni-plugins.sh)")
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if c.Images, err = realnode.BuildImages(ctx, c, root); err != nil {
		return err
	}
	if err := realnode.Up(ctx, c); err != nil {
		return err
	}
	return realnode.InstallPTP(ctx, c, plugins)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: realnode up|down|exec|e2e [-name NAME] [-image NAME -image-archive FILE -manifest FILE | -cni ptp -cni-plugins DIR] [-- command...]")
	os.Exit(2)
}
