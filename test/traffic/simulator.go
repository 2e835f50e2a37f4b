package traffic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	istioapi "istio.io/api/networking/v1"
)

// VersionOf is an image's tag: "1.1.0-bad" for "127.0.0.1:5000/demo/podinfo:1.1.0-bad@sha256:…",
// "latest" when it has none.
func VersionOf(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	slash := strings.LastIndex(ref, "/")
	if colon := strings.LastIndex(ref, ":"); colon > slash {
		return ref[colon+1:]
	}
	return "latest"
}

// BehaviourOf is how a version answers, from its tag: a tag containing "bad" fails 30% of its
// requests with 500, one containing "slow" takes 800 ms; any other answers in about 40 ms and
// fails 0.2% of its requests, a healthy service's background noise.
func BehaviourOf(version string) Behaviour {
	b := Behaviour{ErrorRate: 0.002, LatencyMs: 40}
	if strings.Contains(version, "bad") {
		b.ErrorRate = 0.3
	}
	if strings.Contains(version, "slow") {
		b.LatencyMs = 800
	}
	return b
}

// SimulatorOptions configure a Simulator.
type SimulatorOptions struct {
	// Namespaces whose VirtualServices receive traffic. Required.
	Namespaces []string
	// RPS is the request rate sent to each VirtualService. Zero: 40.
	RPS float64
	// Mix is the kinds of requests sent. Empty: DefaultMix.
	Mix []RequestClass
	// Poll is how often the routes, Services and Deployments are read. Zero: 500 ms.
	Poll time.Duration
	// Tick is how often requests are produced. Zero: 100 ms.
	Tick time.Duration
	// CallTimeout bounds each Kubernetes call. Zero: 5 s.
	CallTimeout time.Duration
	// Behave maps a version (image tag) to how it answers. Nil: BehaviourOf.
	Behave func(version string) Behaviour
	// Logger receives route changes and read errors. Nil: discarded.
	Logger *slog.Logger
	// Seed makes latencies reproducible.
	Seed uint64
	// GatewayAPI, when set, makes the HTTPRoutes of the namespaces receive traffic too, as
	// their rules say (FromHTTPRoute).
	GatewayAPI gatewayclient.Interface
}

// maxWindowLatencies bounds the latencies a Window keeps, for a simulator whose windows are
// never taken.
const maxWindowLatencies = 100_000

// Window is what one workload handled since the last Take.
type Window struct {
	Workload string
	Version  string
	// Requests counts served and mirrored requests; Mirrored counts the copies among them.
	Requests, Mirrored, Errors int
	// LatenciesMs are the requests' latencies (the first maxWindowLatencies of them).
	LatenciesMs []float64
}

// Snapshot is one namespace's traffic since the last Take, and the routes in force now.
type Snapshot struct {
	At time.Time
	// Shares is, per VirtualService, the fraction of its requests each destination host
	// serves (mirrors not included).
	Shares map[string]map[string]float64
	// Mirrors is, per VirtualService, the fraction of its requests copied to each mirror host.
	Mirrors map[string]map[string]float64
	// Workloads are the Deployments that answered, by name.
	Workloads map[string]*Window
	// Unavailable counts requests that reached no workload (503 UH).
	Unavailable int
	// Err is the last error reading the namespace, if the last read failed.
	Err error
}

// Simulator is the mesh's data plane, simulated: it reads the live VirtualServices of its
// namespaces, sends synthetic requests as their routes say to the Deployments behind each
// destination host, makes each answer as its image tag says, and exports what Istio's
// sidecars would report.
type Simulator struct {
	kube  kubernetes.Interface
	istio istioclient.Interface
	opts  SimulatorOptions
	log   *slog.Logger
	m     *istioMetrics

	mu     sync.Mutex
	live   map[string]liveNamespace // by namespace
	carry  map[carryKey]float64
	rng    *rand.Rand
	window map[string]*Snapshot // by namespace
}

type liveNamespace struct {
	services []*istioapi.VirtualService
	names    []string // VirtualService names, same order
	backends map[string]Backend
	err      error
}

type carryKey struct{ namespace, vs, workload, kind string }

