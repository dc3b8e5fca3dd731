package realnode

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// The manifest applied to the node differs from the project's only in the
// image lines and the agent's serviceCIDR.
func TestAgentManifestChangesOnlyImageAndServiceCIDR(t *testing.T) {
	c := &Config{Name: "x"}
	c.Defaults()
	orig, err := readLines("../../manifests/terway.yml")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.AgentManifest("../../manifests/terway.yml", "example.com/terway:t1")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(m, "\n")
	if len(got) != len(orig) {
		t.Fatalf("line count %d, want %d", len(got), len(orig))
	}
	images, cidrs := 0, 0
	for i := range got {
		if got[i] == orig[i] {
			continue
		}
		switch strings.TrimSpace(got[i]) {
		case "image: example.com/terway:t1":
			images++
		case "serviceCIDR: " + c.ServiceCIDR.String():
			cidrs++
		default:
			t.Errorf("line %d changed: %q -> %q", i+1, orig[i], got[i])
		}
	}
	if images != 2 || cidrs != 1 {
		t.Errorf("changed %d image lines and %d serviceCIDR lines, want 2 and 1", images, cidrs)
	}
}

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{"realnode": true, "rnt123": true, "a-b": true, "": false,
		"../x": false, "Upper": false, "toolongname-toolongname": false, "a b": false} {
		c := &Config{Name: name}
		if err := c.Validate(); (err == nil) != ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

// Every host-wide sysctl the kubelet writes is covered by a private file in
// the node's mount namespace.
func TestMountScriptCoversKubeletSysctls(t *testing.T) {
	c := &Config{Name: "x"}
	c.Defaults()
	s := c.mountScript(nil)
	for _, k := range []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
		"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"} {
		if !strings.Contains(s, " /proc/sys/"+k+"\n") {
			t.Errorf("mount script leaves /proc/sys/%s to the kubelet", k)
		}
	}
}

func readLines(p string) ([]string, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return strings.Split(string(b), "\n"), nil
}

// On a node with a cloud, the multi-IP manifest's cloud.yaml points at the
// node's emulator: the vSwitch and security group placeholders replaced,
// the metadata URL and the two endpoints added, on the node's loopback
// (never 100.100.100.200, never an address of the machine's namespace);
// nothing else changes besides the image and serviceCIDR.
func TestAgentManifestCloud(t *testing.T) {
	c := &Config{Name: "x", Emulator: "/nonexistent/terwayctl"}
	c.Defaults()
	m, err := c.AgentManifest("../../manifests/terway-multiip.yml", "example.com/terway:t1")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := readLines("../../manifests/terway-multiip.yml")
	if err != nil {
		t.Fatal(err)
	}
	w := World()
	want := map[string]bool{
		"image: example.com/terway:t1":            true,
		"serviceCIDR: " + c.ServiceCIDR.String():  true,
		"vswitchIDs: [" + w.VSwitches[0].ID + "]": true,
		"securityGroupID: " + w.SecurityGroupID:   true,
		"metadata: http://" + EmulatorMetadata:    true,
		"ecsEndpoint: " + EmulatorAPI:             true,
		"vpcEndpoint: " + EmulatorAPI:             true,
	}
	origSet := map[string]int{}
	for _, l := range orig {
		origSet[l]++
	}
	seen := map[string]int{}
	for _, l := range strings.Split(m, "\n") {
		if origSet[l] > 0 {
			origSet[l]--
			continue
		}
		if !want[strings.TrimSpace(l)] {
			t.Errorf("unexpected line %q", l)
		}
		seen[strings.TrimSpace(l)]++
	}
	for l := range want {
		if seen[l] == 0 {
			t.Errorf("missing line %q", l)
		}
	}
	if strings.Contains(m, "REPLACE-ME") || strings.Contains(m, "100.100.100.200") {
		t.Errorf("the manifest still has a placeholder or the real metadata address")
	}
	// A manifest without the cloud.yaml lines is refused, not half-edited.
	if _, err := c.cloudEdits("kind: ConfigMap\n"); err == nil {
		t.Error("cloudEdits of a manifest without cloud.yaml: no error")
	}
}

// A descriptor the process inherited (not close-on-exec, as flock(1)
// passes its lock) does not reach the node's daemons.
func TestInheritedFilesNotPassedOn(t *testing.T) {
	path := t.TempDir() + "/lock"
	fd, err := syscall.Open(path, syscall.O_CREAT|syscall.O_RDWR, 0o600) // no O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	inherits := func() bool {
		out, err := exec.Command("ls", "-l", "/proc/self/fd").CombinedOutput()
		if err != nil {
			t.Fatalf("ls /proc/self/fd: %v: %s", err, out)
		}
		return strings.Contains(string(out), path)
	}
	if !inherits() {
		t.Fatal("a child does not see the descriptor even before: the test proves nothing")
	}
	if err := closeInheritedOnExec(); err != nil {
		t.Fatal(err)
	}
	if inherits() {
		t.Error("a child still inherits the descriptor")
	}
}
