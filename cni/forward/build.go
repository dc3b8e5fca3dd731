package forward

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Source is the forwarder's C source, built by Build (and by make build
// from the same file).
//
//go:embed forwarder/terway.c
var Source []byte

// CFlags are the flags of every build of the forwarder: static, so that
// an exec maps no shared library (a dynamic build costs each ADD the
// loader); without a C library, whose start-up costs each exec more than
// the program (terway.c says why); not position-independent, since
// nothing would relocate it; stripped, and warning-free. Without a
// stack protector, whose canary libc would set up, and without turning
// the file's own memset and memcpy loops into calls to themselves.
var CFlags = []string{"-std=c11", "-O2", "-static", "-nostdlib", "-ffreestanding", "-fno-pie", "-no-pie",
	"-fno-stack-protector", "-fno-tree-loop-distribute-patterns", "-s", "-Wall", "-Wextra", "-Werror"}

// compilers name the C compiler for each GOARCH the image is built for,
// when it is not the machine's own (Debian's cross compilers).
var compilers = map[string]string{"amd64": "x86_64-linux-gnu-gcc", "arm64": "aarch64-linux-gnu-gcc"}

// Build compiles the forwarder for arch (a GOARCH; "" is the machine's)
// into out. The compiler is $CC, else cc for the machine's own arch and
// Debian's cross compiler for another.
func Build(ctx context.Context, out, arch string) error {
	cc := os.Getenv("CC")
	if arch != "" && arch != runtime.GOARCH {
		if cc = compilers[arch]; cc == "" {
			return fmt.Errorf("build the CNI forwarder for %s: no C compiler known for that arch", arch)
		}
	} else if cc == "" {
		cc = "cc"
	}
	if _, err := exec.LookPath(cc); err != nil {
		return fmt.Errorf("build the CNI forwarder: C compiler %s: %w (install Debian's gcc and libc6-dev: hack/install-deps.sh)", cc, err)
	}
	dir, err := os.MkdirTemp("", "terway-forwarder-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "terway.c")
	if err := os.WriteFile(src, Source, 0o600); err != nil {
		return err
	}
	// The source's path is not in a stripped binary; -ffile-prefix-map
	// keeps any other mention of the temporary folder out too.
	args := append(append([]string{}, CFlags...), "-ffile-prefix-map="+dir+"=.", "-o", out, src)
	cmd := exec.CommandContext(ctx, cc, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the CNI forwarder: %s %v: %w\n%s", cc, args, err, b)
	}
	return nil
}
