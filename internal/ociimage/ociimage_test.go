package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testImage(t *testing.T) Image {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("#binary\x00\x01"), 0o600); err != nil {
		t.Fatal(err)
	}
	return Image{
		Name:       "registry.example.com:5000/team/tool:v1.2",
		Created:    time.Unix(1700000000, 0),
		OS:         "linux",
		Arch:       "amd64",
		Entrypoint: []string{"/usr/local/bin/tool"},
		Env:        []string{"PATH=/usr/local/bin"},
		Files: []File{
			{Path: "/usr/local/bin/tool", Mode: 0o755, Src: src},
			{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: []byte("-----BEGIN CERTIFICATE-----\n")},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		},
	}
}

func write(t *testing.T, img Image) ([]byte, Result) {
	t.Helper()
	var buf bytes.Buffer
	res, err := Write(&buf, img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), res
}

// The archive reads back with both descriptions agreeing, the layer holds
// the files with their parents, root-owned, at the fixed time, and the
// name is in manifest.json and in index.json's annotations.
func TestWriteRead(t *testing.T) {
	img := testImage(t)
	data, res := write(t, img)
	a, err := Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if a.ManifestDigest != res.Manifest.Digest || a.ConfigDigest != res.Config.Digest {
		t.Errorf("read manifest %s config %s, wrote %s %s", a.ManifestDigest, a.ConfigDigest, res.Manifest.Digest, res.Config.Digest)
	}
	ann := a.Index.Manifests[0].Annotations
	if got := ann[AnnotationImageName]; got != "registry.example.com:5000/team/tool:v1.2" {
		t.Errorf("%s = %q", AnnotationImageName, got)
	}
	if got := ann[AnnotationRefName]; got != "v1.2" {
		t.Errorf("%s = %q, want the tag", AnnotationRefName, got)
	}
	if p := a.Index.Manifests[0].Platform; p == nil || p.OS != "linux" || p.Architecture != "amd64" {
		t.Errorf("index platform %+v", p)
	}
	if got := a.Docker[0].RepoTags; len(got) != 1 || got[0] != img.Name {
		t.Errorf("manifest.json RepoTags %q", got)
	}
	if got := a.Config.Config.Entrypoint; len(got) != 1 || got[0] != "/usr/local/bin/tool" {
		t.Errorf("entrypoint %q", got)
	}
	if a.Config.Created != "2023-11-14T22:13:20Z" {
		t.Errorf("created %q", a.Config.Created)
	}

	var names []string
	for _, e := range a.Layers[0] {
		names = append(names, e.Name)
		if e.UID != 0 || e.GID != 0 || e.ModTime != img.Created.Unix() {
			t.Errorf("%s: uid %d gid %d mtime %d", e.Name, e.UID, e.GID, e.ModTime)
		}
	}
	want := "etc/ etc/ssl/ etc/ssl/certs/ etc/ssl/certs/ca-certificates.crt tmp/ usr/ usr/local/ usr/local/bin/ usr/local/bin/tool"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("layer entries\n got %s\nwant %s", got, want)
	}
	for _, e := range a.Layers[0] {
		switch e.Name {
		case "usr/local/bin/tool":
			sum := sha256.Sum256([]byte("#binary\x00\x01"))
			if e.Mode != 0o755 || e.SHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("%s: mode %v sha256 %s", e.Name, e.Mode, e.SHA256)
			}
		case "tmp/":
			if e.Mode != fs.ModeDir|fs.ModeSticky|0o777 {
				t.Errorf("tmp: mode %v", e.Mode)
			}
		}
	}
}

