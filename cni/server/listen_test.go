package server

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/cni/wire"
)

func TestListenCreatesPrivateDirectory(t *testing.T) {
	sock := filepath.Join(sockDir(t), "run", "terway", "terway.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	fi, err := os.Stat(filepath.Dir(sock))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != wire.SocketDirMode {
		t.Errorf("socket directory mode = %o, want %o", fi.Mode().Perm(), wire.SocketDirMode)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %v, %v; want 0600", fi.Mode(), err)
	}
}

func TestListenTightensExistingDirectory(t *testing.T) {
	dir := filepath.Join(sockDir(t), "wide")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(filepath.Join(dir, "a.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != wire.SocketDirMode {
		t.Errorf("existing directory left at %o, want %o", fi.Mode().Perm(), wire.SocketDirMode)
	}
}

func TestListenLeavesSharedDirectoryAlone(t *testing.T) {
	dir := filepath.Join(sockDir(t), "shared")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "other.pid"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(filepath.Join(dir, "a.sock"))
	if err == nil || !strings.Contains(err.Error(), "shared") || !strings.Contains(err.Error(), "other.pid") {
		t.Fatalf("got %v, want a refusal naming the other entry", err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o755 {
		t.Errorf("shared directory mode changed to %o", fi.Mode().Perm())
	}
}

func TestListenReplacesStaleSocketOnly(t *testing.T) {
	dir := sockDir(t)
	sock := filepath.Join(dir, "a.sock")

	// A socket left behind by a dead agent is replaced.
	old, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = old.Close()
	l, err := Listen(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}

	// A live agent is not robbed of its socket.
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	_ = l.Close()

	// A regular file is never removed.
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("regular file was touched")
	}

	if _, err := Listen("relative.sock"); err == nil {
		t.Error("relative path accepted")
	}
}
