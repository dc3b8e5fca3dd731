package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
)

// Each manifest runs the device plugin and mounts the kubelet's
// device-plugins folder where the flag says.
func TestManifestsDevicePlugin(t *testing.T) {
	for _, m := range []string{"terway.yml", "terway-multiip.yml"} {
		t.Run(m, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "manifests", m))
			if err != nil {
				t.Fatal(err)
			}
			var ds *appsv1.DaemonSet
			for _, doc := range strings.Split(string(data), "\n---\n") {
				var meta struct{ Kind string }
				if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
					t.Fatal(err)
				}
				if meta.Kind == "DaemonSet" {
					ds = &appsv1.DaemonSet{}
					if err := yaml.UnmarshalStrict([]byte(doc), ds); err != nil {
						t.Fatal(err)
					}
				}
			}
			if ds == nil {
				t.Fatal("no DaemonSet")
			}
			pod := ds.Spec.Template.Spec
			for _, c := range pod.Containers {
				if c.Name != "terwayd" {
					continue
				}
				args := append(append([]string(nil), c.Command...), c.Args...)
				flags := map[string]string{}
				for i := 0; i+1 < len(args); i++ {
					if strings.HasPrefix(args[i], "--") {
						flags[args[i]] = args[i+1]
					}
				}
				if flags["--device-plugin"] != "on" {
					t.Errorf("terwayd --device-plugin %q, want on (a DaemonSet pod always has a kubelet)", flags["--device-plugin"])
				}
				dir := flags["--device-plugin-dir"]
				for _, vm := range c.VolumeMounts {
					if vm.MountPath != dir {
						continue
					}
					for _, v := range pod.Volumes {
						if v.Name == vm.Name && v.HostPath != nil && v.HostPath.Path == deviceplugin.DefaultDir {
							return
						}
					}
				}
				t.Fatalf("--device-plugin-dir %q is not a mount of hostPath %s", dir, deviceplugin.DefaultDir)
			}
			t.Fatal("no terwayd container")
		})
	}
}

func TestDevicePluginDirFlag(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	empty, withKubelet := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(withKubelet, deviceplugin.KubeletSocketName), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ mode, dir, want string }{
		{"auto", empty, ""}, {"auto", withKubelet, withKubelet},
		{"on", empty, empty}, {"off", withKubelet, ""},
	} {
		got, err := devicePluginDir(c.mode, c.dir, log)
		if err != nil || got != c.want {
			t.Errorf("--device-plugin %s with dir %s: %q, %v; want %q", c.mode, c.dir, got, err, c.want)
		}
	}
	if _, err := devicePluginDir("yes", empty, log); err == nil || !strings.Contains(err.Error(), "--device-plugin") {
		t.Errorf("--device-plugin yes: %v, want an error naming the flag", err)
	}
}
