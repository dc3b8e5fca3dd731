package ociimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Archive is an image archive as read back and verified by Read.
type Archive struct {
	Layout         []byte // oci-layout
	Index          Index
	Manifest       Manifest
	ManifestDigest string
	Config         Config
	ConfigDigest   string
	Docker         []DockerManifestEntry
	// Layers[i] lists the entries of the i-th layer, in archive order.
	Layers [][]LayerEntry
	// Blobs maps each blob's path to its size.
	Blobs map[string]int64
}

// LayerEntry is one entry of a layer tar.
type LayerEntry struct {
	Name     string // as in the tar: "usr/local/bin/terwayd"
	Typeflag byte
	Mode     fs.FileMode // type and permission bits
	Size     int64
	UID, GID int
	Linkname string
	ModTime  int64 // Unix seconds
	// SHA256 is the hex sha256 of a regular file's content.
	SHA256 string
}

// blob is what Read keeps of one file of the archive.
type blob struct {
	digest string // sha256 of the content, "sha256:<hex>"
	size   int64
	data   []byte       // JSON blobs, kept for parsing
	layer  []LayerEntry // when the content is a gzip'd tar
	diffID string       // its uncompressed digest
}

// jsonLimit bounds what Read keeps in memory of one non-layer file.
const jsonLimit = 4 << 20

// Read reads an image archive and verifies it: every blob's name is its
// sha256, the index, the manifest and manifest.json point at blobs that
// are there with the digests and sizes they say, each layer's diff ID in
// the config is the sha256 of its uncompressed tar, and both descriptions
// (OCI and docker-save) name the same config and layers.
func Read(r io.Reader) (*Archive, error) {
	files := map[string]*blob{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		if hdr.Typeflag == tar.TypeDir {
			continue
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg {
			return nil, fmt.Errorf("archive: %s: type %q, want regular files and directories only", name, hdr.Typeflag)
		}
		if _, dup := files[name]; dup {
			return nil, fmt.Errorf("archive: %s appears twice", name)
		}
		b, err := readBlob(tr)
		if err != nil {
			return nil, fmt.Errorf("archive: %s: %w", name, err)
		}
		if b.size != hdr.Size {
			return nil, fmt.Errorf("archive: %s: read %d bytes, header says %d", name, b.size, hdr.Size)
		}
		files[name] = b
	}

	a := &Archive{Blobs: map[string]int64{}}
	for name, b := range files {
		if strings.HasPrefix(name, "blobs/") {
			a.Blobs[name] = b.size
			if want := blobPath(b.digest); name != want {
				return nil, fmt.Errorf("archive: blob %s: content is %s", name, b.digest)
			}
		}
	}
	get := func(what, name string) (*blob, error) {
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("archive: %s: %s missing", what, name)
		}
		return b, nil
	}
	// resolve checks a descriptor against the blob it names.
	resolve := func(what string, d Descriptor) (*blob, error) {
		if !strings.HasPrefix(d.Digest, "sha256:") {
			return nil, fmt.Errorf("archive: %s: digest %q is not sha256", what, d.Digest)
		}
		b, err := get(what, blobPath(d.Digest))
		if err != nil {
			return nil, err
		}
		if b.size != d.Size {
			return nil, fmt.Errorf("archive: %s: descriptor size %d, blob %d bytes", what, d.Size, b.size)
		}
		return b, nil
	}
	parse := func(what string, b *blob, v any) error {
		if b.data == nil {
			return fmt.Errorf("archive: %s: not JSON", what)
		}
		if err := json.Unmarshal(b.data, v); err != nil {
			return fmt.Errorf("archive: %s: %w", what, err)
		}
		return nil
	}

	layout, err := get("OCI layout", "oci-layout")
	if err != nil {
		return nil, err
	}
	var lv struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := parse("oci-layout", layout, &lv); err != nil {
		return nil, err
	}
	if lv.Version != "1.0.0" {
		return nil, fmt.Errorf("archive: oci-layout: imageLayoutVersion %q, want 1.0.0", lv.Version)
	}
	a.Layout = layout.data
	idx, err := get("OCI index", "index.json")
	if err != nil {
		return nil, err
	}
	if err := parse("index.json", idx, &a.Index); err != nil {
		return nil, err
	}
	if len(a.Index.Manifests) != 1 {
		return nil, fmt.Errorf("archive: index.json: %d manifests, want 1", len(a.Index.Manifests))
	}
	md := a.Index.Manifests[0]
	mb, err := resolve("index.json manifests[0]", md)
	if err != nil {
		return nil, err
	}
	if err := parse("manifest "+md.Digest, mb, &a.Manifest); err != nil {
		return nil, err
	}
	a.ManifestDigest = md.Digest
	cb, err := resolve("manifest config", a.Manifest.Config)
	if err != nil {
		return nil, err
	}
	if err := parse("config "+a.Manifest.Config.Digest, cb, &a.Config); err != nil {
		return nil, err
	}
	a.ConfigDigest = a.Manifest.Config.Digest
	if len(a.Config.RootFS.DiffIDs) != len(a.Manifest.Layers) {
		return nil, fmt.Errorf("archive: config has %d diff IDs, manifest %d layers", len(a.Config.RootFS.DiffIDs), len(a.Manifest.Layers))
	}
	for i, l := range a.Manifest.Layers {
		lb, err := resolve(fmt.Sprintf("manifest layers[%d]", i), l)
		if err != nil {
			return nil, err
		}
		if lb.layer == nil {
			return nil, fmt.Errorf("archive: layer %s: not a gzip'd tar", l.Digest)
		}
		if lb.diffID != a.Config.RootFS.DiffIDs[i] {
			return nil, fmt.Errorf("archive: layer %s: uncompressed digest %s, config's diff_ids[%d] says %s", l.Digest, lb.diffID, i, a.Config.RootFS.DiffIDs[i])
		}
		a.Layers = append(a.Layers, lb.layer)
	}

	dm, err := get("docker-save manifest", "manifest.json")
	if err != nil {
		return nil, err
	}
	if err := parse("manifest.json", dm, &a.Docker); err != nil {
		return nil, err
	}
	if len(a.Docker) != 1 {
		return nil, fmt.Errorf("archive: manifest.json: %d images, want 1", len(a.Docker))
	}
	d := a.Docker[0]
	if d.Config != blobPath(a.ConfigDigest) {
		return nil, fmt.Errorf("archive: manifest.json Config %s, OCI manifest's config is %s", d.Config, blobPath(a.ConfigDigest))
	}
	if len(d.Layers) != len(a.Manifest.Layers) {
		return nil, fmt.Errorf("archive: manifest.json has %d layers, OCI manifest %d", len(d.Layers), len(a.Manifest.Layers))
	}
	for i, l := range d.Layers {
		if l != blobPath(a.Manifest.Layers[i].Digest) {
			return nil, fmt.Errorf("archive: manifest.json Layers[%d] %s, OCI manifest's is %s", i, l, blobPath(a.Manifest.Layers[i].Digest))
		}
	}
	return a, nil
}

