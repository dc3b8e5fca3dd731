// Package ociimage writes a single-layer container image as one tar archive
// that both `ctr images import` and `docker load` accept, and reads such an
// archive back to verify it. No daemon, no registry: the archive is plain
// bytes, written deterministically so that the same inputs give the same
// digests.
//
// The archive holds two descriptions of the same blobs, the way `docker
// save` has written them since Docker 25:
//   - the OCI image layout (oci-layout, index.json, blobs/sha256/...), which
//     containerd's importer prefers when oci-layout is present;
//   - the docker-save manifest.json (Config, RepoTags, Layers as paths into
//     blobs/sha256/), which `docker load` with its classic store reads.
package ociimage

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Media types of what the archive holds (OCI image spec v1.1).
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"

	// AnnotationRefName is the OCI annotation naming a manifest in
	// index.json; by the OCI convention (and containerd's) it holds the tag.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is containerd's annotation with the full image
	// name, which `ctr images import` and the CRI use as the image's name.
	AnnotationImageName = "io.containerd.image.name"
)

// File is one entry of the image's only layer.
type File struct {
	// Path in the image, absolute ("/usr/local/bin/terwayd").
	Path string
	// Mode holds the permission bits; fs.ModeDir makes a directory.
	Mode fs.FileMode
	// Src is a file on this machine whose content the entry gets; when
	// empty, Data is the content.
	Src  string
	Data []byte
}

// Image is what the archive describes.
type Image struct {
	// Name is the image reference, with a tag: "terway-reconciler:v1",
	// "registry.example.com/team/terway-reconciler:v1".
	Name string
	// Created is every timestamp in the archive: the config's created
	// field and the mtime of each tar entry, layer and outer archive alike.
	// Reproducible builds set it from SOURCE_DATE_EPOCH.
	Created time.Time
	OS      string
	Arch    string
	// Entrypoint, Env, WorkingDir and Labels go to the image config.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	Labels     map[string]string
	// Files are the layer's content. Parent directories that are not
	// listed are added (mode 0755), so that every tool extracts the same
	// tree.
	Files []File
}

// Descriptor points at one blob, as the OCI spec defines it.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is the OS and architecture an image runs on.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Manifest is the OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is the OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Config is the image configuration, the subset this package writes.
type Config struct {
	Created      string          `json:"created"`
	Architecture string          `json:"architecture"`
	OS           string          `json:"os"`
	Config       ContainerConfig `json:"config"`
	RootFS       RootFS          `json:"rootfs"`
	History      []History       `json:"history,omitempty"`
}

// ContainerConfig is how a container of the image runs by default.
type ContainerConfig struct {
	Entrypoint []string          `json:"Entrypoint,omitempty"`
	Cmd        []string          `json:"Cmd,omitempty"`
	Env        []string          `json:"Env,omitempty"`
	WorkingDir string            `json:"WorkingDir,omitempty"`
	Labels     map[string]string `json:"Labels,omitempty"`
}

// RootFS lists the layers' uncompressed digests.
type RootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// History is one step of how the image came to be.
type History struct {
	Created   string `json:"created,omitempty"`
	CreatedBy string `json:"created_by,omitempty"`
}

// DockerManifestEntry is one image of the docker-save manifest.json.
type DockerManifestEntry struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// Result says what Write wrote.
type Result struct {
	// Manifest is the image manifest's descriptor: its digest is the one a
	// registry shows for the pushed image (the "image digest").
	Manifest Descriptor
	// Config's digest is the image ID that `docker images` shows.
	Config Descriptor
	Layer  Descriptor
	// DiffID is the uncompressed layer's digest.
	DiffID string
}

