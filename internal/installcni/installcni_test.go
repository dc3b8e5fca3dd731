package installcni

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const conflist = `{"cniVersion":"1.0.0","name":"terway","plugins":[{"type":"terway"}]}`

type fixture struct {
	src, bin, conf string
	opts           Options
	plugin         []byte
}

// newFixture makes a source folder (plugin binary 0755, conflist) and empty
// host folders.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	f := &fixture{src: filepath.Join(root, "src"), bin: filepath.Join(root, "bin"), conf: filepath.Join(root, "net.d")}
	for _, d := range []string{f.src, f.bin, f.conf} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Larger than one comparison chunk, so a difference past it counts.
	f.plugin = bytes.Repeat([]byte("\x7fELF plugin v2 "), 10000)
	write(t, filepath.Join(f.src, "terway"), f.plugin, 0o755)
	write(t, filepath.Join(f.src, "conflist"), []byte(conflist), 0o600)
	f.opts = Options{
		Plugin: filepath.Join(f.src, "terway"), BinDir: f.bin,
		Conflist: filepath.Join(f.src, "conflist"), ConfDir: f.conf, ConflistName: "10-terway.conflist",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return f
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// checkInstalled asserts both targets hold the sources' bytes and modes.
func (f *fixture) checkInstalled(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		path string
		want []byte
		mode os.FileMode
	}{
		{filepath.Join(f.bin, "terway"), f.plugin, 0o755},
		{filepath.Join(f.conf, "10-terway.conflist"), []byte(conflist), 0o644},
	} {
		got, err := os.ReadFile(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: %d bytes, not the source's %d", c.path, len(got), len(c.want))
		}
		st, _ := os.Stat(c.path)
		if st.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %s, want %s", c.path, st.Mode().Perm(), c.mode)
		}
	}
}

