package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// registerTimeout bounds one Register call: the kubelet answers at once
// (it dials us back asynchronously), so a slow answer means a dead kubelet
// whose socket file is still there; the next check tries again.
const registerTimeout = 5 * time.Second

// fileID tells one file from its replacement at the same path: the inode
// alone can be reused by a file created right after the old one is
// removed, the change time with it cannot.
type fileID struct {
	dev, ino uint64
	ctime    int64
}

func statID(path string) (fileID, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, true
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, ctime: st.Ctim.Nano()}, true
}

// session is the state of the registration loop: our server and the
// kubelet socket we last registered with.
type session struct {
	srv        *grpc.Server
	served     fileID // our socket, as created
	registered bool
	kubelet    fileID // the kubelet socket registered with
	lastErr    string
}

// Run serves the DevicePlugin service and keeps it registered with the
// kubelet until ctx ends. It returns an error only if the folder cannot be
// served at all at start; later failures (a kubelet that is down) are
// retried at every check. On return our socket is removed.
func (p *Plugin) Run(ctx context.Context) error {
	var s session
	if err := p.serve(&s); err != nil {
		return err
	}
	defer p.stop(&s)
	p.log.Info("device plugin: serving", "resource", p.cfg.ResourceName, "socket", p.SocketPath())

	// File events make a kubelet restart noticed at once; the ticker is
	// the guarantee (a re-created folder loses its watch).
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		p.log.Warn("device plugin: no file watch; polling only", "err", err)
	} else {
		defer w.Close()
		if err := w.Add(p.cfg.Dir); err != nil {
			p.log.Warn("device plugin: cannot watch the device-plugins folder; polling only", "dir", p.cfg.Dir, "err", err)
		}
		events = w.Events
		go func() {
			for range w.Errors { // drained so the watcher never blocks
			}
		}()
	}
	tick := time.NewTicker(p.cfg.CheckInterval)
	defer tick.Stop()
	for {
		p.check(ctx, &s)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case _, ok := <-events:
			if !ok {
				events = nil
			}
		}
	}
}

// check re-serves when our socket is gone or replaced, and registers when
// not registered with the kubelet socket that is there now.
func (p *Plugin) check(ctx context.Context, s *session) {
	if id, ok := statID(p.SocketPath()); !ok || id != s.served {
		p.log.Info("device plugin: our socket was removed (kubelet restart?); serving again", "socket", p.SocketPath())
		if err := p.serve(s); err != nil {
			p.noteErr(s, err)
			return
		}
	}
	kid, ok := statID(p.KubeletSocket())
	if !ok {
		s.registered = false
		p.noteErr(s, fmt.Errorf("device plugin: kubelet socket %s: not there (kubelet down?)", p.KubeletSocket()))
		return
	}
	if s.registered && kid == s.kubelet {
		return
	}
	if s.registered {
		p.log.Info("device plugin: kubelet socket re-created (kubelet restart); registering again", "socket", p.KubeletSocket())
		s.registered = false
	}
	if err := p.register(ctx); err != nil {
		p.noteErr(s, err)
		return
	}
	s.registered, s.kubelet, s.lastErr = true, kid, ""
	p.mu.Lock()
	p.registrations++
	p.mu.Unlock()
	p.log.Info("device plugin: registered with the kubelet", "resource", p.cfg.ResourceName, "endpoint", p.cfg.SocketName, "devices", p.Count())
}

// noteErr logs a failure once until it changes: a kubelet that is down is
// retried every second and must not fill the log.
func (p *Plugin) noteErr(s *session, err error) {
	if err.Error() != s.lastErr {
		p.log.Warn("device plugin: not registered yet; retrying", "err", err)
		s.lastErr = err.Error()
	}
}

// serve (re)starts our gRPC server on a fresh socket.
func (p *Plugin) serve(s *session) error {
	p.stop(s)
	path := p.SocketPath()
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("device plugin: remove stale socket %s: %w", path, err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("device plugin: listen on %s: %w", path, err)
	}
	// The listener must not unlink the path when it closes: a server
	// stopped before its goroutine began to serve closes it only then
	// (grpc's Serve on a stopped server), when the path may be a newer
	// server's socket. stop removes our socket, and only while it is ours.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	id, _ := statID(path)
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() {
		if err := srv.Serve(ln); err != nil {
			p.log.Warn("device plugin: server stopped", "socket", path, "err", err)
		}
	}()
	s.srv, s.served, s.registered = srv, id, false
	return nil
}

// stop ends the server and its streams, and removes its socket unless the
// path is another file by now.
func (p *Plugin) stop(s *session) {
	if s.srv == nil {
		return
	}
	s.srv.Stop()
	s.srv = nil
	if id, ok := statID(p.SocketPath()); ok && id == s.served {
		if err := os.Remove(p.SocketPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("device plugin: remove our socket", "socket", p.SocketPath(), "err", err)
		}
	}
}

// register calls the kubelet's Registration service.
func (p *Plugin) register(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+p.KubeletSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("device plugin: dial kubelet %s: %w", p.KubeletSocket(), err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.cfg.SocketName,
		ResourceName: p.cfg.ResourceName,
		Options:      p.options(),
	})
	if err != nil {
		return fmt.Errorf("device plugin: register %s with kubelet %s: %w", p.cfg.ResourceName, p.KubeletSocket(), err)
	}
	return nil
}
