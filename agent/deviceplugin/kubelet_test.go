package deviceplugin_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/terway-reconciler/terway/agent/deviceplugin"
)

func quiet() *slog.Logger {
	if os.Getenv("TERWAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runPlugin runs a plugin in dir until the test ends.
func runPlugin(t *testing.T, dir string, n int) *deviceplugin.Plugin {
	t.Helper()
	p := deviceplugin.New(deviceplugin.Config{Dir: dir, Logger: quiet(), CheckInterval: 200 * time.Millisecond})
	p.Set(n, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return p
}