// names lists a folder.
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestFreshFolders(t *testing.T) {
	f := newFixture(t)
	r, err := Install(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.PluginWritten || !r.ConflistWritten {
		t.Errorf("fresh install: %+v, want both written", r)
	}
	f.checkInstalled(t)
	if got := names(t, f.bin); len(got) != 1 {
		t.Errorf("bin folder after install: %v, want only terway (no temporary file left)", got)
	}
	// Folders that do not exist yet (a fresh node) are made.
	f.opts.BinDir, f.opts.ConfDir = filepath.Join(f.bin, "new", "bin"), filepath.Join(f.conf, "new")
	if _, err := Install(f.opts); err != nil {
		t.Fatalf("missing target folders: %v", err)
	}
}

// A second run with the same sources writes nothing: same inode, same mtime.
func TestIdempotent(t *testing.T) {
	f := newFixture(t)
	if _, err := Install(f.opts); err != nil {
		t.Fatal(err)
	}
	before := map[string]os.FileInfo{}
	for _, p := range []string{filepath.Join(f.bin, "terway"), filepath.Join(f.conf, "10-terway.conflist")} {
		old := time.Now().Add(-time.Hour)
		os.Chtimes(p, old, old)
		before[p], _ = os.Stat(p)
	}
	r, err := Install(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.PluginWritten || r.ConflistWritten {
		t.Errorf("second run: %+v, want nothing written", r)
	}
	for p, b := range before {
		a, _ := os.Stat(p)
		if !os.SameFile(a, b) || !a.ModTime().Equal(b.ModTime()) {
			t.Errorf("%s rewritten by an idempotent run", p)
		}
	}
}

// An older binary with another mode is replaced by a new inode (a running
// ADD keeps the old one) with the source's mode.
func TestOlderBinaryReplaced(t *testing.T) {
	f := newFixture(t)
	dst := filepath.Join(f.bin, "terway")
	old := append([]byte(nil), f.plugin...)
	old[len(old)-1] = 'X' // same size, differs past the first chunk
	write(t, dst, old, 0o700)
	before, _ := os.Stat(dst)
	r, err := Install(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.PluginWritten {
		t.Error("older binary: not written")
	}
	f.checkInstalled(t)
	after, _ := os.Stat(dst)
	if os.SameFile(before, after) {
		t.Error("older binary overwritten in place; want a rename of a new file")
	}

	// Same content, only the mode differs: still rewritten.
	os.Chmod(dst, 0o644)
	if r, err := Install(f.opts); err != nil || !r.PluginWritten {
		t.Errorf("binary with mode 0644: written=%v err=%v, want rewritten with 0755", r.PluginWritten, err)
	}
	f.checkInstalled(t)
}

// Other files in the folders, including another CNI's conflist and a file
// that merely looks like a temporary file of ours for another target, stay
// byte-identical with their mtime.
func TestForeignFilesLeftIntact(t *testing.T) {
	f := newFixture(t)
	foreign := map[string][]byte{
		filepath.Join(f.conf, "05-cilium.conflist"):              []byte(`{"name":"cilium"}`),
		filepath.Join(f.conf, "10-terway.conflist.bak"):          []byte("backup"),
		filepath.Join(f.conf, TempPrefix+"other.conflist.12345"): []byte("not ours to touch"),
		filepath.Join(f.bin, "bridge"):                           []byte("bridge plugin"),
		filepath.Join(f.bin, "terway-old"):                       []byte("old"),
	}
	old := time.Now().Add(-24 * time.Hour).Truncate(time.Second)
	for p, data := range foreign {
		write(t, p, data, 0o640)
		os.Chtimes(p, old, old)
	}
	if _, err := Install(f.opts); err != nil {
		t.Fatal(err)
	}
	f.checkInstalled(t)
	for p, data := range foreign {
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s changed: %q, %v", p, got, err)
			continue
		}
		st, _ := os.Stat(p)
		if !st.ModTime().Equal(old) || st.Mode().Perm() != 0o640 {
			t.Errorf("%s: mtime %s mode %s, want %s 0640", p, st.ModTime(), st.Mode().Perm(), old)
		}
	}
}

// A run killed mid-copy leaves a temporary file of ours and, for a copy
// made without a rename (the old shell script's cp), a truncated target.
func TestInterruptedEarlierCopy(t *testing.T) {
	f := newFixture(t)
	leftovers := []string{
		filepath.Join(f.bin, TempPrefix+"terway.123456"),
		filepath.Join(f.conf, TempPrefix+"10-terway.conflist.987"),
	}
	for _, p := range leftovers {
		write(t, p, []byte("half"), 0o600)
	}
	write(t, filepath.Join(f.bin, "terway"), f.plugin[:len(f.plugin)/2], 0o755)
	write(t, filepath.Join(f.conf, "10-terway.conflist"), []byte(conflist[:20]), 0o644)
	r, err := Install(f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if !r.PluginWritten || !r.ConflistWritten {
		t.Errorf("truncated targets: %+v, want both rewritten", r)
	}
	f.checkInstalled(t)
	for _, p := range leftovers {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("leftover %s not removed: %v", p, err)
		}
	}
	if got := names(t, f.bin); len(got) != 1 {
		t.Errorf("bin folder: %v, want only terway", got)
	}
}

// Bad sources and targets fail with an error naming what is wrong, and
// leave the installed files as they were.
func TestErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(f *fixture)
		want []string
	}{
		{"missing plugin", func(f *fixture) { f.opts.Plugin = filepath.Join(f.src, "nope") }, []string{"plugin", "source", "no such file"}},
		{"plugin is a folder", func(f *fixture) { f.opts.Plugin = f.src }, []string{"plugin", "not a regular file"}},
		{"missing conflist", func(f *fixture) { f.opts.Conflist = filepath.Join(f.src, "nope") }, []string{"conflist source", "no such file"}},
		{"conflist not a conflist", func(f *fixture) { write(t, f.opts.Conflist, []byte(`{"name":`), 0o644) }, []string{"conflist source", "conflist"}},
		{"bad conflist name", func(f *fixture) { f.opts.ConflistName = "../x.conflist" }, []string{"conflist name"}},
		{"empty plugin flag", func(f *fixture) { f.opts.Plugin = "" }, []string{"plugin: empty"}},
		// A target under a regular file cannot be made, even by root
		// (a read-only folder would not stop root).
		{"target folder unusable", func(f *fixture) { f.opts.BinDir = filepath.Join(f.opts.Conflist, "bin") }, []string{"plugin", "target folder", "not a directory"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			c.edit(f)
			_, err := Install(f.opts)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// An unreadable source, where permissions apply (not as root).
	if os.Geteuid() != 0 {
		f := newFixture(t)
		os.Chmod(f.opts.Plugin, 0o000)
		if _, err := Install(f.opts); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("unreadable plugin: %v", err)
		}
	}
}
