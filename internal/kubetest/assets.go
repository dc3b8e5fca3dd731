package kubetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Version is the Kubernetes release the tests run against; hack/k8s-assets.sh
// builds the same one by default.
const Version = "v1.37.2"

// AssetsEnv overrides where the binaries are: a folder holding
// kube-apiserver, etcd and kubectl (the layout envtest's KUBEBUILDER_ASSETS
// uses, so one folder serves both).
const AssetsEnv = "TERWAY_K8S_ASSETS"

var binaries = []string{"kube-apiserver", "etcd", "kubectl"}

var (
	assetsOnce sync.Once
	assetsDir  string
	assetsErr  error
)

// Assets returns the folder with kube-apiserver, etcd and kubectl. When the
// cache lacks them it runs hack/k8s-assets.sh, which builds them from the Go
// module proxy (11-20 minutes cold): a test that silently skipped without
// its control plane would prove nothing. It runs at most once per process.
func Assets(t testing.TB) string {
	t.Helper()
	assetsOnce.Do(func() { assetsDir, assetsErr = findOrBuildAssets(t) })
	if assetsErr != nil {
		t.Fatal(assetsErr)
	}
	return assetsDir
}

func findOrBuildAssets(t testing.TB) (string, error) {
	if dir := os.Getenv(AssetsEnv); dir != "" {
		if missing := missingBinaries(dir); missing != "" {
			return "", fmt.Errorf("$%s=%s: %s missing", AssetsEnv, dir, missing)
		}
		return dir, nil
	}
	if dir := cacheDir(); missingBinaries(dir) == "" {
		return dir, nil
	}
	script, err := repoFile("hack/k8s-assets.sh")
	if err != nil {
		return "", err
	}
	t.Logf("kubetest: Kubernetes %s binaries are not cached; building them with %s (11-20 min on two cores)", Version, script)
	var out bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "K8S_VERSION="+Version)
	cmd.Stdout, cmd.Stderr = &out, os.Stderr // progress goes to the terminal
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kubetest: %s: %w", script, err)
	}
	dir := strings.TrimSpace(lastLine(out.String()))
	if missing := missingBinaries(dir); missing != "" {
		return "", fmt.Errorf("kubetest: %s printed %q, where %s is missing", script, dir, missing)
	}
	return dir, nil
}

// cacheDir mirrors hack/k8s-assets.sh's choice of cache folder, so that a
// warm cache needs no shell.
func cacheDir() string {
	root := os.Getenv("K8S_ASSETS_CACHE")
	if root == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		root = filepath.Join(base, "terway-reconciler", "k8s")
	}
	return filepath.Join(root, Version)
}

func missingBinaries(dir string) string {
	var missing []string
	for _, b := range binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	return strings.Join(missing, ", ")
}

// repoFile finds a file of this repository from the test's working
// directory (a package folder) by walking up to go.mod.
func repoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, rel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("kubetest: no go.mod above the working directory, so %s cannot be found", rel)
		}
		dir = parent
	}
}

// RepoFile returns the path of a file of this repository (manifests/...),
// found from the test's working directory.
func RepoFile(t testing.TB, rel string) string {
	t.Helper()
	p, err := repoFile(rel)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
