package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/terway-reconciler/terway/internal/traffic"
)

// cniTimeout bounds one CNI call: the agent may wait up to its PodTimeout
// (10 s) for the pod object before answering an ADD.
const cniTimeout = 60 * time.Second

// setup makes the pod's namespace and runs CNI ADD. On failure it undoes
// what it made (a runtime calls DEL after a failed ADD), so a retry starts
// clean.
func (k *Kubelet) setup(ctx context.Context, pod *corev1.Pod) (*sandbox, error) {
	key := pod.Namespace + "/" + pod.Name
	// Named after the UID: a pod recreated under the same name gets a new
	// namespace, and names stay short (ip-netns has no length limit, but
	// people read them).
	sum := sha256.Sum256([]byte(pod.UID))
	id := hex.EncodeToString(sum[:])
	nsName := k.cfg.NetnsPrefix + id[:8]
	if out, err := exec.Command("ip", "netns", "add", nsName).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pod %s: ip netns add %s: %v: %s", key, nsName, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-n", nsName, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		_ = deleteNetns(nsName)
		return nil, fmt.Errorf("pod %s: netns %s: set lo up: %v: %s", key, nsName, err, strings.TrimSpace(string(out)))
	}
	sb := &sandbox{netnsName: nsName, Sandbox: Sandbox{
		Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID),
		Netns: "/var/run/netns/" + nsName, ContainerID: "kubelet-" + id[:16],
	}}
	sb.rt = &libcni.RuntimeConf{
		ContainerID: sb.ContainerID, NetNS: sb.Netns, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
			{"K8S_POD_UID", string(pod.UID)}, {"K8S_POD_INFRA_CONTAINER_ID", sb.ContainerID}},
	}
	start := time.Now()
	ip, err := k.add(ctx, sb)
	if err != nil {
		k.undo(ctx, key, sb)
		return nil, fmt.Errorf("pod %s: CNI ADD: %w", key, err)
	}
	sb.IP = ip
	if k.cfg.Serve {
		if err := sb.serve(pod); err != nil {
			k.undo(ctx, key, sb)
			return nil, fmt.Errorf("pod %s: %w", key, err)
		}
	}
	k.mu.Lock()
	if k.stopped { // Stop ran meanwhile and will not see this sandbox
		k.mu.Unlock()
		k.undo(ctx, key, sb)
		return nil, fmt.Errorf("pod %s: kubelet stopped", key)
	}
	k.sandboxes[key] = sb
	k.mu.Unlock()
	k.cfg.Logf("kubelet: pod %s: sandbox %s up with %s in %s", key, nsName, ip, time.Since(start).Round(time.Millisecond))
	return sb, nil
}

func (k *Kubelet) add(ctx context.Context, sb *sandbox) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	res, err := k.cni.AddNetworkList(ctx, k.netconf, sb.rt)
	if err != nil {
		return "", err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("result: %w", err)
	}
	if len(r.IPs) == 0 {
		return "", errors.New("result has no IP")
	}
	return r.IPs[0].Address.IP.String(), nil
}

// undo removes a half-made sandbox: DEL (errors only logged, as a runtime
// does), servers, namespace.
func (k *Kubelet) undo(ctx context.Context, key string, sb *sandbox) {
	ctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	if err := k.cni.DelNetworkList(ctx, k.netconf, sb.rt); err != nil {
		k.cfg.Logf("kubelet: pod %s: CNI DEL after a failed setup: %v", key, err)
	}
	sb.closeServers()
	if err := deleteNetns(sb.netnsName); err != nil {
		k.cfg.Logf("kubelet: pod %s: %v", key, err)
	}
}

// teardown runs CNI DEL and removes the namespace. A failed DEL is
// retried: the agent must release the address.
func (k *Kubelet) teardown(ctx context.Context, key string, sb *sandbox) error {
	dctx, cancel := context.WithTimeout(ctx, cniTimeout)
	defer cancel()
	if err := k.cni.DelNetworkList(dctx, k.netconf, sb.rt); err != nil {
		return fmt.Errorf("pod %s: CNI DEL: %w", key, err)
	}
	sb.closeServers()
	if err := deleteNetns(sb.netnsName); err != nil {
		return fmt.Errorf("pod %s: %w", key, err)
	}
	k.mu.Lock()
	delete(k.sandboxes, key)
	k.mu.Unlock()
	k.cfg.Logf("kubelet: pod %s: sandbox %s torn down", key, sb.netnsName)
	return nil
}

// finishDeletion removes the pod object once its sandbox is gone, as the
// kubelet does after a graceful deletion: without it `kubectl delete pod`
// would leave the pod Terminating forever.
func (k *Kubelet) finishDeletion(ctx context.Context, pod *corev1.Pod) error {
	zero := int64(0)
	uid := pod.UID
	err := k.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("pod %s/%s: finish deletion: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// reportRunning writes what the kubelet would once the pod's containers
// run: IP, phase, conditions, container statuses. Nothing is written when
// the status already says so, so the update it causes ends the loop.
func (k *Kubelet) reportRunning(ctx context.Context, pod *corev1.Pod, sb *sandbox) error {
	if isReported(pod, sb.IP) {
		k.markReported(pod.Namespace+"/"+pod.Name, sb)
		return nil
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := k.cfg.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if string(cur.UID) != sb.UID {
			return fmt.Errorf("uid %s, sandbox was made for %s", cur.UID, sb.UID)
		}
		setRunning(cur, sb.IP, k.cfg.HostIP)
		_, err = k.cfg.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s: update status (podIP %s, Running): %w", pod.Namespace, pod.Name, sb.IP, err)
	}
	k.markReported(pod.Namespace+"/"+pod.Name, sb)
	return nil
}

func (k *Kubelet) markReported(key string, sb *sandbox) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.sandboxes[key]; cur == sb {
		sb.Reported = true
	}
}

func isReported(pod *corev1.Pod, ip string) bool {
	if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP != ip {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func setRunning(pod *corev1.Pod, ip, hostIP string) {
	now := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if hostIP != "" {
		pod.Status.HostIP = hostIP
		pod.Status.HostIPs = []corev1.HostIP{{IP: hostIP}}
	}
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	for _, t := range []corev1.PodConditionType{
		corev1.PodScheduled, corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady,
	} {
		setCondition(pod, t, now)
	}
	pod.Status.ContainerStatuses = nil
	started := true
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
}

func setCondition(pod *corev1.Pod, t corev1.PodConditionType, now metav1.Time) {
	for i := range pod.Status.Conditions {
		if c := &pod.Status.Conditions[i]; c.Type == t {
			if c.Status != corev1.ConditionTrue {
				c.Status, c.LastTransitionTime = corev1.ConditionTrue, now
			}
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
		Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now,
	})
}

// serve starts an echo server on podIP:port for every container port.
func (sb *sandbox) serve(pod *corev1.Pod) error {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			proto := strings.ToLower(string(p.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			if proto != "tcp" && proto != "udp" {
				continue // SCTP: no echo server; nothing tests it
			}
			addr := net.JoinHostPort(sb.IP, strconv.Itoa(int(p.ContainerPort)))
			s, err := traffic.Serve(sb.Netns, addr, proto)
			if err != nil {
				return fmt.Errorf("container %s port %d/%s: %w", c.Name, p.ContainerPort, proto, err)
			}
			sb.servers = append(sb.servers, s)
		}
	}
	return nil
}

func (sb *sandbox) closeServers() {
	for _, s := range sb.servers {
		s.Close()
	}
	sb.servers = nil
}

func deleteNetns(name string) error {
	out, err := exec.Command("ip", "netns", "del", name).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "No such file") {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
