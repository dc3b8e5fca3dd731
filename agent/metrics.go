package agent

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/terway-reconciler/terway/apply/engine"
)

// metrics are the agent's Prometheus series, in a registry of its own so
// that two agents in one test process do not collide.
type metrics struct {
	reg             *prometheus.Registry
	reconcile       prometheus.Histogram
	planSize        prometheus.Gauge
	applyErrors     *prometheus.CounterVec
	reconcileErrors prometheus.Counter
	allocations     prometheus.Gauge
	cniLatency      *prometheus.HistogramVec
	// kernelWrites makes "a converged resync writes nothing" observable
	// from outside (terwayctl bench): plan size counts operations, not the
	// netlink messages, sysctl writes and nft batches they send.
	kernelWrites prometheus.Counter
	// addPhases splits a CNI ADD's time at the agent: allocating its
	// address (allocMu, then the store's write), waiting for the agent's
	// lock (behind another ADD batch, a DEL or a resync's plan), rendering
	// the node, and applying the batch's scoped plan. An operator whose
	// pods start slowly sees which one grew.
	addPhases *prometheus.HistogramVec
	// admission is how long a pod set up waited to be admitted as its
	// local peers' policy peer (admission.go), by who admitted it; heldBack
	// counts the pods waiting.
	admission *prometheus.HistogramVec
	// admissionStep is how long each admission step took, by phase
	// (render, apply): the agent's lock is held throughout, so that an
	// ADD arriving meanwhile waits up to their sum.
	admissionStep *prometheus.HistogramVec
	heldBack      prometheus.Gauge
	// withdrawal is how long a deleted pod's address stayed in the peer
	// sets (withdrawal.go); departing counts the pods waiting.
	withdrawal prometheus.Histogram
	departing  prometheus.Gauge
	// withdrawalStep is how long each withdrawal step took, by phase.
	withdrawalStep *prometheus.HistogramVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reconcile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "terway_reconcile_duration_seconds", Help: "Time of one reconcile (render, plan, apply).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		planSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "terway_plan_operations", Help: "Operations the last reconcile executed (0 on a converged node)."}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "terway_apply_errors_total", Help: "Failed kernel operations, by kind."}, []string{"kind"}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "terway_reconcile_errors_total", Help: "Reconciles that could not render."}),
		allocations: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "terway_allocations", Help: "Pod attachments in the allocation store."}),
		cniLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "terway_cni_request_duration_seconds", Help: "CNI request latency at the agent, by command and result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"command", "result"}),
		kernelWrites: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "terway_kernel_writes_total", Help: "Kernel write requests sent by applies (resyncs and CNI requests)."}),
	}
	m.addPhases = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "terway_cni_add_phase_seconds", Help: "Time of each phase of a CNI ADD at the agent: allocate (its address, recorded), lock (waiting for the agent's lock), render, apply.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"phase"})
	m.admission = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "terway_peer_admission_seconds", Help: "Time from a pod's ADD to its admission as a policy peer of the node's other pods, by who admitted it: admission (the agent, once quiet), check (a CNI CHECK), add (cfg.AdmitBeforeAnswer).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}, []string{"by"})
	m.admissionStep = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "terway_peer_admission_step_seconds", Help: "Time of each phase of one admission step: its render ahead (ahead, off the agent's lock), then its render and apply under the lock, then the read-back of what it wrote (check, off the lock).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"phase"})
	m.heldBack = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "terway_pods_held_back", Help: "Pods set up whose admission as policy peers is still to come."})
	m.withdrawal = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "terway_peer_withdrawal_seconds", Help: "Time from a pod's DEL to the withdrawal of its address from the policy peer sets; the address is given to no other pod meanwhile.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	m.departing = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "terway_pods_departing", Help: "Pods deleted whose addresses are still to be withdrawn from the policy peer sets (and are given to no other pod until then)."})
	m.withdrawalStep = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "terway_peer_withdrawal_step_seconds", Help: "Time of each phase of one withdrawal step: its render and apply under the agent's lock, then the read-back of what it wrote (check, off the lock).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"phase"})
	m.reg.MustRegister(m.reconcile, m.planSize, m.applyErrors, m.reconcileErrors, m.allocations, m.cniLatency, m.kernelWrites, m.addPhases, m.admission, m.admissionStep, m.heldBack,
		m.withdrawal, m.departing, m.withdrawalStep,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) observeReport(rep *engine.Report, d time.Duration) {
	if rep == nil {
		return
	}
	if d > 0 {
		m.reconcile.Observe(d.Seconds())
		m.planSize.Set(float64(len(rep.Results)))
	}
	m.kernelWrites.Add(float64(rep.Writes))
	for kind, n := range rep.Failed() {
		m.applyErrors.WithLabelValues(kind).Add(float64(n))
	}
}

// instrument times every CNI request by command (the URL's last element).
func (m *metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		result := "ok"
		if rec.status >= 300 {
			result = "error"
		}
		cmd := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		m.cniLatency.WithLabelValues(cmd, result).Observe(time.Since(start).Seconds())
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}
