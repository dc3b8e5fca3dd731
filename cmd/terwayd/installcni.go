package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/terway-reconciler/terway/internal/installcni"
)

// installCNIFlags parses `terwayd install-cni` flags. The plugin defaults
// to the terway binary beside terwayd, as the image lays them out.
func installCNIFlags(args []string, stderr io.Writer) (installcni.Options, error) {
	plugin := "terway"
	if exe, err := os.Executable(); err == nil {
		plugin = filepath.Join(filepath.Dir(exe), "terway")
	}
	var o installcni.Options
	fs := flag.NewFlagSet("terwayd install-cni", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Plugin, "plugin", plugin, "CNI plugin binary to install (its mode is kept)")
	fs.StringVar(&o.BinDir, "cni-bin-dir", installcni.DefaultBinDir, "the host's CNI bin folder, as mounted")
	fs.StringVar(&o.Conflist, "conflist", "/etc/terway/"+installcni.DefaultConflistName, "conflist to install")
	fs.StringVar(&o.ConfDir, "cni-conf-dir", installcni.DefaultConfDir, "the host's CNI conf folder, as mounted")
	fs.StringVar(&o.ConflistName, "conflist-name", installcni.DefaultConflistName, "file name of the conflist in --cni-conf-dir")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() != 0 {
		return o, fmt.Errorf("install-cni: unexpected arguments %q", fs.Args())
	}
	return o, nil
}

// runInstallCNI is the init container's job: put the plugin and the
// conflist on the host, then exit.
func runInstallCNI(args []string) error {
	o, err := installCNIFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	_, err = installcni.Install(o)
	return err
}
