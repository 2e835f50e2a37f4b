//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/siskin-dev/siskin/istio"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// weightHistory records, from a watch of the namespace's VirtualServices, every change of each
// canary's weight: the history a user sees, not what Siskin logs.
type weightHistory struct {
	mu      sync.Mutex
	weights map[string][]int
	at      map[string][]time.Time
	stop    context.CancelFunc
	done    sync.WaitGroup
}

func watchWeights(t *testing.T, e *env) *weightHistory {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &weightHistory{weights: map[string][]int{}, at: map[string][]time.Time{}, stop: cancel}
	w, err := e.istio.NetworkingV1().VirtualServices(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.done.Go(func() {
		for ev := range w.ResultChan() {
			vs, ok := ev.Object.(*networkingv1.VirtualService)
			if !ok || ev.Type == watch.Error || ev.Type == watch.Deleted {
				continue
			}
			r, ok := istio.WeightsOf(vs)
			if !ok {
				continue
			}
			h.mu.Lock()
			if ws := h.weights[vs.Name]; len(ws) == 0 || ws[len(ws)-1] != r.Canary {
				h.weights[vs.Name] = append(ws, r.Canary)
				h.at[vs.Name] = append(h.at[vs.Name], time.Now())
			}
			h.mu.Unlock()
		}
	})
	t.Cleanup(func() { h.stop(); h.done.Wait() })
	return h
}

func (h *weightHistory) of(name string) []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.weights[name])
}

// stepGaps are the times between the weight steps of a canary (5 → 10 … 45 → 50) as its
// watch saw them: figures to log, never to assert on.
func (h *weightHistory) stepGaps(name string) []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var gaps []time.Duration
	ws, at := h.weights[name], h.at[name]
	for i := 1; i < len(ws); i++ {
		if ws[i-1] > 0 && ws[i] > ws[i-1] {
			gaps = append(gaps, at[i].Sub(at[i-1]))
		}
	}
	slices.Sort(gaps)
	return gaps
}

func logGaps(t *testing.T, interval string, gaps []time.Duration) {
	t.Helper()
	if len(gaps) == 0 {
		return
	}
	t.Logf("gaps between weight steps at a %s interval: %d, p50 %v, max %v", interval, len(gaps),
		gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
}

// seedLadder is the seed Canary's release as a VirtualService shows it: 5 % steps to 50 %,
// then back to 0 once the primary is promoted.
var seedLadder = []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}

// pingEvery sends a PingSource CloudEvent to url at each period until the test ends, each in
// a request of its own that stays open for the dispatcher's window, as Knative's does.
func pingEvery(t *testing.T, url string, period time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			wg.Go(func() { _, _ = postPing(ctx, url, fmt.Sprintf("%s-ping-%d", t.Name(), i)) })
			select {
			case <-ctx.Done():
				return
			case <-time.After(period):
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// The fan-out: three `siskin serve` processes behind a balancer that duplicates 30 % of the
// requests to a second process and delays every copy, so pings, object events and step events
// arrive twice, late, out of order and at two processes at once. The pings overlap (a new one
// every 15 s, each dispatching for 40 s), so the dispatching is handed over while steps are in
// flight. Every canary's weights still go 5, 10, …, 50 exactly once each, and every process
// takes a share of the work.
func TestStepEventsFanOutOverThreeProcessesWithoutDoubling(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "fanout")
	ctx := context.Background()
	ex := startExporter(t, e)
	names := []string{"app-a", "app-b", "app-c", "app-d"}
	for _, n := range names {
		ex.Set(e.ns, n, traffic.Behaviour{RPS: 50, LatencyMs: 40})
		e.createDeployment(n, e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	}
	// The balancer's address is the processes' step sink, so it must exist first: it starts
	// with placeholder backends, replaced once the processes listen.
	var procs []*siskin
	lb, err := lab.StartBalancer(lab.BalancerOptions{Duplicate: 0.3, MaxDelay: 400 * time.Millisecond, Seed: 13}, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lb.Close)
	for range 3 {
		procs = append(procs, startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraEnv: []string{
			"SISKIN_STEP_SINK=" + lb.URL + "/", "SISKIN_TICK_WINDOW=40s", "SISKIN_RESYNC=5m"}}))
	}
	var urls []string
	for _, p := range procs {
		urls = append(urls, p.url)
	}
	lb.SetBackends(urls...)
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: lb.URL + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	history := watchWeights(t, e)

	for _, n := range names {
		e.apply(seedCanary(t, e.ns, n, "2s"))
	}
	waitUntil(t, 90*time.Second, "every Canary Initialized", func() bool {
		for _, n := range names {
			if e.observe(n).Phase != "Initialized" {
				return false
			}
		}
		return true
	})
	pingEvery(t, lb.URL+"/", 15*time.Second)
	for _, n := range names {
		e.setImage(n, e.lab.Registry()+"/lab/podinfo:2.0.0")
	}
	waitUntil(t, 3*time.Minute, "every release Succeeded", func() bool {
		for _, n := range names {
			if e.observe(n).Phase != "Succeeded" {
				return false
			}
		}
		return true
	})
	for _, n := range names {
		if diff := cmp.Diff(seedLadder, history.of(n)); diff != "" {
			t.Errorf("%s: the canary's weights, as the VirtualService watch saw them (-want +got):\n%s", n, diff)
		}
	}
	var gaps []time.Duration
	for _, n := range names {
		gaps = append(gaps, history.stepGaps(n)...)
	}
	slices.Sort(gaps)
	logGaps(t, "2s", gaps)
	served, copies := lb.Served()
	t.Logf("requests per process %v, of which %d duplicates", served, copies)
	for _, u := range urls {
		if served[u] == 0 {
			t.Errorf("process %s served no request; the work did not spread", u)
		}
	}
	if copies == 0 {
		t.Error("the balancer duplicated nothing; the test proved nothing about duplicates")
	}
}

