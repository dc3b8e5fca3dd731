// Package testbin builds the project's binaries for tests that run them as
// processes: Go commands with `go build`, and the terway CNI binary, which
// is the C forwarder of package cni/forward.
package testbin

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"

	"github.com/terway-reconciler/terway/cni/forward"
)

const module = "github.com/terway-reconciler/terway"

// Build writes into dir the Go commands named (cmd/<name>, e.g. "terwayd")
// and the terway CNI binary.
func Build(ctx context.Context, dir string, commands ...string) error {
	if len(commands) > 0 {
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		for _, c := range commands {
			args = append(args, module+"/cmd/"+c)
		}
		if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %v: %v\n%s", commands, err, out)
		}
	}
	return forward.Build(ctx, filepath.Join(dir, "terway"), "")
}
