// Package rntest runs a test package against one real node
// (internal/realnode) that serves all its tests: Main brings the node up
// with the project's manifest applied, runs the tests and removes the node,
// also when they fail. The helpers drive kubectl, crictl and nsenter inside
// the node's namespaces.
//
// Needs root, and the binaries of hack/node-assets.sh's cache: without
// them Main builds them (about 25 minutes cold) unless
// TERWAY_REALNODE_BUILD=0, which makes every test skip saying so.
// TERWAY_REALNODE_IMAGE and TERWAY_REALNODE_IMAGE_ARCHIVE name an agent
// image `make image` built; without them one is built.
// TERWAY_REALNODE_NAME runs the tests on a node `make node-up` started
// (NODE=name, with NODE_MODE for the package's manifest) instead, and
// leaves it up.
package rntest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/realnode"
)

// Options say which node a package runs on.
type Options struct {
	// Prefix starts the node's name (the PID follows): short, lower case.
	Prefix string
	// Manifest is the project's manifest to apply, from the repository's root.
	Manifest string
	// Cloud runs the ECS/VPC emulator inside the node (ENI modes).
	Cloud bool
	// Nodes is the cluster's node count (default 1): the others join the
	// first (realnode.Config.Workers).
	Nodes int
	// Edit, when set, changes the manifest after the harness's own edits
	// (image, serviceCIDR, cloud endpoints): a test's configuration.
	Edit func(manifest string) (string, error)
}

var (
	node       *realnode.Config
	skipReason string
	// tmp holds what Main builds (the image, terwayctl); removed at the end.
	tmp string

	imageOnce               sync.Once
	imageName, imageArchive string
	imageErr                error
)

// Main brings up the node, runs the package's tests and removes the node;
// its result is the exit code. The node's logs are kept (in
// <state dir>/<name>.logs) only when something failed.
func Main(m *testing.M, o Options) int {
	code, err := run(m, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		code = 1
	}
	return code
}

func run(m *testing.M, o Options) (code int, err error) {
	if os.Geteuid() != 0 {
		skipReason = "the real node needs root"
		return m.Run(), nil
	}
	if tmp, err = os.MkdirTemp("", "realnode-test-"); err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	if name := os.Getenv("TERWAY_REALNODE_NAME"); name != "" {
		node = &realnode.Config{Name: name, Nodes: o.Nodes}
		node.Defaults()
		return m.Run(), nil
	}
	root, err := RepoRoot()
	if err != nil {
		return 1, err
	}
	c := &realnode.Config{Name: fmt.Sprintf("%s%d", o.Prefix, os.Getpid()%100000), Nodes: o.Nodes}
	c.Defaults()
	if missing := c.MissingAssets(); len(missing) > 0 {
		if os.Getenv("TERWAY_REALNODE_BUILD") == "0" {
			skipReason = fmt.Sprintf("the asset cache %s lacks %s and TERWAY_REALNODE_BUILD=0 says not to build them (make node-assets)",
				c.AssetsRoot, strings.Join(missing, ", "))
			return m.Run(), nil
		}
		fmt.Fprintf(os.Stderr, "realnode: building the node's binaries (%s) with hack/node-assets.sh, about 25 minutes cold\n", strings.Join(missing, ", "))
		cmd := exec.Command("bash", filepath.Join(root, "hack/node-assets.sh"))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return 1, fmt.Errorf("hack/node-assets.sh: %w", err)
		}
	}
	// One node at a time on this machine, whichever package brings it.
	release, err := realnode.Exclusive(c.StateDir)
	if err != nil {
		return 1, err
	}
	defer release()
	image, archive, err := AgentImage()
	if err != nil {
		return 1, err
	}
	if o.Cloud {
		c.Emulator = filepath.Join(tmp, "terwayctl")
		cmd := exec.Command("go", "build", "-o", c.Emulator, "./cmd/terwayctl")
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return 1, fmt.Errorf("building terwayctl (the emulator): %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	imgs, err := realnode.BuildImages(ctx, c, root)
	if err != nil {
		return 1, err
	}
	c.Images = append(imgs, archive)
	before, err := hostView()
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := realnode.Down(c); err != nil {
			fmt.Fprintln(os.Stderr, "realnode: down:", err)
			code = 1
		}
		// The node, its cloud and its pods lived in namespaces of their
		// own: the machine's network is as it was.
		if after, err := hostView(); err != nil || after != before {
			fmt.Fprintf(os.Stderr, "realnode: the machine's own network changed (%v):\nbefore:\n%s\nafter:\n%s\n", err, before, after)
			code = 1
		}
		if code == 0 && err == nil {
			os.RemoveAll(c.Dir() + ".logs")
			for _, w := range c.Workers() {
				os.RemoveAll(w.Dir() + ".logs")
			}
		} else {
			fmt.Fprintf(os.Stderr, "realnode: the node's logs are in %s.logs\n", c.Dir())
		}
	}()
	t0 := time.Now()
	if err := realnode.Up(ctx, c); err != nil {
		return 1, err
	}
	manifest, err := c.AgentManifest(filepath.Join(root, o.Manifest), image)
	if err != nil {
		return 1, err
	}
	if o.Edit != nil {
		if manifest, err = o.Edit(manifest); err != nil {
			return 1, err
		}
	}
	if err := realnode.ApplyAgentManifest(ctx, c, manifest); err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "realnode: node %s Ready with the agent's DaemonSet (%s) in %s\n", c.Name, o.Manifest, time.Since(t0).Round(time.Second))
	node = c
	return m.Run(), nil
}

// AgentImage is the agent's image, by name and archive: the one
// TERWAY_REALNODE_IMAGE and TERWAY_REALNODE_IMAGE_ARCHIVE name, else one
// hack/mkimage builds (once) for the package's run. Valid while Main runs.
func AgentImage() (name, archive string, err error) {
	imageOnce.Do(func() {
		imageName, imageArchive = os.Getenv("TERWAY_REALNODE_IMAGE"), os.Getenv("TERWAY_REALNODE_IMAGE_ARCHIVE")
		if imageName != "" && imageArchive != "" {
			return
		}
		root, err := RepoRoot()
		if err != nil {
			imageErr = err
			return
		}
		imageName, imageArchive = "terway-reconciler:realnode-test", filepath.Join(tmp, "image.tar")
		cmd := exec.Command("go", "run", "./hack/mkimage", "-name", imageName, "-o", imageArchive)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			imageErr = fmt.Errorf("building the agent's image: %w", err)
		}
	})
	return imageName, imageArchive, imageErr
}

// Need returns the node, or skips the test with the reason there is none.
func Need(t *testing.T) *realnode.Config {
	t.Helper()
	if node == nil {
		t.Skip(skipReason)
	}
	return node
}

// RepoRoot is the module's folder (where go.mod is), above the working
// directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}

// hostView is the machine's own links, addresses, routes and rules.
func hostView() (string, error) {
	var b strings.Builder
	for _, args := range [][]string{{"-o", "link"}, {"-o", "addr"}, {"route", "show", "table", "all"}, {"rule"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("ip %v: %w: %s", args, err, out)
		}
		b.Write(out)
	}
	return b.String(), nil
}
