package deviceplugin

import (
	"io"
	"log/slog"
	"runtime"
	"testing"

	"github.com/terway-reconciler/terway/internal/devicemanager"
)

// A server stopped before its goroutine began to serve still closes its
// listener when that goroutine runs (grpc's Serve on a stopped server). The
// socket that close would unlink is the path's file by then: a newer
// server's. Serving twice in a row must leave the newer socket in place.
func TestServeAgainKeepsTheNewSocket(t *testing.T) {
	p := New(Config{Dir: devicemanager.ShortDir(t), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var s session
	defer p.stop(&s)
	for i := range 300 {
		if err := p.serve(&s); err != nil {
			t.Fatal(err)
		}
		if err := p.serve(&s); err != nil {
			t.Fatal(err)
		}
		// Let the first server's goroutine run, as a busy machine would
		// after the second server was made.
		for range 5 {
			runtime.Gosched()
		}
		if id, ok := statID(p.SocketPath()); !ok || id != s.served {
			t.Fatalf("round %d: our socket is gone or replaced after serving twice (present %v)", i, ok)
		}
	}
	p.stop(&s)
	if _, ok := statID(p.SocketPath()); ok {
		t.Error("stop left our socket")
	}
}
