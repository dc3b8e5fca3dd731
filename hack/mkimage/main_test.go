package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/internal/ociimage"
)

// shells are names no entry of the image may have: the image runs
// terwayd directly, and nothing in it may start a shell.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "ash": true, "zsh": true, "ksh": true, "busybox": true, "toybox": true}

// TestImage builds the image as `make image` does (the go builds are
// cached after the first), twice, and checks what is in it: the three
// static binaries executable under /usr/local/bin, exactly as built, the
// CA bundle, no shell anywhere, terwayd as the entrypoint, every digest
// matching its blob, and the same bytes from both builds.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the three binaries twice")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(CACertsPath); err != nil {
		t.Fatalf("%v: the image needs the build machine's CA bundle (hack/install-deps.sh installs ca-certificates)", err)
	}
	build := func() (Summary, *ociimage.Archive) {
		t.Helper()
		dir := t.TempDir()
		o := Options{
			Name: "registry.example.com/terway-reconciler:test", Out: filepath.Join(dir, "image.tar"),
			Root: root, Epoch: 1700000000, CACerts: CACertsPath, Arch: "amd64",
			BinDir: filepath.Join(dir, "bin"),
		}
		s, err := Build(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(o.Out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		a, err := ociimage.Read(f) // verifies every digest and size
		if err != nil {
			t.Fatal(err)
		}
		return s, a
	}
	s1, a := build()
	t.Logf("archive %d bytes sha256:%s; manifest %s, config %s, layer %d bytes",
		s1.Size, s1.SHA256, s1.Result.Manifest.Digest, s1.Result.Config.Digest, s1.Result.Layer.Size)
	if a.ManifestDigest != s1.Result.Manifest.Digest {
		t.Errorf("index names manifest %s, Build reported %s", a.ManifestDigest, s1.Result.Manifest.Digest)
	}
	if got := a.Config.Config.Entrypoint; len(got) != 1 || got[0] != "/usr/local/bin/terwayd" {
		t.Errorf("entrypoint %q, want [/usr/local/bin/terwayd]", got)
	}
	if a.Config.OS != "linux" || a.Config.Architecture != "amd64" {
		t.Errorf("config platform %s/%s", a.Config.OS, a.Config.Architecture)
	}
	if len(a.Layers) != 1 {
		t.Fatalf("%d layers, want 1", len(a.Layers))
	}
	entries := map[string]ociimage.LayerEntry{}
	for _, e := range a.Layers[0] {
		entries[strings.TrimSuffix(e.Name, "/")] = e
		if base := path.Base(strings.TrimSuffix(e.Name, "/")); shells[base] {
			t.Errorf("the image has a shell: %s", e.Name)
		}
		if e.Linkname != "" {
			t.Errorf("%s: a link to %s (the image has regular files and folders only)", e.Name, e.Linkname)
		}
	}
	for _, d := range []string{"bin", "usr/bin", "sbin"} {
		if _, ok := entries[d]; ok {
			t.Errorf("the image has /%s", d)
		}
	}
	for _, b := range Binaries {
		e, ok := entries["usr/local/bin/"+b]
		if !ok {
			t.Errorf("no /usr/local/bin/%s in the layer", b)
			continue
		}
		if !e.Mode.IsRegular() || e.Mode.Perm() != 0o755 || e.UID != 0 || e.GID != 0 {
			t.Errorf("/usr/local/bin/%s: mode %v uid %d gid %d, want a root-owned executable", b, e.Mode, e.UID, e.GID)
		}
		data, err := os.ReadFile(s1.Binaries[b])
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("/usr/local/bin/%s is not the binary built", b)
		}
		if err := checkStatic(s1.Binaries[b]); err != nil {
			t.Error(err)
		}
	}
	if e, ok := entries[strings.TrimPrefix(CACertsPath, "/")]; !ok || e.Size == 0 {
		t.Errorf("no CA bundle at %s", CACertsPath)
	}

	s2, _ := build()
	if s1.SHA256 != s2.SHA256 || s1.Result.Manifest.Digest != s2.Result.Manifest.Digest {
		t.Errorf("two builds differ: archive %s vs %s, manifest %s vs %s", s1.SHA256, s2.SHA256, s1.Result.Manifest.Digest, s2.Result.Manifest.Digest)
	}
}
