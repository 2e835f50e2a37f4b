// Package traffic simulates the Istio sidecars that the lab does not have: it produces
// requests per workload, with each version's error rate and latency, and exports them under
// Istio's metric names and labels for Prometheus to scrape, so Flagger's built-in queries and
// Alertmanager rules run unchanged against the lab.
package traffic

import (
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Behaviour is how one workload answers.
type Behaviour struct {
	// RPS is the request rate it receives.
	RPS float64
	// ErrorRate is the fraction of requests answered 500.
	ErrorRate float64
	// LatencyMs is the typical latency; requests spread ±20% around it.
	LatencyMs float64
}

type workload struct{ namespace, name string }

// Exporter exposes istio_requests_total and istio_request_duration_milliseconds for the
// workloads it is told about.
type Exporter struct {
	mu        sync.Mutex
	workloads map[workload]Behaviour
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	reg       *prometheus.Registry
	stop      chan struct{}
	stopOnce  sync.Once
	rng       *rand.Rand
}

// Istio's standard labels, the subset Flagger's queries and dashboards use.
var istioLabels = []string{"reporter", "destination_workload", "destination_workload_namespace",
	"destination_service_name", "response_code", "source_workload"}

// NewExporter starts producing traffic every tick (250 ms when zero).
func NewExporter(tick time.Duration) *Exporter {
	if tick <= 0 {
		tick = 250 * time.Millisecond
	}
	e := &Exporter{
		workloads: map[workload]Behaviour{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total",
			Help: "Requests, as Istio's sidecars count them."}, istioLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds",
			Help:    "Request duration in milliseconds, as Istio's sidecars measure it.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}}, istioLabels),
		reg:  prometheus.NewRegistry(),
		stop: make(chan struct{}),
		rng:  rand.New(rand.NewPCG(1, 2)),
	}
	e.reg.MustRegister(e.requests, e.duration)
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
func (e *Exporter) Handler() http.Handler { return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{}) }

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
				code := "200"
				if e.rng.Float64() < b.ErrorRate {
					code = "500"
				}
				labels := prometheus.Labels{"reporter": "destination", "destination_workload": w.name,
					"destination_workload_namespace": w.namespace, "destination_service_name": w.name,
					"response_code": code, "source_workload": "loadtester"}
				e.requests.With(labels).Inc()
				e.duration.With(labels).Observe(b.LatencyMs * (0.8 + 0.4*e.rng.Float64()))
			}
		}
		e.mu.Unlock()
	}
}
