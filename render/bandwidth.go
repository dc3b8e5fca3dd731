package render

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/terway-reconciler/terway/spec"
)

// Bandwidth annotations. Terway's own are in bytes per second with binary
// multiples (1m = 1 MiB/s); the Kubernetes ones are quantities in bits per
// second (10M = 10,000,000 bit/s). Where both set a direction, the
// Kubernetes one wins.
const (
	AnnotationAliyunIngress = "k8s.aliyun.com/ingress-bandwidth"
	AnnotationAliyunEgress  = "k8s.aliyun.com/egress-bandwidth"
	AnnotationKubeIngress   = "kubernetes.io/ingress-bandwidth"
	AnnotationKubeEgress    = "kubernetes.io/egress-bandwidth"
)

// Rate bounds, as kubelet enforces for the Kubernetes annotations: below
// 1 kbit/s TBF cannot hold a packet in a sane burst, above 1 Pbit/s is a typo.
const (
	minRateBits = 1_000
	maxRateBits = 1_000_000_000_000_000
)

var aliyunRate = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([kKmMgG]?)$`)

// Bounds on a rate's spelling, checked before any arithmetic: render runs
// under the agent's lock on every resync, and a Kubernetes quantity such as
// 1e1000000000 makes the resource package compute a billion-digit number
// (it hung render for minutes). No sane rate needs more than 64 characters
// or a decimal exponent beyond ±30 (1e30 bit/s is far past the maximum).
const (
	maxRateLen      = 64
	maxRateExponent = 30
)

// quantityExponent matches a quantity in exponent form, capturing the
// exponent ("1e9", "2.5E+12"; "1E" alone is the exa suffix).
var quantityExponent = regexp.MustCompile(`^[+-]?[0-9.]*[eE]([+-]?[0-9]+)$`)

// rateSpelling refuses a value too long or with an exponent out of range.
func rateSpelling(value, v string) error {
	if len(v) > maxRateLen {
		return fmt.Errorf("%.20q… is not a rate: longer than %d characters", value, maxRateLen)
	}
	if m := quantityExponent.FindStringSubmatch(v); m != nil {
		if exp, err := strconv.Atoi(m[1]); err != nil || exp < -maxRateExponent || exp > maxRateExponent {
			return fmt.Errorf("%q is not a rate: exponent %s is outside ±%d (rates are 1 kbit/s to 1 Pbit/s)", value, m[1], maxRateExponent)
		}
	}
	return nil
}

// ParseAliyunBandwidth parses a Terway bandwidth value (bytes per second,
// suffix k/m/g as binary multiples) and returns bits per second.
func ParseAliyunBandwidth(value string) (uint64, error) {
	v := strings.TrimSpace(value)
	if err := rateSpelling(value, v); err != nil {
		return 0, err
	}
	m := aliyunRate.FindStringSubmatch(v)
	if m == nil {
		return 0, fmt.Errorf("%q is not a rate: want a positive number of bytes per second with an optional k, m or g suffix (binary multiples), e.g. 512k or 10m", value)
	}
	number, _, err := big.ParseFloat(m[1], 10, 128, big.ToNearestEven)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate: %w", value, err)
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
	bits := new(big.Float).Mul(number, new(big.Float).SetUint64(8<<shift))
	return checkRate(value, bits)
}

// ParseKubeBandwidth parses a Kubernetes bandwidth quantity in bits per
// second.
func ParseKubeBandwidth(value string) (uint64, error) {
	v := strings.TrimSpace(value)
	if err := rateSpelling(value, v); err != nil {
		return 0, err
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a Kubernetes quantity (bits per second, e.g. 10M): %w", value, err)
	}
	bits, _, err := big.ParseFloat(q.AsDec().String(), 10, 128, big.ToNearestEven)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate: %w", value, err)
	}
	return checkRate(value, bits)
}

func checkRate(value string, bits *big.Float) (uint64, error) {
	if bits.Sign() <= 0 {
		return 0, fmt.Errorf("%q must be a positive rate", value)
	}
	if bits.Cmp(big.NewFloat(minRateBits)) < 0 {
		return 0, fmt.Errorf("%q is below the minimum of 1 kbit/s", value)
	}
	if bits.Cmp(big.NewFloat(maxRateBits)) > 0 {
		return 0, fmt.Errorf("%q is above the maximum of 1 Pbit/s", value)
	}
	u, _ := bits.Uint64()
	return u, nil
}

// tbfFor sizes a TBF for a rate: a bucket of 20 ms of traffic (at least
// 16 KiB, so a GSO burst of a slow pod is not all dropped) and a queue of a
// further 50 ms, enough for TCP to see the rate without loss storms.
func tbfFor(rateBits uint64) (burst, limit uint32) {
	rateBytes := float64(rateBits) / 8
	b := math.Max(rateBytes/50, 16*1024)
	l := b + rateBytes/20
	return uint32(math.Min(b, math.MaxUint32/2)), uint32(math.Min(l, math.MaxUint32))
}

type bandwidthDirection struct {
	name           string // "ingress" or "egress"
	kube, aliyun   string // annotation keys
	kubeParsed     uint64
	fromAnnotation string
}

// renderBandwidth shapes the pod's traffic on the sending side of each veth
// end: into the pod on the host veth, out of the pod on the pod's interface.
func (r *renderer) renderBandwidth(p *podInfo, e *spec.Pod) {
	if p.pod == nil {
		return
	}
	ann := p.pod.Annotations
	for _, dir := range []bandwidthDirection{
		{name: "ingress", kube: AnnotationKubeIngress, aliyun: AnnotationAliyunIngress},
		{name: "egress", kube: AnnotationKubeEgress, aliyun: AnnotationAliyunEgress},
	} {
		kubeValue, hasKube := ann[dir.kube]
		aliyunValue, hasAliyun := ann[dir.aliyun]
		if !hasKube && !hasAliyun {
			continue
		}
		var rate uint64
		var err error
		key := dir.aliyun
		if hasKube {
			key = dir.kube
			rate, err = ParseKubeBandwidth(kubeValue)
			if hasAliyun {
				r.podProblem(p, annotationField(dir.aliyun), "both %s and %s are set; %s wins", dir.kube, dir.aliyun, dir.kube)
			}
		} else {
			rate, err = ParseAliyunBandwidth(aliyunValue)
		}
		if err != nil {
			r.podProblem(p, annotationField(key), "%v; no %s limit applied", err, dir.name)
			continue
		}
		q := spec.Qdisc{Kind: spec.QdiscTBF, RateBitsPerSecond: rate, Direction: dir.name, Pod: e.Key}
		q.BurstBytes, q.LimitBytes = tbfFor(rate)
		switch {
		case dir.name == "egress":
			q.Netns, q.Dev = e.Netns, e.IfName
		case e.Mode == spec.PodModeExclusiveENI:
			r.podProblem(p, annotationField(key), "ingress shaping is not supported for exclusive-ENI pods (their traffic does not cross the host); not applied")
			continue
		default:
			q.Dev = e.HostVeth
		}
		r.state.TC = append(r.state.TC, q)
	}
}

func annotationField(key string) string {
	return "metadata.annotations[" + strconv.Quote(key)[1:len(strconv.Quote(key))-1] + "]"
}
