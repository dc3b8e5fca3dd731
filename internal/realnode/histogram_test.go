package realnode

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// testdata/kubelet-metrics-{1,2}.txt are excerpts of two real scrapes of
// the kubelet's /metrics (through the API server's node proxy) on a ptp
// node: after one pod started, then after five more. Beside the SLI they
// hold kubelet_pod_start_duration_seconds and
// kubelet_pod_start_total_duration_seconds, whose names share its prefix
// and whose counts differ (12, 6), so mixing them up shows.
func readSample(t *testing.T, n string) *Histogram {
	t.Helper()
	b, err := os.ReadFile("testdata/kubelet-metrics-" + n + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHistogram(string(b), PodStartSLIMetric)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func bucketCount(t *testing.T, h *Histogram, le float64) float64 {
	t.Helper()
	for _, b := range h.Buckets {
		if b.UpperBound == le {
			return b.Count
		}
	}
	t.Fatalf("%s: no bucket le=%g", h.Name, le)
	return 0
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestParseHistogramKubeletSample(t *testing.T) {
	h := readSample(t, "2")
	if h.Count != 6 || !near(h.Sum, 16.312952073) {
		t.Fatalf("count %g sum %g, want 6 and 16.312952073", h.Count, h.Sum)
	}
	// The kubelet's 26 bounds: 0.5 ... 3600 and +Inf, in order.
	if len(h.Buckets) != 26 || h.Buckets[0].UpperBound != 0.5 || h.Buckets[24].UpperBound != 3600 || !math.IsInf(h.Buckets[25].UpperBound, 1) {
		t.Fatalf("buckets %v", h.Buckets)
	}
	for le, want := range map[float64]float64{1: 0, 2: 1, 3: 3, 4: 6, 3600: 6, math.Inf(1): 6} {
		if got := bucketCount(t, h, le); got != want {
			t.Errorf("le=%g: %g, want %g", le, got, want)
		}
	}
	p50, err := h.Quantile(0.5)
	if err != nil || !near(p50, 3) { // rank 3 is the top of the (2,3] bucket
		t.Errorf("p50 %g (%v), want 3", p50, err)
	}
}

// The run's figures are the scrape after minus the scrape before.
func TestHistogramSubOfTwoScrapes(t *testing.T) {
	before, after := readSample(t, "1"), readSample(t, "2")
	d, err := after.Sub(before)
	if err != nil {
		t.Fatal(err)
	}
	if d.Count != 5 || !near(d.Sum, 16.312952073-1.171534927) {
		t.Fatalf("count %g sum %g, want 5 and 15.141417146", d.Count, d.Sum)
	}
	if bucketCount(t, d, 2) != 0 || bucketCount(t, d, 3) != 2 || bucketCount(t, d, 4) != 5 {
		t.Fatalf("buckets %v", d.Buckets)
	}
	// Five observations: two in (2,3], three in (3,4].
	for q, want := range map[float64]float64{0.5: 3 + 0.5/3, 0.9: 3 + 2.5/3, 0.99: 3 + 2.95/3} {
		got, err := d.Quantile(q)
		if err != nil || !near(got, want) {
			t.Errorf("q%g = %g (%v), want %g", q, got, err, want)
		}
	}
	// Before the node's first pod the kubelet exports no SLI at all
	// (scrapePodStart reads that as an empty histogram): all of after.
	empty := &Histogram{Name: PodStartSLIMetric, Buckets: []Bucket{{UpperBound: math.Inf(1)}}}
	if d, err := after.Sub(empty); err != nil || d.Count != 6 || bucketCount(t, d, 3) != 3 {
		t.Errorf("after - empty: %+v (%v), want after", d, err)
	}
	// A kubelet restart between the scrapes resets its counters.
	if _, err := before.Sub(after); err == nil || !strings.Contains(err.Error(), "restarted") {
		t.Errorf("before - after: %v, want a restart error", err)
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name    string
		buckets []Bucket
		q, want float64
	}{
		{"inside the first bucket, from 0", []Bucket{{0.5, 2}, {1, 4}, {inf, 4}}, 0.25, 0.25},
		{"linear inside a bucket", []Bucket{{0.5, 0}, {1, 4}, {2, 8}, {4, 10}, {inf, 10}}, 0.5, 1.25},
		{"upper bucket", []Bucket{{0.5, 0}, {1, 4}, {2, 8}, {4, 10}, {inf, 10}}, 0.9, 3},
		{"p99", []Bucket{{0.5, 0}, {1, 4}, {2, 8}, {4, 10}, {inf, 10}}, 0.99, 3.9},
		{"rank in +Inf: the highest finite bound", []Bucket{{1, 1}, {2, 1}, {inf, 3}}, 0.9, 2},
		{"empty buckets below are skipped", []Bucket{{1, 0}, {2, 0}, {5, 1}, {inf, 1}}, 0.5, 3.5},
		{"q=1 is the top of the last used bucket", []Bucket{{1, 1}, {2, 2}, {5, 2}, {inf, 2}}, 1, 2},
	} {
		h := &Histogram{Name: "h", Buckets: tc.buckets}
		got, err := h.Quantile(tc.q)
		if err != nil || !near(got, tc.want) {
			t.Errorf("%s: q%g = %g (%v), want %g", tc.name, tc.q, got, err, tc.want)
		}
	}
	for _, h := range []*Histogram{
		{Name: "none", Buckets: []Bucket{{1, 0}, {inf, 0}}},
		{Name: "nobuckets"},
		{Name: "onlyinf", Buckets: []Bucket{{inf, 3}}},
	} {
		if v, err := h.Quantile(0.5); err == nil {
			t.Errorf("%s: %g, want an error", h.Name, v)
		}
	}
	if _, err := (&Histogram{Buckets: []Bucket{{1, 1}, {inf, 1}}}).Quantile(1.5); err == nil {
		t.Error("q=1.5: want an error")
	}
}

func TestParseHistogramErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"absent", "other_metric 1\n", "no such histogram: " + PodStartSLIMetric},
		{"no le", PodStartSLIMetric + "_bucket{x=\"1\"} 3\n", "without an le label"},
		{"bad le", PodStartSLIMetric + "_bucket{le=\"one\"} 3\n", `le="one"`},
		{"bad value", PodStartSLIMetric + "_count three\n", "value of " + PodStartSLIMetric + "_count"},
		{"no +Inf", PodStartSLIMetric + "_bucket{le=\"1\"} 3\n" + PodStartSLIMetric + "_count 3\n", "no +Inf bucket"},
		{"unclosed", PodStartSLIMetric + "_bucket{le=\"1\" 3\n", "unclosed label set"},
	} {
		_, err := ParseHistogram(tc.text, PodStartSLIMetric)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
		if absent := errors.Is(err, ErrNoHistogram); absent != (tc.name == "absent") {
			t.Errorf("%s: errors.Is(ErrNoHistogram) = %v", tc.name, absent)
		}
	}
}

