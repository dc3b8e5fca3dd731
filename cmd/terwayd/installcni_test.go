package main

import (
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/internal/installcni"
)

// Each manifest's init container is `terwayd install-cni` (no shell): its
// flags parse, its folders are the mounts of the host's CNI folders, and
// the conflist it names is the ConfigMap's, which installs.
func TestManifestsInstallCNI(t *testing.T) {
	for _, m := range []string{"terway.yml", "terway-multiip.yml"} {
		t.Run(m, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("..", "..", "manifests", m))
			if err != nil {
				t.Fatal(err)
			}
			var ds *appsv1.DaemonSet
			var cms []corev1.ConfigMap
			for _, doc := range strings.Split(string(data), "\n---\n") {
				var meta struct{ Kind string }
				if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
					t.Fatal(err)
				}
				switch meta.Kind {
				case "DaemonSet":
					ds = &appsv1.DaemonSet{}
					if err := yaml.UnmarshalStrict([]byte(doc), ds); err != nil {
						t.Fatal(err)
					}
				case "ConfigMap":
					var cm corev1.ConfigMap
					if err := yaml.UnmarshalStrict([]byte(doc), &cm); err != nil {
						t.Fatal(err)
					}
					cms = append(cms, cm)
				}
			}
			if ds == nil {
				t.Fatal("no DaemonSet")
			}
			pod := ds.Spec.Template.Spec
			for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
				for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
					if a == "sh" || strings.HasSuffix(a, "/sh") || a == "-c" {
						t.Errorf("container %s runs a shell: %q", c.Name, c.Command)
					}
				}
			}
			if len(pod.InitContainers) != 1 {
				t.Fatalf("%d init containers, want install-cni only", len(pod.InitContainers))
			}
			ic := pod.InitContainers[0]
			if len(ic.Command) < 2 || path.Base(ic.Command[0]) != "terwayd" || ic.Command[1] != "install-cni" {
				t.Fatalf("init container %s: command %q, want terwayd install-cni ...", ic.Name, ic.Command)
			}
			o, err := installCNIFlags(ic.Command[2:], io.Discard)
			if err != nil {
				t.Fatalf("init container flags: %v", err)
			}
			if o.Plugin != path.Join(path.Dir(ic.Command[0]), "terway") {
				t.Errorf("--plugin %s is not the terway binary beside %s", o.Plugin, ic.Command[0])
			}
			// Which volume each mount path is, and what it holds.
			mounts := map[string]corev1.Volume{}
			for _, vm := range ic.VolumeMounts {
				for _, v := range pod.Volumes {
					if v.Name == vm.Name {
						mounts[vm.MountPath] = v
					}
				}
			}
			for dir, host := range map[string]string{o.BinDir: "/opt/cni/bin", o.ConfDir: "/etc/cni/net.d"} {
				if v := mounts[dir]; v.HostPath == nil || v.HostPath.Path != host {
					t.Errorf("%s is not a mount of the host's %s", dir, host)
				}
			}
			v := mounts[path.Dir(o.Conflist)]
			if v.ConfigMap == nil {
				t.Fatalf("--conflist %s is not in a mounted ConfigMap", o.Conflist)
			}
			var conf string
			for _, cm := range cms {
				if cm.Name == v.ConfigMap.Name {
					conf = cm.Data[path.Base(o.Conflist)]
				}
			}
			if conf == "" {
				t.Fatalf("ConfigMap %s has no key %s", v.ConfigMap.Name, path.Base(o.Conflist))
			}

			// The same options, on temporary folders, install.
			tmp := t.TempDir()
			o.Plugin, o.Conflist = filepath.Join(tmp, "terway"), filepath.Join(tmp, "conflist")
			o.BinDir, o.ConfDir = filepath.Join(tmp, "bin"), filepath.Join(tmp, "net.d")
			o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			os.WriteFile(o.Plugin, []byte("plugin"), 0o755)
			os.WriteFile(o.Conflist, []byte(conf), 0o644)
			if _, err := installcni.Install(o); err != nil {
				t.Fatalf("install with the manifest's conflist: %v", err)
			}
		})
	}
}
