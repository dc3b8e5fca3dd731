package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/terway-reconciler/terway/agent"
	"github.com/terway-reconciler/terway/internal/ociimage"
)

var manifestFiles = []string{"terway.yml", "terway-multiip.yml"}

// daemonSet returns the DaemonSet of a manifest file.
func daemonSet(t *testing.T, file string) *appsv1.DaemonSet {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if meta.Kind == "DaemonSet" {
			ds := &appsv1.DaemonSet{}
			if err := yaml.UnmarshalStrict([]byte(doc), ds); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			return ds
		}
	}
	t.Fatalf("%s: no DaemonSet", file)
	return nil
}

// Each manifest runs the image as mkimage builds it, and stays scheduled
// and healthy the way a CNI DaemonSet must: binaries at the image's paths,
// one image for every container, readiness on /readyz at the agent's health
// address, requests on every container, a grace period, a rolling update of
// one node at a time, system-node-critical, and the kubelet's device plugin
// folder mounted where the kubelet has it.
func TestManifestsRunTheImage(t *testing.T) {
	host, port, err := net.SplitHostPort(agent.DefaultHealthAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range manifestFiles {
		t.Run(m, func(t *testing.T) {
			ds := daemonSet(t, filepath.Join("..", "..", "manifests", m))
			pod := ds.Spec.Template.Spec
			all := append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...)
			image := all[0].Image
			if _, err := ociimage.ParseReference(image); err != nil {
				t.Errorf("image: %v", err)
			}
			for _, c := range all {
				if c.Image != image {
					t.Errorf("container %s: image %s, the others run %s", c.Name, c.Image, image)
				}
				if len(c.Command) == 0 || path.Dir(c.Command[0]) != BinDir || !contains(Binaries, path.Base(c.Command[0])) {
					t.Errorf("container %s: command %q does not start with one of the image's binaries in %s", c.Name, c.Command, BinDir)
				}
				if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
					t.Errorf("container %s: no cpu and memory requests", c.Name)
				}
			}
			if len(pod.Containers) != 1 || pod.Containers[0].Name != "terwayd" {
				t.Fatalf("containers %v, want terwayd", pod.Containers)
			}
			agentC := pod.Containers[0]
			rp := agentC.ReadinessProbe
			if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/readyz" || rp.HTTPGet.Host != host || rp.HTTPGet.Port.String() != port {
				t.Errorf("readiness probe %+v, want httpGet %s/readyz (the agent's default --health-addr)", rp, agent.DefaultHealthAddr)
			}
			if !pod.HostNetwork {
				t.Error("not hostNetwork: the kubelet's probe of 127.0.0.1 would not reach the agent")
			}
			if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 10 {
				t.Errorf("terminationGracePeriodSeconds %v, want at least 10 (the agent drains CNI calls for 5 s)", pod.TerminationGracePeriodSeconds)
			}
			if pod.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName %q, want system-node-critical", pod.PriorityClassName)
			}
			us := ds.Spec.UpdateStrategy
			if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil ||
				us.RollingUpdate.MaxUnavailable == nil || us.RollingUpdate.MaxUnavailable.String() != "1" {
				t.Errorf("updateStrategy %+v, want RollingUpdate with maxUnavailable 1", us)
			}
			const dp = "/var/lib/kubelet/device-plugins"
			var mounted bool
			for _, vm := range agentC.VolumeMounts {
				if vm.MountPath != dp {
					continue
				}
				for _, v := range pod.Volumes {
					if v.Name == vm.Name && v.HostPath != nil && v.HostPath.Path == dp {
						mounted = true
					}
				}
			}
			if !mounted {
				t.Errorf("terwayd does not mount the host's %s at the same path", dp)
			}
		})
	}
}

// `make manifests IMAGE=...` sets the image of every container of both
// manifests and changes nothing else.
func TestMakeManifests(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var copies []string
	orig := map[string][]byte{}
	for _, m := range manifestFiles {
		data, err := os.ReadFile(filepath.Join(root, "manifests", m))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, m)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		copies, orig[p] = append(copies, p), data
	}
	const image = "registry.example.com:5000/team/terway-reconciler:v1.2.3"
	out, err := exec.Command("make", "-s", "-C", root, "manifests", "IMAGE="+image, "MANIFESTS="+strings.Join(copies, " ")).CombinedOutput()
	if err != nil {
		t.Fatalf("make manifests: %v\n%s", err, out)
	}
	for _, p := range copies {
		ds := daemonSet(t, p)
		pod := ds.Spec.Template.Spec
		for _, c := range append(append([]corev1.Container(nil), pod.InitContainers...), pod.Containers...) {
			if c.Image != image {
				t.Errorf("%s: container %s: image %s, want %s", filepath.Base(p), c.Name, c.Image, image)
			}
		}
		// Only the image lines differ.
		got, _ := os.ReadFile(p)
		before, after := strings.Split(string(orig[p]), "\n"), strings.Split(string(got), "\n")
		if len(before) != len(after) {
			t.Fatalf("%s: %d lines, was %d", filepath.Base(p), len(after), len(before))
		}
		for i := range before {
			if before[i] != after[i] && !strings.HasSuffix(after[i], "image: "+image) {
				t.Errorf("%s line %d changed: %q -> %q", filepath.Base(p), i+1, before[i], after[i])
			}
		}
	}
	// A name a shell or sed would misread is refused, the files untouched.
	snapshot, _ := os.ReadFile(copies[0])
	if out, err := exec.Command("make", "-s", "-C", root, "manifests", "IMAGE=x#y:1", "MANIFESTS="+copies[0]).CombinedOutput(); err == nil {
		t.Errorf("make manifests IMAGE='x#y:1' succeeded: %s", out)
	}
	if now, _ := os.ReadFile(copies[0]); !bytes.Equal(now, snapshot) {
		t.Error("a refused IMAGE changed the manifest")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
