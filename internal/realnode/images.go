package realnode

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/terway-reconciler/terway/internal/ociimage"
)

// imageEpoch is every timestamp in the test images: the same binaries give
// the same archive.
var imageEpoch = time.Unix(0, 0)

// BuildImages writes the pause and agnhost image archives into the asset
// cache, unless there, and returns their paths. The pause binary is built
// from this module (internal/realnode/pause, repoRoot is the module's
// folder); agnhost is the one hack/node-assets.sh built.
func BuildImages(ctx context.Context, c *Config, repoRoot string) ([]string, error) {
	c.Defaults()
	dir := filepath.Join(c.AssetsRoot, "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pauseBin := filepath.Join(dir, "pause-bin")
	if _, err := os.Stat(pauseBin); err != nil {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", pauseBin, "./internal/realnode/pause")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("realnode: building pause: %w: %s", err, out)
		}
	}
	pause := filepath.Join(dir, "pause-3.10.2.tar")
	if err := writeImage(pause, ociimage.Image{
		Name: PauseImage, Entrypoint: []string{"/pause"},
		Files: []ociimage.File{{Path: "/pause", Mode: 0o755, Src: pauseBin}},
	}); err != nil {
		return nil, err
	}
	// agnhost: the e2e suite runs it as the entrypoint with a subcommand
	// (netexec, porter, connect ...), and execs /agnhost in running pods;
	// some specs exec `/bin/sh -c 'curl ... | grep ...'` and `nc -u` in it,
	// as upstream's Alpine-based image allows.
	agnhost := filepath.Join(dir, "agnhost-2.66.1-sh-curl-nc.tar")
	files := []ociimage.File{{Path: "/agnhost", Mode: 0o755, Src: c.K8sBin("agnhost")}}
	tools, err := toolFiles()
	if err != nil {
		return nil, err
	}
	if err := writeImage(agnhost, ociimage.Image{
		Name: AgnhostImage, Entrypoint: []string{"/agnhost"}, Files: append(files, tools...),
	}); err != nil {
		return nil, err
	}
	return []string{pause, agnhost}, nil
}

// writeImage writes one single-layer image archive, unless it exists.
func writeImage(path string, img ociimage.Image) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	img.OS, img.Arch, img.Created = "linux", "amd64", imageEpoch
	img.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	img.WorkingDir = "/"
	// The runtime mounts over these; they exist so that every runtime finds
	// its mount points.
	for _, d := range []string{"/etc", "/tmp", "/dev", "/proc", "/sys"} {
		mode := fs.ModeDir | 0o755
		if d == "/tmp" {
			mode = fs.ModeDir | fs.ModeSticky | 0o777
		}
		img.Files = append(img.Files, ociimage.File{Path: d, Mode: mode})
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := ociimage.Write(f, img, filepath.Dir(path)); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("realnode: image %s: %w", img.Name, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// toolFiles are the shell tools the e2e specs exec in agnhost pods, from
// this machine's Debian packages (dash as sh, grep, cat, curl and
// netcat-openbsd's nc), each with the shared libraries ldd finds for it at
// its own path. Not busybox: its shell runs its own nc applet, which has no
// -u, whatever PATH says.
func toolFiles() ([]ociimage.File, error) {
	var files []ociimage.File
	seen := map[string]bool{}
	for _, tool := range []struct{ path, src string }{{"/bin/sh", "/usr/bin/dash"}, {"/bin/grep", "/usr/bin/grep"},
		{"/bin/cat", "/usr/bin/cat"}, {"/usr/bin/curl", "/usr/bin/curl"}, {"/usr/bin/nc", "/usr/bin/nc.openbsd"}} {
		src, err := filepath.EvalSymlinks(tool.src)
		if err != nil {
			return nil, fmt.Errorf("realnode: %s missing (Debian dash, grep, coreutils, curl, netcat-openbsd; hack/node-assets.sh installs curl and nc): %w", tool.src, err)
		}
		files = append(files, ociimage.File{Path: tool.path, Mode: 0o755, Src: src})
		out, err := exec.Command("ldd", src).Output()
		if err != nil {
			return nil, fmt.Errorf("realnode: ldd %s: %w", src, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			var lib string
			switch {
			case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
				lib = f[2]
			case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
				lib = f[0]
			default:
				continue
			}
			if seen[lib] {
				continue
			}
			seen[lib] = true
			real, err := filepath.EvalSymlinks(lib)
			if err != nil {
				return nil, err
			}
			files = append(files, ociimage.File{Path: lib, Mode: 0o755, Src: real})
		}
	}
	return files, nil
}