// +Inf has no JSON number: the report writes bounds as the exposition does.
func TestBucketJSON(t *testing.T) {
	b, err := json.Marshal([]Bucket{{0.5, 1}, {math.Inf(1), 2}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[{"le":"0.5","count":1},{"le":"+Inf","count":2}]`; got != want {
		t.Errorf("%s, want %s", got, want)
	}
}

func TestStatChildTicks(t *testing.T) {
	// A command name with spaces and a parenthesis; cutime 40, cstime 2.
	stat := "8079 (contain) erd) S 1 8079 8079 0 -1 4194560 5000 100 0 0 900 300 40 2 20 0 30 0 123 456 789"
	got, err := statChildTicks(stat)
	if err != nil || got != 42 {
		t.Errorf("statChildTicks = %d (%v), want 42", got, err)
	}
	if _, err := statChildTicks("1 (x) S 1 2"); err == nil {
		t.Error("short stat: want an error")
	}
	// The test process itself: a real stat line parses.
	if _, err := childTicks(os.Getpid()); err != nil {
		t.Error(err)
	}
}

func TestMaxMedian(t *testing.T) {
	for _, tc := range []struct {
		in       []int64
		max, med int64
	}{
		{[]int64{5}, 5, 5},
		{[]int64{3, 9, 1}, 9, 3},
		{[]int64{4, 1, 3, 2}, 4, 2}, // even: the lower middle, a value seen
	} {
		if mx, md := maxMedian(tc.in); mx != tc.max || md != tc.med {
			t.Errorf("maxMedian(%v) = %d, %d; want %d, %d", tc.in, mx, md, tc.max, tc.med)
		}
	}
}
