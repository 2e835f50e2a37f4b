// Package traffic simulates the Istio sidecars that the lab does not have, and exports what
// they would report under Istio's metric names and labels for Prometheus to scrape, so
// Flagger's built-in queries and Alertmanager rules run unchanged against the lab.
//
// Exporter produces a fixed request rate per workload, set by the test. Simulator reads the
// live VirtualServices and sends synthetic requests as their routes say, each version
// answering with the error rate and latency its image tag asks for.
package traffic

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Behaviour is how one workload answers.
type Behaviour struct {
	// RPS is the request rate it receives (Exporter only: the Simulator's rate comes from the
	// routes).
	RPS float64
	// ErrorRate is the fraction of requests answered 500.
	ErrorRate float64
	// LatencyMs is the typical latency; requests spread ±20% around it.
	LatencyMs float64
}

type workload struct{ namespace, name string }

// Sample is one request as a sidecar reports it.
type Sample struct {
	// Reporter is "destination" (the workload's sidecar) or "source" (the caller's, for
	// requests that never reached a workload).
	Reporter  string
	Namespace string
	// Workload is the Deployment that answered ("unknown" when none did).
	Workload string
	// Service is the destination host's short name.
	Service string
	// Version is the answering version (the image tag).
	Version   string
	Code      int
	Flags     string // Envoy's response flags, "-" when none
	LatencyMs float64
}

// Istio's standard labels, the subset Flagger's queries, Istio's dashboards and the demo's
// alert rules use.
var istioLabels = []string{"reporter", "source_workload", "source_workload_namespace",
	"destination_workload", "destination_workload_namespace", "destination_service",
	"destination_service_name", "destination_service_namespace", "destination_version",
	"request_protocol", "response_code", "response_flags"}

// istioMetrics are the two series Istio's sidecars export, plus the app's own histogram.
type istioMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// app is http_request_duration_seconds as podinfo exports it, with the labels Prometheus'
	// Kubernetes discovery adds: Flagger's HTTP observer (the Gateway API's built-in metrics)
	// reads it.
	app *prometheus.HistogramVec
	reg *prometheus.Registry
}

// appLabels are what Flagger's HTTP observer queries select on.
var appLabels = []string{"kubernetes_namespace", "kubernetes_pod_name", "status"}

// PodName is the simulated name of a workload's pod, shaped like a Deployment's
// (<name>-<replicaset hash>-<suffix>), so that Flagger's kubernetes_pod_name regex for the
// target does not match its primary's pods.
func PodName(workload string) string { return workload + "-5c9b7d8f4-sim01" }

func newIstioMetrics() *istioMetrics {
	m := &istioMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "Requests, as Istio's sidecars count them."}, istioLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help:    "Request duration in milliseconds, as Istio's sidecars measure it.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}}, istioLabels),
		app: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_request_duration_seconds",
			Help:    "Request duration in seconds, as the app (podinfo) measures it.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, appLabels),
		reg: prometheus.NewRegistry(),
	}
	m.reg.MustRegister(m.requests, m.duration, m.app)
	return m
}

func (m *istioMetrics) labels(s Sample) prometheus.Labels {
	flags := s.Flags
	if flags == "" {
		flags = "-"
	}
	version := s.Version
	if version == "" {
		version = "unknown"
	}
	return prometheus.Labels{
		"reporter": s.Reporter, "source_workload": "loadtester", "source_workload_namespace": s.Namespace,
		"destination_workload": s.Workload, "destination_workload_namespace": s.Namespace,
		"destination_service":      s.Service + "." + s.Namespace + ".svc.cluster.local",
		"destination_service_name": s.Service, "destination_service_namespace": s.Namespace,
		"destination_version": version, "request_protocol": "http",
		"response_code": strconv.Itoa(s.Code), "response_flags": flags,
	}
}

func (m *istioMetrics) observe(s Sample) {
	l := m.labels(s)
	m.requests.With(l).Inc()
	m.duration.With(l).Observe(s.LatencyMs)
	if app, ok := appLabelsOf(s); ok {
		m.app.With(app).Observe(s.LatencyMs / 1000)
	}
}

// appLabelsOf labels a request the app itself answered (not one the mesh answered for it).
func appLabelsOf(s Sample) (prometheus.Labels, bool) {
	if s.Reporter != "destination" || s.Workload == "" || s.Workload == "unknown" {
		return nil, false
	}
	return prometheus.Labels{"kubernetes_namespace": s.Namespace, "kubernetes_pod_name": PodName(s.Workload),
		"status": strconv.Itoa(s.Code)}, true
}

// touch creates a sample's series at zero, so that Prometheus has a baseline before the first
// request and rate() sees that request (a real sidecar creates the series on the first
// request, and rate() then misses it).
func (m *istioMetrics) touch(s Sample) {
	l := m.labels(s)
	m.requests.With(l)
	m.duration.With(l)
	if app, ok := appLabelsOf(s); ok {
		m.app.With(app)
	}
}

// Exporter exposes istio_requests_total, istio_request_duration_milliseconds and the app's
// http_request_duration_seconds for the workloads it is told about.
type Exporter struct {
	mu        sync.Mutex
	workloads map[workload]Behaviour
	m         *istioMetrics
	stop      chan struct{}
	stopOnce  sync.Once
	rng       *rand.Rand
}

// NewExporter starts producing traffic every tick (250 ms when zero).
func NewExporter(tick time.Duration) *Exporter {
	if tick <= 0 {
		tick = 250 * time.Millisecond
	}
	e := &Exporter{
		workloads: map[workload]Behaviour{},
		m:         newIstioMetrics(),
		stop:      make(chan struct{}),
		rng:       rand.New(rand.NewPCG(1, 2)),
	}
	go e.run(tick)
	return e
}

// Set makes a workload answer with b from now on; a zero RPS stops its traffic.
func (e *Exporter) Set(namespace, name string, b Behaviour) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workloads[workload{namespace, name}] = b
}

// Handler serves the metrics.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.m.reg, promhttp.HandlerOpts{})
}

// Close stops the traffic.
func (e *Exporter) Close() { e.stopOnce.Do(func() { close(e.stop) }) }

func (e *Exporter) run(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	carry := map[workload]float64{}
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		e.mu.Lock()
		for w, b := range e.workloads {
			carry[w] += b.RPS * tick.Seconds()
			n := int(carry[w])
			carry[w] -= float64(n)
			for range n {
				code := 200
				if e.rng.Float64() < b.ErrorRate {
					code = 500
				}
				e.m.observe(Sample{Reporter: "destination", Namespace: w.namespace, Workload: w.name,
					Service: w.name, Code: code, LatencyMs: b.LatencyMs * (0.8 + 0.4*e.rng.Float64())})
			}
		}
		e.mu.Unlock()
	}
}
