// Package realnode runs the Terway walkthrough on a real Kubernetes node
// (internal/realnode): the kubelet, containerd and runc create the pods,
// kube-proxy serves the Services, the scheduler places the pods, and the
// only parts of ours in the path are the agent and its CNI plugin, brought
// up by `kubectl apply -f manifests/terway.yml`. One node serves the whole
// package; it is removed when the tests end, also when they fail.
//
// Needs root. The node's binaries come from hack/node-assets.sh's cache;
// when they are missing the tests build them (about 25 minutes cold),
// unless TERWAY_REALNODE_BUILD=0, which makes them skip saying so.
// TERWAY_REALNODE_IMAGE and TERWAY_REALNODE_IMAGE_ARCHIVE name an agent
// image `make image` built; without them the tests build one.
// TERWAY_REALNODE_NAME runs the tests on a node `make node-up` started
// (NODE=name) instead, and leaves it up.
package realnode

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

var (
	node       *realnode.Config
	skipReason string
)

func TestMain(m *testing.M) {
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realnode:", err)
		code = 1
	}
	os.Exit(code)
}

func run(m *testing.M) (code int, err error) {
	if os.Geteuid() != 0 {
		skipReason = "the real node needs root"
		return m.Run(), nil
	}
	if name := os.Getenv("TERWAY_REALNODE_NAME"); name != "" {
		node = &realnode.Config{Name: name}
		node.Defaults()
		defer cleanupImage()
		return m.Run(), nil
	}
	root, err := repoRoot()
	if err != nil {
		return 1, err
	}
	c := &realnode.Config{Name: fmt.Sprintf("rnt%d", os.Getpid()%100000)}
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
	// One node at a time on this machine (e2e/realnode/eni brings its own).
	release, err := realnode.Exclusive(c.StateDir)
	if err != nil {
		return 1, err
	}
	defer release()
	defer cleanupImage()
	image, archive, err := agentImage()
	if err != nil {
		return 1, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	imgs, err := realnode.BuildImages(ctx, c, root)
	if err != nil {
		return 1, err
	}
	c.Images = append(imgs, archive)
	defer func() {
		if err := realnode.Down(c); err != nil {
			fmt.Fprintln(os.Stderr, "realnode: down:", err)
		}
		// The node's logs are kept only when something failed.
		if code == 0 && err == nil {
			os.RemoveAll(c.Dir() + ".logs")
		} else {
			fmt.Fprintf(os.Stderr, "realnode: the node's logs are in %s.logs\n", c.Dir())
		}
	}()
	t0 := time.Now()
	if err := realnode.Up(ctx, c); err != nil {
		return 1, err
	}
	if err := realnode.ApplyAgent(ctx, c, filepath.Join(root, "manifests/terway.yml"), image); err != nil {
		return 1, err
	}
	fmt.Fprintf(os.Stderr, "realnode: node %s Ready with the agent's DaemonSet in %s\n", c.Name, time.Since(t0).Round(time.Second))
	node = c
	return m.Run(), nil
}

// need returns the node, or skips the test with the reason there is none.
func need(t *testing.T) *realnode.Config {
	t.Helper()
	if node == nil {
		t.Skip(skipReason)
	}
	return node
}

func repoRoot() (string, error) {
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

var (
	imageOnce               sync.Once
	imageName, imageArchive string
	imageTmp                string
	imageErr                error
)

// agentImage is the agent's image: the one named by TERWAY_REALNODE_IMAGE
// and TERWAY_REALNODE_IMAGE_ARCHIVE, else one built here by hack/mkimage.
func agentImage() (name, archive string, err error) {
	imageOnce.Do(func() {
		imageName, imageArchive = os.Getenv("TERWAY_REALNODE_IMAGE"), os.Getenv("TERWAY_REALNODE_IMAGE_ARCHIVE")
		if imageName != "" && imageArchive != "" {
			return
		}
		root, err := repoRoot()
		if err != nil {
			imageErr = err
			return
		}
		if imageTmp, imageErr = os.MkdirTemp("", "realnode-image-"); imageErr != nil {
			return
		}
		imageName, imageArchive = "terway-reconciler:realnode-test", filepath.Join(imageTmp, "image.tar")
		cmd := exec.Command("go", "run", "./hack/mkimage", "-name", imageName, "-o", imageArchive)
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			imageErr = fmt.Errorf("building the agent's image: %w", err)
		}
	})
	return imageName, imageArchive, imageErr
}

func cleanupImage() {
	if imageTmp != "" {
		os.RemoveAll(imageTmp)
	}
}
