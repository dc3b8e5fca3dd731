package realnode

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// PodStartSLIMetric is the kubelet's histogram of pod start latency as its
// SLI defines it: from the pod's creation to all its containers reported
// started, image pulls excluded.
const PodStartSLIMetric = "kubelet_pod_start_sli_duration_seconds"

// Bucket is one cumulative bucket of a Prometheus histogram: Count
// observations were <= UpperBound (+Inf for the last).
type Bucket struct {
	UpperBound float64
	Count      float64
}

// MarshalJSON writes the bound as the exposition format does ("+Inf"
// included, which a JSON number cannot hold).
func (b Bucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		LE    string  `json:"le"`
		Count float64 `json:"count"`
	}{strconv.FormatFloat(b.UpperBound, 'g', -1, 64), b.Count})
}

// Histogram is one Prometheus histogram as the text exposition format
// gives it, all series of the name added together (the kubelet's has no
// labels but le; summing keeps a future label from splitting the figures).
type Histogram struct {
	Name    string
	Buckets []Bucket // by UpperBound, the last +Inf
	Count   float64
	Sum     float64
}

// ErrNoHistogram is ParseHistogram's error for a name the text lacks. The
// kubelet's histograms are vectors, exported from their first observation
// on: before any pod started the SLI is absent, which means zero.
var ErrNoHistogram = errors.New("metrics: no such histogram")

// ParseHistogram reads histogram name from a Prometheus text exposition
// (what /metrics serves). A name that is absent is ErrNoHistogram.
func ParseHistogram(text, name string) (*Histogram, error) {
	byBound := map[float64]float64{}
	h := &Histogram{Name: name}
	found := false
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		series, labels, value, err := splitSample(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", ln, err)
		}
		switch series {
		case name + "_bucket":
			le, ok := labelValue(labels, "le")
			if !ok {
				return nil, fmt.Errorf("metrics line %d: %s without an le label", ln, series)
			}
			ub, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return nil, fmt.Errorf("metrics line %d: %s le=%q: %w", ln, series, le, err)
			}
			byBound[ub] += value
		case name + "_count":
			h.Count += value
		case name + "_sum":
			h.Sum += value
		default:
			continue
		}
		found = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", ErrNoHistogram, name)
	}
	for ub, n := range byBound {
		h.Buckets = append(h.Buckets, Bucket{UpperBound: ub, Count: n})
	}
	sort.Slice(h.Buckets, func(i, j int) bool { return h.Buckets[i].UpperBound < h.Buckets[j].UpperBound })
	if len(h.Buckets) == 0 || !math.IsInf(h.Buckets[len(h.Buckets)-1].UpperBound, 1) {
		return nil, fmt.Errorf("metrics: histogram %s has no +Inf bucket", name)
	}
	return h, nil
}

// splitSample splits `name{labels} value [timestamp]`.
func splitSample(line string) (name, labels string, value float64, err error) {
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return "", "", 0, fmt.Errorf("unclosed label set in %q", line)
		}
		name, labels, rest = line[:i], line[i+1:j], line[j+1:]
	} else {
		sp := strings.IndexAny(line, " \t")
		if sp < 0 {
			return "", "", 0, fmt.Errorf("no value in %q", line)
		}
		name, rest = line[:sp], line[sp:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", "", 0, fmt.Errorf("no value in %q", line)
	}
	value, err = strconv.ParseFloat(f[0], 64)
	if err != nil {
		return "", "", 0, fmt.Errorf("value of %s: %w", name, err)
	}
	return name, labels, value, nil
}

// labelValue finds key="value" in a label set (no escapes are expected in
// the values read here: le is a number).
func labelValue(labels, key string) (string, bool) {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k == key {
			return strings.Trim(v, `"`), true
		}
	}
	return "", false
}

// Sub is h minus an earlier scrape of the same histogram: the observations
// made between the two. The kubelet's counters only grow, so a bucket that
// shrank means the kubelet restarted in between, which the caller must
// hear of rather than get a wrong difference.
func (h *Histogram) Sub(before *Histogram) (*Histogram, error) {
	if before == nil {
		return h, nil
	}
	old := map[float64]float64{}
	for _, b := range before.Buckets {
		old[b.UpperBound] = b.Count
	}
	d := &Histogram{Name: h.Name, Count: h.Count - before.Count, Sum: h.Sum - before.Sum}
	for _, b := range h.Buckets {
		n := b.Count - old[b.UpperBound]
		if n < 0 {
			return nil, fmt.Errorf("metrics: %s bucket le=%g went from %g to %g: the kubelet restarted between the scrapes", h.Name, b.UpperBound, old[b.UpperBound], b.Count)
		}
		d.Buckets = append(d.Buckets, Bucket{UpperBound: b.UpperBound, Count: n})
	}
	if d.Count < 0 {
		return nil, fmt.Errorf("metrics: %s count went from %g to %g: the kubelet restarted between the scrapes", h.Name, before.Count, h.Count)
	}
	return d, nil
}

// Quantile estimates the q-quantile from the buckets the way Prometheus'
// histogram_quantile does: find the bucket holding the rank, interpolate
// linearly inside it (the lowest bucket starts at 0), and answer the
// highest finite bound when the rank falls in the +Inf bucket. It is an
// estimate: its error is up to the width of the bucket it lands in.
func (h *Histogram) Quantile(q float64) (float64, error) {
	if q < 0 || q > 1 || math.IsNaN(q) {
		return 0, fmt.Errorf("quantile %g: want 0 <= q <= 1", q)
	}
	if len(h.Buckets) == 0 {
		return 0, errors.New("histogram without buckets")
	}
	total := h.Buckets[len(h.Buckets)-1].Count
	if total == 0 {
		return 0, fmt.Errorf("histogram %s: no observations", h.Name)
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for i, b := range h.Buckets {
		if b.Count >= rank && b.Count > below {
			if math.IsInf(b.UpperBound, 1) {
				if i == 0 {
					return 0, fmt.Errorf("histogram %s: only a +Inf bucket", h.Name)
				}
				return h.Buckets[i-1].UpperBound, nil
			}
			if i == 0 && b.UpperBound <= 0 {
				return b.UpperBound, nil
			}
			return lower + (b.UpperBound-lower)*(rank-below)/(b.Count-below), nil
		}
		lower, below = b.UpperBound, b.Count
	}
	return lower, nil
}
