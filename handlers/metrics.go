package handlers

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/siskin-dev/siskin/functions"
)

// Metrics are Flagger's metrics under Flagger's names and labels, so existing Grafana
// dashboards keep working, plus Siskin's own siskin_* metrics.
type Metrics struct {
	reg *prometheus.Registry

	total          *prometheus.GaugeVec
	status         *prometheus.GaugeVec
	weight         *prometheus.GaugeVec
	duration       *prometheus.HistogramVec
	metricAnalysis *prometheus.GaugeVec
	successes      *prometheus.CounterVec
	failures       *prometheus.CounterVec

	stepDuration  *prometheus.HistogramVec
	stepLateness  prometheus.Histogram
	events        *prometheus.CounterVec
	eventDuration *prometheus.HistogramVec
	abortLatency  prometheus.Histogram
	transitions   *prometheus.CounterVec

	mu         sync.Mutex
	namespaces map[string]bool
}

// NewMetrics registers every metric in a registry of its own.
func NewMetrics(version string) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), namespaces: map[string]bool{}}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagger_info", Help: "Flagger version and mesh provider information"}, []string{"version", "mesh_provider"})
	info.WithLabelValues(version, "istio").Set(1)
	f(info)
	m.total = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagger_canary_total", Help: "Total number of canary object"}, []string{"namespace"})
	m.status = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagger_canary_status", Help: "Last canary analysis result: 0 progressing, 1 done, 2 failed"}, []string{"name", "namespace"})
	m.weight = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagger_canary_weight", Help: "The virtual service destination weight current value"}, []string{"workload", "namespace"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flagger_canary_duration_seconds", Help: "Seconds spent performing canary analysis.", Buckets: prometheus.DefBuckets}, []string{"name", "namespace"})
	m.metricAnalysis = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "flagger_canary_metric_analysis", Help: "Last canary analysis result per metric"}, []string{"name", "namespace", "metric"})
	m.successes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagger_canary_successes_total", Help: "Total number of canary successes"}, []string{"name", "namespace", "deployment_strategy", "analysis_status"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flagger_canary_failures_total", Help: "Total number of canary failures"}, []string{"name", "namespace", "deployment_strategy", "analysis_status"})
	m.stepDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "siskin_step_duration_seconds", Help: "Duration of one canary step, from claim to saved state.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"phase"})
	m.stepLateness = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "siskin_step_lateness_seconds", Help: "How late a due step ran after its scheduled time.",
		Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}})
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "siskin_events_total", Help: "Events handled, by kind and outcome."}, []string{"kind", "outcome"})
	m.eventDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "siskin_event_duration_seconds", Help: "Time to handle one event, by kind.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"kind"})
	m.abortLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "siskin_abort_latency_seconds", Help: "From an abort request's arrival to all traffic on the primary and the state saved Failed.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "siskin_phase_transitions_total", Help: "Phase transitions, by phase reached."}, []string{"namespace", "phase"})
	for _, c := range []prometheus.Collector{m.total, m.status, m.weight, m.duration, m.metricAnalysis, m.successes, m.failures,
		m.stepDuration, m.stepLateness, m.events, m.eventDuration, m.abortLatency, m.transitions} {
		f(c)
	}
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveEvent counts one handled event (Options.Observe).
func (m *Metrics) ObserveEvent(kind, outcome string, took time.Duration) {
	m.events.WithLabelValues(kind, outcome).Inc()
	m.eventDuration.WithLabelValues(kind).Observe(took.Seconds())
}

// statusValue is Flagger's encoding of flagger_canary_status.
func statusValue(p functions.Phase) float64 {
	switch p {
	case functions.PhaseProgressing:
		return 0
	case functions.PhaseFailed:
		return 2
	}
	return 1
}

// Stepped implements functions.Observer.
func (m *Metrics) Stepped(c functions.Canary, before, after functions.State, results []functions.MetricResult, took, late time.Duration) {
	target, ns := c.Spec.TargetRef.Name, c.Namespace
	m.status.WithLabelValues(target, ns).Set(statusValue(after.Phase))
	m.weight.WithLabelValues(target+"-primary", ns).Set(float64(after.Routing.Primary))
	m.weight.WithLabelValues(target, ns).Set(float64(after.Routing.Canary))
	m.duration.WithLabelValues(target, ns).Observe(took.Seconds())
	m.stepDuration.WithLabelValues(string(after.Phase)).Observe(took.Seconds())
	if late > 0 {
		m.stepLateness.Observe(late.Seconds())
	}
	for _, r := range results {
		if r.Err == "" && !r.NoData {
			m.metricAnalysis.WithLabelValues(target, ns, r.Name).Set(r.Value)
		}
	}
	if before.Phase != after.Phase {
		m.transitions.WithLabelValues(ns, string(after.Phase)).Inc()
		strategy := string(c.Spec.Strategy())
		status := "completed"
		if c.Spec.SkipsAnalysis() {
			status = "skipped"
		}
		switch after.Phase {
		case functions.PhaseSucceeded:
			m.successes.WithLabelValues(target, ns, strategy, status).Inc()
		case functions.PhaseFailed:
			m.failures.WithLabelValues(target, ns, strategy, status).Inc()
		}
	}
}

// Aborted implements functions.Observer.
func (m *Metrics) Aborted(c functions.Canary, took time.Duration) {
	m.abortLatency.Observe(took.Seconds())
	target, ns := c.Spec.TargetRef.Name, c.Namespace
	m.status.WithLabelValues(target, ns).Set(statusValue(functions.PhaseFailed))
	m.weight.WithLabelValues(target+"-primary", ns).Set(100)
	m.weight.WithLabelValues(target, ns).Set(0)
	m.failures.WithLabelValues(target, ns, string(c.Spec.Strategy()), "completed").Inc()
	m.transitions.WithLabelValues(ns, string(functions.PhaseFailed)).Inc()
}

// Counted implements functions.Observer.
func (m *Metrics) Counted(perNamespace map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ns := range m.namespaces {
		if _, ok := perNamespace[ns]; !ok {
			m.total.WithLabelValues(ns).Set(0)
		}
	}
	for ns, n := range perNamespace {
		m.namespaces[ns] = true
		m.total.WithLabelValues(ns).Set(float64(n))
	}
}