// The dispatcher dies mid-release (SIGKILL, between pings): the steps it had sent or was about
// to send are neither lost nor doubled. The next ping, at another process, picks them up.
func TestADispatcherKilledMidReleaseLosesAndDoublesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "dispatcher-crash")
	ctx := context.Background()
	lb, opts := podinfoBehindABalancer(t, e)
	dispatcher, other := startSiskin(t, e.lab, opts), startSiskin(t, e.lab, opts)
	lb.SetBackends(dispatcher.url, other.url)
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: lb.URL + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	history := watchWeights(t, e)
	e.apply(seedCanary(t, e.ns, "podinfo", "2s"))
	waitUntil(t, 60*time.Second, "the Canary Initialized", func() bool { return e.observe("podinfo").Phase == "Initialized" })

	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	waitUntil(t, 30*time.Second, "the release started by its event", func() bool { return e.observe("podinfo").Phase == "Progressing" })
	// The release woke a dispatcher at one of the two; the ping starts a newer one, which
	// takes over, at the process about to die.
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		_, _ = postPing(ctx, dispatcher.url+"/", "crash-ping-1") // ends when the process dies
	}()
	waitUntil(t, 60*time.Second, "the release at 20 %", func() bool { return e.observe("podinfo").CanaryWeight >= 20 })
	if err := dispatcher.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-pinged
	killedAt := e.observe("podinfo").CanaryWeight
	t.Logf("dispatcher killed at %d %%", killedAt)
	go func() { _, _ = postPing(ctx, other.url+"/", "crash-ping-2") }()
	waitUntil(t, 2*time.Minute, "the release Succeeded after the crash", func() bool { return e.observe("podinfo").Phase == "Succeeded" })
	if diff := cmp.Diff(seedLadder, history.of("podinfo")); diff != "" {
		t.Errorf("the canary's weights across the crash (-want +got):\n%s", diff)
	}
}

// A release started by an event between pings wakes a dispatcher of its own: with no ping at
// all, it steps 5, 10, …, 50 once each and is promoted.
func TestAReleaseBetweenPingsNeedsNoPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "no-ping-release")
	ctx := context.Background()
	lb, opts := podinfoBehindABalancer(t, e)
	s := startSiskin(t, e.lab, opts)
	lb.SetBackends(s.url)
	src, err := e.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Namespace: e.ns, Sink: s.url + "/", Token: webhookToken})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Stop)
	history := watchWeights(t, e)
	e.apply(seedCanary(t, e.ns, "podinfo", "2s"))
	waitUntil(t, 60*time.Second, "the Canary Initialized by its events", func() bool { return e.observe("podinfo").Phase == "Initialized" })
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:2.0.0")
	waitUntil(t, 90*time.Second, "the release Succeeded with no ping", func() bool { return e.observe("podinfo").Phase == "Succeeded" })
	if diff := cmp.Diff(seedLadder, history.of("podinfo")); diff != "" {
		t.Errorf("the canary's weights (-want +got):\n%s", diff)
	}
	logGaps(t, "2s", history.stepGaps("podinfo"))
}

// postPing delivers a PingSource CloudEvent to url and waits for its answer.
func postPing(ctx context.Context, url, id string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"tick":"advance"}`))
	if err != nil {
		return 0, err
	}
	for k, v := range map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": "dev.knative.sources.ping",
		"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Content-Type": "application/json",
		"Authorization": "Bearer " + webhookToken,
	} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// podinfoBehindABalancer creates podinfo 1.0.0 with healthy traffic, and a balancer (no
// backends yet) that the Siskin processes started with opts send their step events to.
func podinfoBehindABalancer(t *testing.T, e *env) (*lab.Balancer, siskinOpts) {
	t.Helper()
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	lb, err := lab.StartBalancer(lab.BalancerOptions{}, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lb.Close)
	return lb, siskinOpts{namespace: e.ns, extraEnv: []string{"SISKIN_STEP_SINK=" + lb.URL + "/", "SISKIN_TICK_WINDOW=60s", "SISKIN_RESYNC=5m"}}
}
