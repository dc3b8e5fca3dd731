package sim_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/internal/testbin"
	"github.com/terway-reconciler/terway/sim"
)

// The sims of a test run live under a folder of their own and carry the
// run's id in their names, so a run never meets another run's sims.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	root, err := os.MkdirTemp("", "terway-sim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("TERWAY_SIM_ROOT", root)
	code := m.Run()
	os.RemoveAll(root)
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds terwayd, terway (the C forwarder) and terwayctl once per
// test process.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "terway-sim-bin-")
		if buildErr != nil {
			return
		}
		buildErr = testbin.Build(context.Background(), binDir, "terwayd", "terwayctl")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// simName is unique per test run and per call.
func simName(t testing.TB, short string) string {
	return "t" + nstest.RunID + "-" + short
}

// up starts a sim on the YAML and removes it when the test ends.
func up(t testing.TB, short, yaml string) *sim.State {
	t.Helper()
	nstest.RequireRoot(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return upPath(t, short, dir)
}

// upPath starts a sim on a folder or file of YAML and removes it when the
// test ends.
func upPath(t testing.TB, short, cluster string) *sim.State {
	t.Helper()
	nstest.RequireRoot(t)
	name := simName(t, short)
	t.Cleanup(func() {
		if err := sim.Down(name); err != nil {
			t.Errorf("sim down %s: %v", name, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := sim.Up(ctx, sim.Options{Cluster: cluster, Name: name, BinDir: binaries(t), Resync: 2 * time.Second})
	if err != nil {
		t.Fatalf("sim up: %v", err)
	}
	return st
}

// reload reads the sim's state again after apply or delete.
func reload(t testing.TB, st *sim.State) *sim.State {
	t.Helper()
	st2, err := sim.Load(st.Name)
	if err != nil {
		t.Fatal(err)
	}
	return st2
}

func applyYAML(t testing.TB, st *sim.State, yaml string, del bool) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "objects.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var err error
	if del {
		err = sim.Delete(context.Background(), st.Name, &out, f)
	} else {
		err = sim.Apply(context.Background(), st.Name, &out, f)
	}
	if err != nil {
		t.Fatalf("sim apply/delete: %v\n%s", err, out.String())
	}
}

// leftovers lists what a sim called name has on the machine: namespaces,
// processes whose command line names its folder, and its folder.
func leftovers(name string) []string {
	var found []string
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tws."+name+".") {
			found = append(found, "netns "+e.Name())
		}
	}
	dir := sim.Dir(name)
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		cmdline, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cmdline), dir) {
			found = append(found, "process "+p.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	if _, err := os.Stat(dir); err == nil {
		found = append(found, "folder "+dir)
	}
	return found
}
