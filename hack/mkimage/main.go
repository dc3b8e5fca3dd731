// Command mkimage builds the agent's container image, `make image`: static
// terwayd, terway and terwayctl plus the CA certificates the cloud API
// client needs, in one layer on an empty base (no shell, no package
// manager), written as one archive that `ctr -n k8s.io images import`,
// `docker load` and `skopeo copy docker-archive:...` read. No daemon and no
// registry are involved, and two builds of one commit give the same bytes.
//
//	go run ./hack/mkimage -name registry.example.com/terway-reconciler:v1 -o bin/terway-reconciler.tar
package main

import (
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/terway-reconciler/terway/cni/forward"
	"github.com/terway-reconciler/terway/internal/ociimage"
)

// Binaries are the commands the image holds, under BinDir; terwayd is the
// entrypoint (the agent, and `terwayd install-cni` for the init container),
// terway the CNI plugin install-cni copies to the host, terwayctl the
// operator's tool (`kubectl exec ... terwayctl status`).
var Binaries = []string{"terwayd", forwarderBinary, "terwayctl"}

// forwarderBinary is the CNI plugin, a static C program (package
// cni/forward); the others are Go commands under cmd/.
const forwarderBinary = "terway"

// BinDir is where the manifests run the binaries from.
const BinDir = "/usr/local/bin"

// CACertsPath is where Go's crypto/x509 looks first on Linux, and where the
// image keeps the bundle.
const CACertsPath = "/etc/ssl/certs/ca-certificates.crt"

// Options say what to build.
type Options struct {
	Name string // image reference with a tag
	Out  string // archive path
	// Root is the module's directory (the one with go.mod).
	Root string
	// Epoch is SOURCE_DATE_EPOCH: every timestamp in the image.
	Epoch int64
	// CACerts is the bundle copied into the image.
	CACerts string
	Arch    string
	// BinDir keeps the static binaries; "" builds them in a temporary
	// folder that is removed.
	BinDir string
	// Labels go to the image config (version, revision).
	Labels map[string]string
}

// Summary is what a build reports.
type Summary struct {
	Result ociimage.Result
	// Size and SHA256 are the archive file's.
	Size   int64
	SHA256 string
	// Binaries maps each command to its built file.
	Binaries map[string]string
}

