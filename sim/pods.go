package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/internal/traffic"
)

// A pod is attached the way containerd attaches one: a fresh network
// namespace, then CNI ADD through libcni with the real terway binary and
// the conflist an installed node has; detached with CNI DEL.

func (st *State) cni() (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	conf := fmt.Sprintf(`{"cniVersion": "1.1.0", "name": "terway", "plugins": [{"type": "terway", "socket": %q}]}`, st.socket())
	list, err := libcni.ConfListFromBytes([]byte(conf))
	if err != nil {
		return nil, nil, err
	}
	cfg := libcni.NewCNIConfigWithCacheDir([]string{st.BinDir}, filepath.Join(st.Dir, "cni-cache"), &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}})
	return cfg, list, nil
}

func (st *State) socket() string { return filepath.Join(st.Dir, "terway.sock") }

func runtimeConf(p *Pod) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID, NetNS: p.Netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.Namespace}, {"K8S_POD_NAME", p.Name},
			{"K8S_POD_UID", p.UID}, {"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID}},
	}
}

// attach makes the pod's namespace, runs CNI ADD and starts its server.
// On failure it undoes what it made, so a failed pod leaves nothing.
func (st *State) attach(ctx context.Context, obj *corev1.Pod) (*Pod, error) {
	ns := podNetnsName(st.Name, obj.Namespace, obj.Name)
	p := &Pod{
		Namespace: obj.Namespace, Name: obj.Name, UID: string(obj.UID), Node: st.Node,
		Netns: netnsPath(ns), ContainerID: fmt.Sprintf("sim-%s-%d", ns[len(netnsPrefix(st.Name)):], time.Now().UnixNano()),
	}
	if p.UID == "" {
		p.UID = "sim-" + obj.Namespace + "-" + obj.Name
	}
	p.TCP, p.UDP = podPorts(obj)
	_ = delNetns(ns) // a leftover of a crashed run
	if err := addNetns(ns); err != nil {
		return nil, fmt.Errorf("pod %s: %w", p.Key(), err)
	}
	cfg, list, err := st.cni()
	if err != nil {
		_ = delNetns(ns)
		return nil, err
	}
	res, err := cfg.AddNetworkList(ctx, list, runtimeConf(p))
	if err != nil {
		// A runtime tears a failed sandbox down with DEL: the ADD may have
		// got as far as allocating (an agent killed mid-ADD).
		if derr := st.del(ctx, p); derr != nil {
			err = errors.Join(err, derr)
		}
		_ = delNetns(ns)
		return nil, fmt.Errorf("pod %s: CNI ADD: %w", p.Key(), err)
	}
	r, err := types100.NewResultFromResult(res)
	if err == nil && len(r.IPs) == 0 {
		err = errors.New("the result has no IP")
	}
	if err != nil {
		_ = st.del(ctx, p)
		_ = delNetns(ns)
		return nil, fmt.Errorf("pod %s: CNI ADD result: %w", p.Key(), err)
	}
	p.IP = r.IPs[0].Address.IP.String()
	if len(p.TCP)+len(p.UDP) > 0 {
		args := []string{st.ctl(), "sim", "serve", "--dir", st.Dir, "--netns", p.Netns, "--ip", p.IP}
		if len(p.TCP) > 0 {
			args = append(args, "--tcp", joinInts(p.TCP))
		}
		if len(p.UDP) > 0 {
			args = append(args, "--udp", joinInts(p.UDP))
		}
		pid, err := startReady(st.Dir, "pod-"+p.Namespace+"-"+p.Name+".log", args, 10*time.Second)
		if err != nil {
			_ = st.del(ctx, p)
			_ = delNetns(ns)
			return nil, fmt.Errorf("pod %s: server: %w", p.Key(), err)
		}
		p.ServerPID = pid
	}
	return p, nil
}

// detach runs CNI DEL (retried, as a kubelet does), ends the pod's server
// and removes its namespace.
func (st *State) detach(ctx context.Context, p *Pod) error {
	stop([]int{p.ServerPID}, st.Dir, 2*time.Second)
	if err := st.del(ctx, p); err != nil {
		return err
	}
	return delNetns(filepath.Base(p.Netns))
}

// DEL retry bounds: a kubelet retries a pod's teardown on every sync of
// the pod, with back-off, until it succeeds; the sim retries for
// DelRetryFor, which covers an agent restart (the supervisor's back-off and
// the agent's start), then gives up with the last error.
var (
	DelRetryFor     = 60 * time.Second
	delRetryBackoff = 100 * time.Millisecond
	delRetryMax     = 2 * time.Second
)

// del runs CNI DEL until it succeeds, DelRetryFor passes or ctx ends.
func (st *State) del(ctx context.Context, p *Pod) error {
	cfg, list, err := st.cni()
	if err != nil {
		return err
	}
	start, delay := time.Now(), delRetryBackoff
	for attempt := 1; ; attempt++ {
		err := cfg.DelNetworkList(ctx, list, runtimeConf(p))
		if err == nil {
			return nil
		}
		if time.Since(start)+delay > DelRetryFor || ctx.Err() != nil {
			return fmt.Errorf("pod %s: CNI DEL failed %d times over %s, giving up: %w", p.Key(), attempt, time.Since(start).Round(time.Millisecond), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, delRetryMax)
	}
}

// attachAll attaches the pods with a few workers, as a kubelet starting a
// node's pods does, and returns those that came up plus every failure.
func (st *State) attachAll(ctx context.Context, objs []*corev1.Pod, workers int) ([]*Pod, error) {
	var (
		mu   sync.Mutex
		pods []*Pod
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan *corev1.Pod)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for obj := range work {
				p, err := st.attach(ctx, obj)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					pods = append(pods, p)
				}
				mu.Unlock()
			}
		}()
	}
	for _, obj := range objs {
		work <- obj
	}
	close(work)
	wg.Wait()
	return pods, errors.Join(errs...)
}

func (st *State) ctl() string { return filepath.Join(st.BinDir, "terwayctl") }

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// Serve is the pod server `sim serve` runs: TCP echo and UDP echo on each
// port at ip inside the namespace. It prints "ready" once every socket
// listens and serves until ctx ends.
func Serve(ctx context.Context, netnsPath, ip string, tcp, udp []int) error {
	var servers []*traffic.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	both := map[int][]string{}
	for _, p := range tcp {
		both[p] = append(both[p], "tcp")
	}
	for _, p := range udp {
		both[p] = append(both[p], "udp")
	}
	for port, protos := range both {
		s, err := traffic.Serve(netnsPath, fmt.Sprintf("%s:%d", ip, port), protos...)
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	fmt.Println("ready")
	<-ctx.Done()
	return nil
}