// NewSimulator returns a Simulator reading the cluster with kube and ic. Run starts it.
func NewSimulator(kube kubernetes.Interface, ic istioclient.Interface, opts SimulatorOptions) (*Simulator, error) {
	if len(opts.Namespaces) == 0 {
		return nil, errors.New("traffic simulator: no namespace to serve")
	}
	if opts.RPS <= 0 {
		opts.RPS = 40
	}
	if len(opts.Mix) == 0 {
		opts.Mix = DefaultMix
	}
	if opts.Poll <= 0 {
		opts.Poll = 500 * time.Millisecond
	}
	if opts.Tick <= 0 {
		opts.Tick = 100 * time.Millisecond
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 5 * time.Second
	}
	if opts.Behave == nil {
		opts.Behave = BehaviourOf
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Simulator{kube: kube, istio: ic, opts: opts, log: log, m: newIstioMetrics(),
		live: map[string]liveNamespace{}, carry: map[carryKey]float64{},
		rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed)), window: map[string]*Snapshot{}}, nil
}

// Handler serves the metrics for Prometheus.
func (s *Simulator) Handler() http.Handler {
	return promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{})
}

// Run reads the routes and sends traffic until ctx ends.
func (s *Simulator) Run(ctx context.Context) {
	s.refresh(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(s.opts.Poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.refresh(ctx)
			}
		}
	})
	wg.Go(func() {
		t := time.NewTicker(s.opts.Tick)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				s.send(now.Sub(last).Seconds())
				last = now
			}
		}
	})
	wg.Wait()
}

// Take returns a namespace's traffic since the previous Take, and its routes now.
func (s *Simulator) Take(namespace string) Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snapshot(namespace)
	out := *snap
	out.At = time.Now()
	out.Shares, out.Mirrors = map[string]map[string]float64{}, map[string]map[string]float64{}
	live := s.live[namespace]
	for i, vs := range live.services {
		shares := map[string]float64{}
		mirrors := map[string]float64{}
		for host, l := range Split(vs, s.opts.Mix, 1) {
			if l.Served > 0 {
				shares[host] = l.Served
			}
			if l.Mirrored > 0 {
				mirrors[host] = l.Mirrored
			}
		}
		out.Shares[live.names[i]], out.Mirrors[live.names[i]] = shares, mirrors
	}
	out.Err = live.err
	s.window[namespace] = &Snapshot{Workloads: map[string]*Window{}}
	return out
}

func (s *Simulator) snapshot(namespace string) *Snapshot {
	snap := s.window[namespace]
	if snap == nil {
		snap = &Snapshot{Workloads: map[string]*Window{}}
		s.window[namespace] = snap
	}
	return snap
}

// refresh reads every namespace's VirtualServices, Services and Deployments.
func (s *Simulator) refresh(ctx context.Context) {
	for _, ns := range s.opts.Namespaces {
		live, err := s.read(ctx, ns)
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		if err != nil {
			prev := s.live[ns]
			prev.err = err
			s.live[ns] = prev
			s.mu.Unlock()
			s.log.Warn("read routes", "namespace", ns, "err", err)
			continue
		}
		s.live[ns] = live
		s.mu.Unlock()
		for host, b := range live.backends {
			if !b.Ready {
				continue
			}
			for _, code := range []int{200, 500} {
				s.m.touch(Sample{Reporter: "destination", Namespace: ns, Workload: b.Workload, Service: host, Version: b.Version, Code: code})
			}
		}
	}
}

func (s *Simulator) read(ctx context.Context, ns string) (liveNamespace, error) {
	call, cancel := context.WithTimeout(ctx, s.opts.CallTimeout)
	defer cancel()
	vsList, err := s.istio.NetworkingV1().VirtualServices(ns).List(call, metav1.ListOptions{})
	if err != nil {
		return liveNamespace{}, fmt.Errorf("list VirtualServices in %s: %w", ns, err)
	}
	svcList, err := s.kube.CoreV1().Services(ns).List(call, metav1.ListOptions{})
	if err != nil {
		return liveNamespace{}, fmt.Errorf("list Services in %s: %w", ns, err)
	}
	depList, err := s.kube.AppsV1().Deployments(ns).List(call, metav1.ListOptions{})
	if err != nil {
		return liveNamespace{}, fmt.Errorf("list Deployments in %s: %w", ns, err)
	}
	live := liveNamespace{backends: Backends(svcList.Items, depList.Items, s.opts.Behave)}
	sort.Slice(vsList.Items, func(i, j int) bool { return vsList.Items[i].Name < vsList.Items[j].Name })
	for _, vs := range vsList.Items {
		live.services = append(live.services, &vs.Spec)
		live.names = append(live.names, vs.Name)
	}
	if s.opts.GatewayAPI != nil {
		routes, err := s.opts.GatewayAPI.GatewayV1().HTTPRoutes(ns).List(call, metav1.ListOptions{})
		if err != nil {
			return liveNamespace{}, fmt.Errorf("list HTTPRoutes in %s: %w", ns, err)
		}
		sort.Slice(routes.Items, func(i, j int) bool { return routes.Items[i].Name < routes.Items[j].Name })
		for i := range routes.Items {
			live.services = append(live.services, FromHTTPRoute(&routes.Items[i]))
			live.names = append(live.names, routes.Items[i].Name)
		}
	}
	return live, nil
}

