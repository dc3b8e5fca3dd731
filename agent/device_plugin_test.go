package agent_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
	"github.com/terway-reconciler/terway/internal/devicemanager"
)

// terwayd serves the aliyun/eni device plugin to the kubelet: it registers,
// advertises none in VPC mode without cloud configuration (no cloud
// access, so no ENI to give) and says why in its log, and
// registers again after a kubelet restart.
func TestAgentServesDevicePlugin(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	k := devicemanager.Start(t, dir)
	c := newClusterArgs(t, time.Minute, true, "--device-plugin", "auto", "--device-plugin-dir", dir)

	req := k.Registration(t)
	if req.ResourceName != deviceplugin.ResourceName || req.Version != pluginapi.Version || req.Endpoint != deviceplugin.DefaultSocketName {
		t.Errorf("register request %v", req)
	}
	k.ListOf(t, "no device in VPC mode", devicemanager.Count(0, pluginapi.Healthy))

	// The kubelet restarts: every socket in the folder goes, its own
	// comes back.
	k.Stop()
	entries, err := os.ReadDir(dir)
	must(t, err)
	for _, e := range entries {
		must(t, os.Remove(filepath.Join(dir, e.Name())))
	}
	k = devicemanager.Start(t, dir)
	k.Registration(t)
	k.ListOf(t, "the list again after the restart", devicemanager.Count(0, pluginapi.Healthy))

	c.stopAgent()
	// Why none, said once though the count is refreshed every few seconds.
	if n := strings.Count(c.log(), "advertising 0 aliyun/eni: VPC mode without cloud configuration"); n != 1 {
		t.Errorf("the log says %d times why no aliyun/eni is advertised, want once; log:\n%s", n, c.log())
	}
	if _, err := os.Stat(filepath.Join(dir, deviceplugin.DefaultSocketName)); !os.IsNotExist(err) {
		t.Errorf("the plugin's socket outlives terwayd: %v", err)
	}
}

// Without a kubelet socket (standalone, tests) --device-plugin=auto leaves
// the folder alone.
func TestAgentDevicePluginAutoOff(t *testing.T) {
	dir := devicemanager.ShortDir(t)
	c := newClusterArgs(t, time.Minute, true, "--device-plugin", "auto", "--device-plugin-dir", dir)
	entries, err := os.ReadDir(dir)
	must(t, err)
	if len(entries) != 0 {
		t.Errorf("terwayd wrote %v into a device-plugins folder with no kubelet", entries)
	}
	if !strings.Contains(c.log(), "device plugin off") {
		t.Errorf("no log line saying the device plugin is off; log:\n%s", c.log())
	}
}

// A pod requesting aliyun/eni on a VPC node without cloud configuration
// (the kubelet would not place it there: the node advertises 0) is refused
// at its ADD with an error naming the pod, the resource and the reason,
// instead of getting a podCIDR address it did not ask for; a plain pod
// next to it is served.
func TestAgentRefusesExclusivePodWithoutCloud(t *testing.T) {
	c := newCluster(t, time.Minute)
	c.writeInput("pod_app_x.yaml", strings.Replace(c.podYAML("app", "x", nil, nil),
		"containers: [{name: c, image: i,", `containers: [{name: c, image: i, resources: {limits: {aliyun/eni: "1"}},`, 1))
	c.writeInput("pod_app_plain.yaml", c.podYAML("app", "plain", nil, nil))
	_, err := c.add("app", "x")
	for _, want := range []string{"app/x", "aliyun/eni", "no cloud access"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("ADD of app/x (aliyun/eni, no cloud): %v, want an error saying %q", err, want)
		}
	}
	t.Logf("ADD of app/x: %v", err)
	if _, err := c.add("app", "plain"); err != nil {
		t.Fatalf("ADD of app/plain beside it: %v", err)
	}
}
