// Package installcni puts the CNI plugin binary and its conflist on the
// host, as the DaemonSet's init container does before the agent starts.
//
// Each file is written to a temporary file of ours in the target folder,
// synced and renamed over the target, so the kubelet and the runtime see
// either the old file or the new one, never a half-written one. A binary
// that a running ADD is executing keeps its old inode. Nothing else in the
// folders is touched: only the two targets and our own leftover temporary
// files (TempPrefix), which a run killed mid-copy leaves behind.
package installcni

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// TempPrefix starts the name of every temporary file this package writes;
// a file named TempPrefix + target + "." + random is ours to remove.
const TempPrefix = ".terway-install-"

// Defaults, as the manifests mount the host's folders.
const (
	DefaultBinDir       = "/host/opt/cni/bin"
	DefaultConfDir      = "/host/etc/cni/net.d"
	DefaultConflistName = "10-terway.conflist"
)

// Options says what to install where.
type Options struct {
	// Plugin is the CNI plugin binary to copy; its mode is kept.
	Plugin string
	// BinDir is the host's CNI bin folder; the binary keeps its base name.
	BinDir string
	// Conflist is the conflist to install (checked to parse as one).
	Conflist string
	// ConfDir is the host's CNI conf folder, ConflistName the file written
	// there.
	ConfDir      string
	ConflistName string
	Logger       *slog.Logger
}

// Result says, per target, whether it was written.
type Result struct {
	PluginPath, ConflistPath       string
	PluginWritten, ConflistWritten bool
}

// Install copies the plugin and the conflist. A target whose content and
// mode already match is left as it is (no write, same mtime), so running
// it again is free.
func Install(o Options) (Result, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ConflistName == "" {
		o.ConflistName = DefaultConflistName
	}
	for _, f := range []struct{ name, v string }{{"plugin", o.Plugin}, {"cni-bin-dir", o.BinDir}, {"conflist", o.Conflist}, {"cni-conf-dir", o.ConfDir}} {
		if f.v == "" {
			return Result{}, fmt.Errorf("install-cni: %s: empty", f.name)
		}
	}
	if strings.ContainsRune(o.ConflistName, os.PathSeparator) || !strings.HasSuffix(o.ConflistName, ".conflist") {
		return Result{}, fmt.Errorf("install-cni: conflist name %q: want a plain file name ending in .conflist", o.ConflistName)
	}
	conf, err := os.ReadFile(o.Conflist)
	if err != nil {
		return Result{}, fmt.Errorf("install-cni: conflist source: %w", err)
	}
	// A conflist the runtime cannot parse takes the node's pod network
	// down; refuse it here, before the old one is replaced.
	if _, err := libcni.ConfListFromBytes(conf); err != nil {
		return Result{}, fmt.Errorf("install-cni: conflist source %s: %w", o.Conflist, err)
	}
	var r Result
	r.PluginPath = filepath.Join(o.BinDir, filepath.Base(o.Plugin))
	r.PluginWritten, err = installPlugin(o.Plugin, r.PluginPath, o.Logger)
	if err != nil {
		return r, fmt.Errorf("install-cni: plugin: %w", err)
	}
	r.ConflistPath = filepath.Join(o.ConfDir, o.ConflistName)
	// The bytes checked above are the ones written (a ConfigMap mount can
	// change under us); readable by all, as the runtime's own conflists.
	r.ConflistWritten, err = installFile(o.Conflist, bytes.NewReader(conf), int64(len(conf)), r.ConflistPath, 0o644, o.Logger)
	if err != nil {
		return r, fmt.Errorf("install-cni: conflist: %w", err)
	}
	return r, nil
}

// installPlugin installs the binary src as dst with src's mode.
func installPlugin(src, dst string, log *slog.Logger) (bool, error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("source: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("source: %w", err)
	}
	if !st.Mode().IsRegular() {
		return false, fmt.Errorf("source %s: not a regular file (%s)", src, st.Mode().Type())
	}
	return installFile(src, in, st.Size(), dst, st.Mode().Perm(), log)
}

// installFile makes dst hold in's size bytes (src names them for errors
// and logs) with the given mode, atomically, unless it already does. It
// reports whether dst was written.
func installFile(src string, in io.ReadSeeker, size int64, dst string, mode fs.FileMode, log *slog.Logger) (bool, error) {
	dir, name := filepath.Split(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("target folder: %w", err)
	}
	removeLeftovers(dir, name, log)

	same, err := sameFile(in, size, dst, mode)
	if err != nil {
		return false, err
	}
	if same {
		log.Info("install-cni: unchanged", "target", dst)
		return false, nil
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("source %s: %w", src, err)
	}
	tmp, err := os.CreateTemp(dir, TempPrefix+name+".*")
	if err != nil {
		return false, fmt.Errorf("target %s: %w", dst, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, in); err != nil {
		return false, fmt.Errorf("copy %s to %s: %w", src, tmp.Name(), err)
	}
	// CreateTemp makes 0600 and the umask must not narrow the mode: chmod
	// the open file, before the rename makes it visible.
	if err := tmp.Chmod(mode); err != nil {
		return false, fmt.Errorf("target %s: %w", tmp.Name(), err)
	}
	// Data on disk before the rename, so a power cut cannot leave the
	// target name on an empty file.
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("target %s: sync: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("target %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return false, fmt.Errorf("target %s: %w", dst, err)
	}
	done = true
	syncDir(dir)
	log.Info("install-cni: installed", "target", dst, "source", src, "mode", mode.String())
	return true, nil
}

// sameFile reports whether dst has src's content (read from in) and mode.
// A missing dst is not the same; a truncated one differs in size.
func sameFile(in io.Reader, size int64, dst string, mode fs.FileMode) (bool, error) {
	st, err := os.Lstat(dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() != size || st.Mode().Perm() != mode {
		return false, nil
	}
	out, err := os.Open(dst)
	if err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	defer out.Close()
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, errA := io.ReadFull(in, a)
		m, errB := io.ReadFull(out, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return false, nil
		}
		endA := errA == io.EOF || errA == io.ErrUnexpectedEOF
		endB := errB == io.EOF || errB == io.ErrUnexpectedEOF
		switch {
		case errA != nil && !endA:
			return false, fmt.Errorf("source: %w", errA)
		case errB != nil && !endB:
			return false, fmt.Errorf("target: %w", errB)
		case endA || endB:
			return endA && endB, nil
		}
	}
}

// removeLeftovers deletes temporary files of ours for this target, left by
// a run that died between create and rename. Other files are not looked at.
func removeLeftovers(dir, name string, log *slog.Logger) {
	matches, err := filepath.Glob(filepath.Join(dir, globEscape(TempPrefix+name+".")+"*"))
	if err != nil {
		return
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			log.Warn("install-cni: leftover temporary file not removed", "path", m, "err", err)
			continue
		}
		log.Info("install-cni: removed leftover temporary file", "path", m)
	}
}

// globEscape quotes the glob metacharacters of a literal file name.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// syncDir makes a rename durable. Best effort: some filesystems refuse
// fsync on a folder, and the rename itself has happened.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