// Backends finds, for each Service, the Deployment whose pods it selects (the first by name
// when several do), and how the version it runs answers.
func Backends(services []corev1.Service, deployments []appsv1.Deployment, behave func(string) Behaviour) map[string]Backend {
	deps := slices.Clone(deployments)
	sort.Slice(deps, func(i, j int) bool { return deps[i].Name < deps[j].Name })
	out := map[string]Backend{}
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		for _, d := range deps {
			if !selects(svc.Spec.Selector, d.Spec.Template.Labels) || len(d.Spec.Template.Spec.Containers) == 0 {
				continue
			}
			version := VersionOf(d.Spec.Template.Spec.Containers[0].Image)
			out[svc.Name] = Backend{Workload: d.Name, Version: version, Behaviour: behave(version),
				Ready: d.Status.AvailableReplicas > 0}
			break
		}
	}
	return out
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// send produces dt seconds of traffic on every VirtualService.
func (s *Simulator) send(dt float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ns, live := range s.live {
		snap := s.snapshot(ns)
		for i, vs := range live.services {
			name := live.names[i]
			tallies, unavailable := Plan(vs, s.opts.Mix, s.opts.RPS*dt, live.backends)
			if n := s.whole(carryKey{ns, name, "", "unavailable"}, unavailable); n > 0 {
				snap.Unavailable += n
				for range n {
					s.m.observe(Sample{Reporter: "source", Namespace: ns, Workload: "unknown", Service: name, Code: 503, Flags: "UH"})
				}
			}
			for workload, t := range tallies {
				b := backendOf(live.backends, workload)
				served := s.whole(carryKey{ns, name, workload, "served"}, t.Served)
				mirrored := s.whole(carryKey{ns, name, workload, "mirrored"}, t.Mirrored)
				errs := s.whole(carryKey{ns, name, workload, "errors"}, t.Errors)
				if extra := errs - (served + mirrored); extra > 0 {
					// Errors are due before the requests that carry them: keep them for later.
					s.carry[carryKey{ns, name, workload, "errors"}] += float64(extra)
					errs -= extra
				}
				w := snap.Workloads[workload]
				if w == nil {
					w = &Window{Workload: workload}
					snap.Workloads[workload] = w
				}
				w.Version = b.Version
				w.Requests += served + mirrored
				w.Mirrored += mirrored
				w.Errors += errs
				for r := range served + mirrored {
					code := 200
					if r < errs {
						code = 500
					}
					latency := b.Behaviour.LatencyMs * (0.8 + 0.4*s.rng.Float64())
					if len(w.LatenciesMs) < maxWindowLatencies {
						w.LatenciesMs = append(w.LatenciesMs, latency)
					}
					s.m.observe(Sample{Reporter: "destination", Namespace: ns, Workload: workload,
						Service: t.Service, Version: b.Version, Code: code, LatencyMs: latency})
				}
			}
		}
	}
}

// whole adds x to a carry and takes out its whole part, so fractional rates add up over ticks.
func (s *Simulator) whole(k carryKey, x float64) int {
	s.carry[k] += x
	n := math.Floor(s.carry[k])
	s.carry[k] -= n
	return int(n)
}

func backendOf(backends map[string]Backend, workload string) Backend {
	for _, b := range backends {
		if b.Workload == workload {
			return b
		}
	}
	return Backend{}
}