// readBlob reads one file of the archive: its digest and size, its bytes
// when it is small enough to be JSON, its entries when it is a gzip'd tar.
func readBlob(r io.Reader) (*blob, error) {
	sum := sha256.New()
	counter := &countWriter{}
	br := bufio.NewReader(io.TeeReader(r, io.MultiWriter(sum, counter)))
	b := &blob{}
	magic, _ := br.Peek(2)
	if bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		layer, diffID, err := readLayer(br)
		if err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		b.layer, b.diffID = layer, diffID
	} else {
		data, err := io.ReadAll(io.LimitReader(br, jsonLimit+1))
		if err != nil {
			return nil, err
		}
		if len(data) <= jsonLimit {
			b.data = data
		}
	}
	// Whatever the parsing left (gzip trailer padding, a big non-JSON file).
	if _, err := io.Copy(io.Discard, br); err != nil {
		return nil, err
	}
	b.digest = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	b.size = counter.n
	return b, nil
}

// readLayer lists a gzip'd layer tar and computes its diff ID.
func readLayer(r io.Reader) ([]LayerEntry, string, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, "", err
	}
	gz.Multistream(false)
	uncompressed := sha256.New()
	tee := io.TeeReader(gz, uncompressed)
	tr := tar.NewReader(tee)
	var entries []LayerEntry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, "", err
		}
		e := LayerEntry{
			Name: hdr.Name, Typeflag: hdr.Typeflag, Mode: hdr.FileInfo().Mode(), Size: hdr.Size,
			UID: hdr.Uid, GID: hdr.Gid, Linkname: hdr.Linkname, ModTime: hdr.ModTime.Unix(),
		}
		if hdr.Typeflag == tar.TypeReg {
			h := sha256.New()
			if _, err := io.Copy(h, tr); err != nil {
				return nil, "", fmt.Errorf("%s: %w", hdr.Name, err)
			}
			e.SHA256 = hex.EncodeToString(h.Sum(nil))
		}
		entries = append(entries, e)
	}
	// The tar's end-of-archive padding counts in the diff ID.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return nil, "", err
	}
	return entries, "sha256:" + hex.EncodeToString(uncompressed.Sum(nil)), nil
}