// Write writes img as an image archive to w. tmpDir holds the compressed
// layer while its digest is computed (the outer tar needs each blob's size
// before its bytes); "" means os.TempDir.
func Write(w io.Writer, img Image, tmpDir string) (Result, error) {
	ref, err := ParseReference(img.Name)
	if err != nil {
		return Result{}, err
	}
	if img.OS == "" || img.Arch == "" {
		return Result{}, fmt.Errorf("image %s: os and architecture must be set", img.Name)
	}
	created := img.Created.UTC().Truncate(time.Second)

	layerFile, err := os.CreateTemp(tmpDir, "ociimage-layer-*")
	if err != nil {
		return Result{}, err
	}
	defer os.Remove(layerFile.Name())
	defer layerFile.Close()
	layer, diffID, err := writeLayer(layerFile, img.Files, created)
	if err != nil {
		return Result{}, fmt.Errorf("image %s: layer: %w", img.Name, err)
	}

	cfg := Config{
		Created:      created.Format(time.RFC3339),
		Architecture: img.Arch,
		OS:           img.OS,
		Config: ContainerConfig{
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			Env:        img.Env,
			WorkingDir: img.WorkingDir,
			Labels:     img.Labels,
		},
		RootFS:  RootFS{Type: "layers", DiffIDs: []string{diffID}},
		History: []History{{Created: created.Format(time.RFC3339), CreatedBy: "ociimage: files of one layer"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return Result{}, err
	}
	cfgDesc := Descriptor{MediaType: MediaTypeConfig, Digest: digestOf(cfgJSON), Size: int64(len(cfgJSON))}
	manifest := Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest, Config: cfgDesc, Layers: []Descriptor{layer}}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return Result{}, err
	}
	manifestDesc := Descriptor{MediaType: MediaTypeManifest, Digest: digestOf(manifestJSON), Size: int64(len(manifestJSON))}
	indexEntry := manifestDesc
	indexEntry.Platform = &Platform{Architecture: img.Arch, OS: img.OS}
	indexEntry.Annotations = map[string]string{
		AnnotationImageName: ref.Normalized(),
		AnnotationRefName:   ref.Tag,
	}
	indexJSON, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{indexEntry}})
	if err != nil {
		return Result{}, err
	}
	dockerJSON, err := json.Marshal([]DockerManifestEntry{{
		Config:   blobPath(cfgDesc.Digest),
		RepoTags: []string{img.Name},
		Layers:   []string{blobPath(layer.Digest)},
	}})
	if err != nil {
		return Result{}, err
	}

	// Entries in name order, each written once: the blob paths sort
	// before index.json, manifest.json and oci-layout.
	type entry struct {
		name string
		data []byte   // or
		file *os.File // for the layer
		size int64
	}
	entries := []entry{
		{name: "blobs/"},
		{name: "blobs/sha256/"},
		{name: blobPath(cfgDesc.Digest), data: cfgJSON},
		{name: blobPath(manifestDesc.Digest), data: manifestJSON},
		{name: blobPath(layer.Digest), file: layerFile, size: layer.Size},
		{name: "index.json", data: indexJSON},
		{name: "manifest.json", data: dockerJSON},
		{name: "oci-layout", data: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, ModTime: created, Format: tar.FormatPAX}
		switch {
		case strings.HasSuffix(e.name, "/"):
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case e.file != nil:
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, e.size
		default:
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return Result{}, err
		}
		if e.file != nil {
			if _, err := e.file.Seek(0, io.SeekStart); err != nil {
				return Result{}, err
			}
			if n, err := io.Copy(tw, e.file); err != nil || n != e.size {
				return Result{}, fmt.Errorf("image %s: copying layer: %d of %d bytes: %v", img.Name, n, e.size, err)
			}
		} else if _, err := tw.Write(e.data); err != nil {
			return Result{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Result{}, err
	}
	return Result{Manifest: manifestDesc, Config: cfgDesc, Layer: layer, DiffID: diffID}, nil
}

// writeLayer writes the gzip-compressed layer tar of files to out and
// returns its descriptor and the uncompressed tar's digest (the diff ID).
// Entries are sorted by path; owner root, fixed mtime; no user or group
// names, no access or change times, so that nothing of this machine leaks
// into the bytes.
func writeLayer(out io.Writer, files []File, mtime time.Time) (Descriptor, string, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(f.Path) || p == "/" {
			return Descriptor{}, "", fmt.Errorf("file %q: path must be absolute and not /", f.Path)
		}
		if _, dup := byPath[p]; dup {
			return Descriptor{}, "", fmt.Errorf("file %q: listed twice", f.Path)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if existing, ok := byPath[d]; ok {
				if !existing.Mode.IsDir() {
					return Descriptor{}, "", fmt.Errorf("file %q: parent %s is a file", p, d)
				}
				continue
			}
			byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	compressed := sha256.New()
	size := &countWriter{}
	// gzip's header carries no name and a zero mtime unless set: the same
	// tar gives the same bytes.
	gz, err := gzip.NewWriterLevel(io.MultiWriter(out, compressed, size), gzip.BestCompression)
	if err != nil {
		return Descriptor{}, "", err
	}
	uncompressed := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(gz, uncompressed))
	for _, p := range paths {
		f := byPath[p]
		name := strings.TrimPrefix(p, "/")
		hdr := &tar.Header{Name: name, ModTime: mtime, Mode: int64(f.Mode.Perm()), Format: tar.FormatPAX}
		if f.Mode&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		if f.Mode.IsDir() {
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
			if err := tw.WriteHeader(hdr); err != nil {
				return Descriptor{}, "", err
			}
			continue
		}
		if !f.Mode.IsRegular() {
			return Descriptor{}, "", fmt.Errorf("file %s: mode %v: only regular files and directories", p, f.Mode)
		}
		data := f.Data
		if f.Src != "" {
			if data, err = os.ReadFile(f.Src); err != nil {
				return Descriptor{}, "", fmt.Errorf("file %s: %w", p, err)
			}
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return Descriptor{}, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return Descriptor{}, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return Descriptor{}, "", err
	}
	if err := gz.Close(); err != nil {
		return Descriptor{}, "", err
	}
	return Descriptor{
		MediaType: MediaTypeLayer,
		Digest:    "sha256:" + hex.EncodeToString(compressed.Sum(nil)),
		Size:      size.n,
	}, "sha256:" + hex.EncodeToString(uncompressed.Sum(nil)), nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// blobPath is where the OCI layout keeps a blob: blobs/sha256/<hex>.
func blobPath(digest string) string {
	return "blobs/" + strings.Replace(digest, ":", "/", 1)
}