func main() {
	var o Options
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		epoch = "0"
	}
	var version, revision string
	flag.StringVar(&o.Name, "name", "", "image name with tag, e.g. registry.example.com/terway-reconciler:v1 (required)")
	flag.StringVar(&o.Out, "o", "bin/terway-reconciler.tar", "archive to write")
	flag.StringVar(&o.Root, "root", ".", "module root")
	flag.StringVar(&epoch, "source-date-epoch", epoch, "Unix time of every timestamp in the image (default $SOURCE_DATE_EPOCH, else 0)")
	flag.StringVar(&o.CACerts, "ca-certs", CACertsPath, "CA bundle to copy into the image (Debian's ca-certificates package)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "GOARCH of the image")
	flag.StringVar(&o.BinDir, "bin-dir", "", "keep the static binaries in DIR (default: a temporary folder)")
	flag.StringVar(&version, "version", "", "org.opencontainers.image.version label")
	flag.StringVar(&revision, "revision", "", "org.opencontainers.image.revision label")
	flag.Parse()
	if err := func() error {
		if o.Name == "" {
			return errors.New("-name is required")
		}
		e, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil || e < 0 {
			return fmt.Errorf("-source-date-epoch %q: want a Unix time in seconds", epoch)
		}
		o.Epoch = e
		o.Labels = map[string]string{}
		if version != "" {
			o.Labels["org.opencontainers.image.version"] = version
		}
		if revision != "" {
			o.Labels["org.opencontainers.image.revision"] = revision
		}
		s, err := Build(context.Background(), o)
		if err != nil {
			return err
		}
		fmt.Printf("%s: image %s, %d bytes, archive sha256:%s\n", o.Out, o.Name, s.Size, s.SHA256)
		fmt.Printf("  manifest (image digest) %s\n  config (image ID)       %s\n  layer                   %s (%d bytes)\n",
			s.Result.Manifest.Digest, s.Result.Config.Digest, s.Result.Layer.Digest, s.Result.Layer.Size)
		return nil
	}(); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// Build compiles the binaries and writes the archive to o.Out (atomically:
// a temporary file in the same folder, renamed).
func Build(ctx context.Context, o Options) (Summary, error) {
	if _, err := ociimage.ParseReference(o.Name); err != nil {
		return Summary{}, err
	}
	if _, err := os.Stat(o.CACerts); err != nil {
		return Summary{}, fmt.Errorf("CA certificates: %w (install Debian's ca-certificates: hack/install-deps.sh)", err)
	}
	binDir := o.BinDir
	if binDir == "" {
		d, err := os.MkdirTemp("", "mkimage-bin-")
		if err != nil {
			return Summary{}, err
		}
		defer os.RemoveAll(d)
		binDir = d
	} else if err := os.MkdirAll(binDir, 0o755); err != nil {
		return Summary{}, err
	}
	bins, err := buildBinaries(ctx, o.Root, binDir, o.Arch)
	if err != nil {
		return Summary{}, err
	}

	img := ociimage.Image{
		Name:       o.Name,
		Created:    time.Unix(o.Epoch, 0),
		OS:         "linux",
		Arch:       o.Arch,
		Entrypoint: []string{path.Join(BinDir, "terwayd")},
		Env:        []string{"PATH=" + BinDir, "SSL_CERT_FILE=" + CACertsPath},
		WorkingDir: "/",
		Labels:     o.Labels,
		Files: []ociimage.File{
			{Path: CACertsPath, Mode: 0o644, Src: o.CACerts},
			// Go's os.TempDir; the agent's own state is on host mounts.
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		},
	}
	for _, b := range Binaries {
		img.Files = append(img.Files, ociimage.File{Path: path.Join(BinDir, b), Mode: 0o755, Src: bins[b]})
	}

	if err := os.MkdirAll(filepath.Dir(o.Out), 0o755); err != nil {
		return Summary{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), ".mkimage-*")
	if err != nil {
		return Summary{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sum := sha256.New()
	counter := &countWriter{}
	res, err := ociimage.Write(io.MultiWriter(tmp, sum, counter), img, filepath.Dir(o.Out))
	if err != nil {
		return Summary{}, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return Summary{}, err
	}
	if err := tmp.Sync(); err != nil {
		return Summary{}, err
	}
	if err := tmp.Close(); err != nil {
		return Summary{}, err
	}
	if err := os.Rename(tmp.Name(), o.Out); err != nil {
		return Summary{}, err
	}
	return Summary{Result: res, Size: counter.n, SHA256: hex.EncodeToString(sum.Sum(nil)), Binaries: bins}, nil
}

// buildBinaries runs one `go build` for all the commands: static
// (CGO_ENABLED=0), without paths of this machine (-trimpath), without the
// build ID and symbol tables (-buildid= -s -w), so that the bytes depend
// on the source and the toolchain only.
func buildBinaries(ctx context.Context, root, dir, arch string) (map[string]string, error) {
	args := []string{"build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", dir + string(filepath.Separator)}
	for _, b := range Binaries {
		if b != forwarderBinary {
			args = append(args, "./cmd/"+b)
		}
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	if err := forward.Build(ctx, filepath.Join(dir, forwarderBinary), arch); err != nil {
		return nil, err
	}
	bins := map[string]string{}
	for _, b := range Binaries {
		p := filepath.Join(dir, b)
		if err := checkStatic(p); err != nil {
			return nil, err
		}
		bins[b] = p
	}
	return bins, nil
}

// checkStatic refuses a binary that needs a dynamic loader or shared
// libraries: the image has neither.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (has an ELF interpreter); the image has no libc", p)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return fmt.Errorf("%s: needs shared libraries %v; the image has none", p, libs)
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