// The same inputs give the same bytes; another time or name, other digests.
func TestWriteDeterministic(t *testing.T) {
	img := testImage(t)
	a, ra := write(t, img)
	b, rb := write(t, img)
	if !bytes.Equal(a, b) || ra.Manifest.Digest != rb.Manifest.Digest {
		t.Fatalf("two writes of one image differ: %s vs %s", ra.Manifest.Digest, rb.Manifest.Digest)
	}
	later := img
	later.Created = img.Created.Add(time.Second)
	if _, rc := write(t, later); rc.Layer.Digest == ra.Layer.Digest || rc.Manifest.Digest == ra.Manifest.Digest {
		t.Error("another mtime gave the same layer or manifest")
	}
	renamed := img
	renamed.Name = "tool:v2"
	if _, rc := write(t, renamed); rc.Manifest.Digest != ra.Manifest.Digest {
		t.Error("the name changed the manifest (it belongs in the index only)")
	}
}

// rewrite copies an archive, letting edit change each file's content.
func rewrite(t *testing.T, data []byte, edit func(name string, b []byte) []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(data)), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		b = edit(hdr.Name, b)
		hdr.Size = int64(len(b))
		tw.WriteHeader(hdr)
		tw.Write(b)
	}
	tw.Close()
	return out.Bytes()
}

// Read refuses an archive whose blobs do not match what points at them.
func TestReadRefusesInconsistent(t *testing.T) {
	data, res := write(t, testImage(t))
	layer := blobPath(res.Layer.Digest)
	for _, c := range []struct {
		name string
		edit func(name string, b []byte) []byte
		want string
	}{
		{"a layer byte changed", func(n string, b []byte) []byte {
			if n == layer {
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 1
			}
			return b
		}, layer + ": layer"},
		{"the config edited", func(n string, b []byte) []byte {
			if n == blobPath(res.Config.Digest) {
				return append(b, '\n')
			}
			return b
		}, "content is"},
		{"manifest.json names another layer", func(n string, b []byte) []byte {
			if n == "manifest.json" {
				return bytes.Replace(b, []byte(layer), []byte(blobPath(res.Config.Digest)), 1)
			}
			return b
		}, "manifest.json Layers[0]"},
		{"no oci-layout", func(n string, b []byte) []byte {
			if n == "oci-layout" {
				return []byte(`{"imageLayoutVersion":"2"}`)
			}
			return b
		}, "imageLayoutVersion"},
	} {
		_, err := Read(bytes.NewReader(rewrite(t, data, c.edit)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestWriteRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Image)
		want string
	}{
		{"no tag", func(i *Image) { i.Name = "tool" }, "no tag"},
		{"relative path", func(i *Image) { i.Files[0].Path = "usr/bin/x" }, "absolute"},
		{"a file under a file", func(i *Image) {
			i.Files = append(i.Files, File{Path: "/usr/local/bin/tool/x", Mode: 0o644})
		}, "is a file"},
		{"a symlink", func(i *Image) {
			i.Files = append(i.Files, File{Path: "/bin/sh", Mode: fs.ModeSymlink | 0o777})
		}, "only regular files"},
		{"no arch", func(i *Image) { i.Arch = "" }, "architecture"},
	} {
		img := testImage(t)
		c.edit(&img)
		_, err := Write(io.Discard, img, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
	}
}

func TestParseReference(t *testing.T) {
	for _, c := range []struct{ in, normalized, err string }{
		{"terway-reconciler:dev", "docker.io/library/terway-reconciler:dev", ""},
		{"team/terway:v1", "docker.io/team/terway:v1", ""},
		{"registry.example.com/terway-reconciler:1.0", "registry.example.com/terway-reconciler:1.0", ""},
		{"localhost:5000/a/b:t", "localhost:5000/a/b:t", ""},
		{"localhost/x:t", "localhost/x:t", ""},
		{"terway-reconciler", "", "no tag"},
		{"registry:5000/terway", "", "no tag"},
		{"Terway:v1", "", "path component"},
		{"terway:-v1", "", "tag"},
		{"terway@sha256:abc", "", "digest"},
		{"", "", "empty"},
	} {
		r, err := ParseReference(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want an error with %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if r.Normalized() != c.normalized || r.String() != c.in {
			t.Errorf("%q: normalized %q string %q", c.in, r.Normalized(), r.String())
		}
	}
}
