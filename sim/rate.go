package sim

import (
	"fmt"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/terway-reconciler/terway/internal/traffic"
	"github.com/terway-reconciler/terway/load"
	"github.com/terway-reconciler/terway/render"
)

// Rate is a measured transfer between two pods beside what their
// bandwidth annotations promise.
type Rate struct {
	From, To string
	// MeasuredBits is bits per second, after a warm-up that drains the
	// token bucket's burst.
	MeasuredBits float64
	// ExpectedBits is the tighter of from's egress and to's ingress limit;
	// 0 when neither pod is limited.
	ExpectedBits uint64
	// Limit names the annotation that sets ExpectedBits.
	Limit string
}

// Ratio is measured / expected (0 without a limit).
func (r Rate) Ratio() float64 {
	if r.ExpectedBits == 0 {
		return 0
	}
	return r.MeasuredBits / float64(r.ExpectedBits)
}

// MeasureRate sends TCP from `from` to `to`'s echo server on port for the
// duration and compares the rate with the pods' annotations. The echo
// doubles the traffic on the way back, so the slower direction is what is
// measured: from's egress limit or to's ingress limit.
func (st *State) MeasureRate(from, to string, port int, duration time.Duration) (Rate, error) {
	src, dst := st.Pod(from), st.Pod(to)
	if src == nil || dst == nil {
		return Rate{}, fmt.Errorf("pods %s and %s: both must be in sim %s", from, to, st.Name)
	}
	r := Rate{From: from, To: to}
	objs, err := load.Paths(st.inputs())
	if err != nil {
		return r, err
	}
	for _, p := range objs.Pods {
		key := p.Namespace + "/" + p.Name
		switch key {
		case from:
			r.tighten(p, "egress", render.AnnotationKubeEgress, render.AnnotationAliyunEgress)
		case to:
			r.tighten(p, "ingress", render.AnnotationKubeIngress, render.AnnotationAliyunIngress)
		}
	}
	bytes, err := traffic.Throughput(src.Netns, net.JoinHostPort(dst.IP, strconv.Itoa(port)), time.Second, duration)
	if err != nil {
		return r, fmt.Errorf("transfer %s -> %s:%d: %w", from, to, port, err)
	}
	r.MeasuredBits = bytes * 8
	return r, nil
}

// tighten takes the pod's limit in the direction when it is tighter. The
// Kubernetes annotation wins over the Terway one, as in render.
func (r *Rate) tighten(p *corev1.Pod, direction, kube, aliyun string) {
	var bits uint64
	var name string
	if v, ok := p.Annotations[kube]; ok {
		if b, err := render.ParseKubeBandwidth(v); err == nil {
			bits, name = b, kube+"="+v
		}
	} else if v, ok := p.Annotations[aliyun]; ok {
		if b, err := render.ParseAliyunBandwidth(v); err == nil {
			bits, name = b, aliyun+"="+v
		}
	}
	if bits > 0 && (r.ExpectedBits == 0 || bits < r.ExpectedBits) {
		r.ExpectedBits = bits
		r.Limit = fmt.Sprintf("%s/%s %s %s", p.Namespace, p.Name, direction, name)
	}
}
