package golden

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/terway-reconciler/terway/internal/nstest"
	"github.com/terway-reconciler/terway/render"
	"github.com/terway-reconciler/terway/spec"
)

var update = flag.Bool("update", false, "rewrite the expected files of every case")

// minCases guards against a glob or layout change that silently finds fewer
// cases and so tests less.
const minCases = 15

func cases(t *testing.T) []string {
	t.Helper()
	dirs, err := Cases(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < minCases {
		t.Fatalf("found %d golden cases, want at least %d", len(dirs), minCases)
	}
	return dirs
}

func TestGolden(t *testing.T) {
	for _, dir := range cases(t) {
		t.Run(dir, func(t *testing.T) {
			res, err := Check(dir, *update)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range res.Diff {
				t.Errorf("rendered output differs from the golden file (go test ./golden/... -update rewrites it):\n%s", d)
			}
		})
	}
}

// TestShuffledInputsRenderIdentically renders every case with each input
// list shuffled, several times, and wants the same bytes.
func TestShuffledInputsRenderIdentically(t *testing.T) {
	for _, dir := range cases(t) {
		t.Run(dir, func(t *testing.T) {
			in, err := Inputs(dir)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Outputs(in)
			if err != nil {
				t.Fatal(err)
			}
			for seed := uint64(1); seed <= 5; seed++ {
				rng := rand.New(rand.NewPCG(seed, seed*7919))
				shuffled := in
				shuffled.Pods = shuffle(rng, in.Pods)
				shuffled.Namespaces = shuffle(rng, in.Namespaces)
				shuffled.Policies = shuffle(rng, in.Policies)
				shuffled.Allocations = shuffle(rng, in.Allocations)
				shuffled.ENIs = shuffle(rng, in.ENIs)
				got, err := Outputs(shuffled)
				if err != nil {
					t.Fatal(err)
				}
				for name := range want {
					if !bytes.Equal(want[name], got[name]) {
						t.Fatalf("seed %d: %s differs after shuffling inputs:\n%s", seed, name,
							UnifiedDiff("in order", "shuffled", string(want[name]), string(got[name])))
					}
				}
			}
		})
	}
}

func shuffle[T any](rng *rand.Rand, in []T) []T {
	out := append([]T(nil), in...)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// TestDocumentsRoundTrip parses each golden document back, validates it and
// prints it again: YAML and JSON give the same document.
func TestDocumentsRoundTrip(t *testing.T) {
	for _, dir := range cases(t) {
		in, err := Inputs(dir)
		if err != nil {
			t.Fatal(err)
		}
		state, err := render.Render(in)
		if err != nil {
			t.Fatal(err)
		}
		yml, err := state.MarshalYAML()
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := spec.Parse(yml)
		if err != nil {
			t.Fatalf("%s: parse rendered YAML: %v", dir, err)
		}
		again, _ := parsed.MarshalYAML()
		if !bytes.Equal(yml, again) {
			t.Fatalf("%s: YAML round trip changed the document:\n%s", dir, UnifiedDiff("first", "second", string(yml), string(again)))
		}
		js, err := state.MarshalJSONIndent()
		if err != nil {
			t.Fatal(err)
		}
		fromJSON, err := spec.Parse(js)
		if err != nil {
			t.Fatalf("%s: parse rendered JSON: %v", dir, err)
		}
		if y2, _ := fromJSON.MarshalYAML(); !bytes.Equal(yml, y2) {
			t.Fatalf("%s: JSON round trip changed the document", dir)
		}
	}
}

// TestRulesetsPassNftCheck runs `nft -c -f` on every golden ruleset inside a
// throwaway network namespace (as root): the printed syntax is what nft
// accepts, not just what we think it accepts.
func TestRulesetsPassNftCheck(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft not found: install the nftables package (.ci/run does)")
	}
	ns := nstest.Netns(t, "nftcheck")
	tmp := t.TempDir()
	for _, dir := range cases(t) {
		data, err := os.ReadFile(filepath.Join(dir, RulesetFile))
		if err != nil {
			t.Fatal(err)
		}
		// The node's table, then each pod's, each in its own namespace in
		// truth: checked one by one, or nft would merge them into one.
		for i, part := range strings.Split(string(data), "\n# pod ") {
			if i > 0 {
				part = "# pod " + part
			}
			path := filepath.Join(tmp, fmt.Sprintf("%s-%d.nft", filepath.Base(dir), i))
			if err := os.WriteFile(path, []byte(part), 0o600); err != nil {
				t.Fatal(err)
			}
			if out, err := nstest.Exec(ns, "nft", "-c", "-f", path); err != nil {
				t.Errorf("%s: nft -c rejects table %d of the ruleset: %v\n%s", dir, i, err, strings.TrimSpace(out))
			}
		}
	}
}
