//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/redis/go-redis/v9"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	istioclient "istio.io/client-go/pkg/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/siskin-dev/siskin/analysis"
	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

// Issue 7's and issue 3's latency figures, measured against the lab. They are benchmarks, not
// tests: each does a fixed number of operations in one b.N iteration and prints p50/p99 as a
// Markdown table, with the raw dependency calls measured in the same run (interleaved, one
// round after each operation, so they see the same machine). Run them with
//
//	go test -tags e2e -run '^$' -bench 'Abort|Push|Step' -benchtime 1x ./test/e2e/
//
// The machine is shared: the figures say what this machine did at that moment, no more.
// With SISKIN_LOG_LEVEL=debug and BENCH_LOGS=<file>, the step and push benchmarks write Siskin's
// log to the file, with a line per Kubernetes call (its start and duration).

var benchRun atomic.Int32

// benchNamespace is unique per call, so -count=2 in one lab does not collide.
func benchNamespace(prefix string) string { return fmt.Sprintf("%s-%d", prefix, benchRun.Add(1)) }

// fleet is a set of canaries, stepped by one Siskin.
type fleet struct {
	tb   testing.TB
	n    *labNS // the first namespace; its clients serve all
	s    *siskin
	rdb  *redis.Client
	keys []functions.Key
	// scope is the namespace Siskin is limited to; "" when the fleet spans namespaces.
	scope string
}

// newFleet creates count targets and canaries (analysis interval 30 s, so that nothing but the
// benchmark steps them), perNamespace in each namespace, starts Siskin and initializes every
// canary. A fleet in one namespace is named ns and has a Siskin limited to it; a fleet over
// several has namespaces ns-0, ns-1… and a Siskin for the whole cluster.
func newFleet(tb testing.TB, ns, prefix string, count, perNamespace int, image func(i int) string, edit func(string) string) *fleet {
	tb.Helper()
	f := &fleet{tb: tb, rdb: redis.NewClient(&redis.Options{Addr: lab.Require(tb).RedisAddr()})}
	tb.Cleanup(func() {
		// The namespaces go; so does their schedule, so the next benchmark's Siskin starts clean.
		ctx := context.Background()
		for _, k := range f.keys {
			f.rdb.ZRem(ctx, "{siskin}:due", k.String())
			f.rdb.ZRem(ctx, "{siskin}:due:releasing", k.String())
		}
		_ = f.rdb.Close()
	})
	manifests := map[string][]string{}
	var order []string
	for i := range count {
		nsi := ns
		if perNamespace < count {
			nsi = fmt.Sprintf("%s-%d", ns, i/perNamespace)
		}
		if _, ok := manifests[nsi]; !ok {
			order = append(order, nsi)
			if f.n == nil {
				f.n = newLabNS(tb, nsi)
			} else {
				f.n.create(nsi)
			}
			manifests[nsi] = nil
		}
		k := functions.Key{Namespace: nsi, Name: fmt.Sprintf("%s%02d", prefix, i)}
		f.keys = append(f.keys, k)
		f.n.at(nsi).createDeployment(k.Name, image(i), 1)
		manifests[nsi] = append(manifests[nsi], string(canaryManifest(tb, nsi, k.Name, "30s", edit)))
	}
	for _, nsi := range order {
		f.n.apply([]byte(strings.Join(manifests[nsi], "\n---\n")))
	}
	if len(order) == 1 {
		f.scope = ns
	}
	f.s = startSiskin(tb, f.n.lab, siskinOpts{namespace: f.scope})
	f.advance(functions.PhaseInitialized, 5*time.Minute)
	return f
}

// views is every canary of the fleet as Siskin's API shows it.
func (f *fleet) views() map[functions.Key]functions.CanaryView {
	var vs []functions.CanaryView
	if f.scope != "" {
		f.s.get("/api/v1/canaries/"+f.scope, &vs)
	} else {
		f.s.get("/api/v1/canaries", &vs)
	}
	out := map[functions.Key]functions.CanaryView{}
	for _, v := range vs {
		out[v.Key] = v
	}
	return out
}

// advance ticks, making the laggards due each time, until every canary is in phase.
func (f *fleet) advance(phase functions.Phase, timeout time.Duration) {
	f.tb.Helper()
	deadline := time.Now().Add(timeout)
	for try := 0; ; try++ {
		var behind []functions.Key
		views := f.views()
		for _, k := range f.keys {
			if views[k].Phase != phase {
				behind = append(behind, k)
			}
		}
		if len(behind) == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.tb.Fatalf("%d canaries never reached %s, e.g. %s is %s", len(behind), phase, behind[0], views[behind[0]].Phase)
		}
		for _, k := range behind {
			makeDue(f.tb, f.rdb, k.Namespace, k.Name)
		}
		if code, body := f.s.tick(fmt.Sprintf("%s-advance-%s-%d", f.n.ns, phase, try)); code != http.StatusOK {
			f.tb.Logf("tick: %d %s", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// release sets a new image on every target and steps every canary into Progressing.
func (f *fleet) release(image func(i int) string) {
	f.tb.Helper()
	ctx := context.Background()
	for i, k := range f.keys {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			d, err := f.n.kube.AppsV1().Deployments(k.Namespace).Get(ctx, k.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			d.Spec.Template.Spec.Containers[0].Image = image(i)
			_, err = f.n.kube.AppsV1().Deployments(k.Namespace).Update(ctx, d, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			f.tb.Fatal(err)
		}
	}
	f.advance(functions.PhaseProgressing, 5*time.Minute)
}

// rawProbe times the dependency calls Siskin makes, one of each per sample, with Siskin's own
// identity and client settings (QPS 100, burst 250, JSON), on scratch objects in a namespace
// Siskin does not watch, so writes really write.
type rawProbe struct {
	tb       testing.TB
	ns, raw  string // the benchmark's namespace, and the scratch one
	kube     kubernetes.Interface
	dyn      dynamic.Interface
	istio    istioclient.Interface
	rdb      *redis.Client
	prom     promv1.API
	promQL   string   // the built-in success-rate query of the probed canary; "" skips it
	image    string   // an image reference to HEAD at the registry; "" skips it
	fanout   []string // targets whose Deployments are all read, as a push does; nil skips it
	canary   string   // a canary of the benchmark, read as Siskin reads it
	n        int
	vs       *networkingv1.VirtualService
	evalSHA  *redis.Script
	stateKey string
}

func newRawProbe(tb testing.TB, n *labNS, canary string) *rawProbe {
	tb.Helper()
	ctx := context.Background()
	cfg := n.lab.SiskinRESTConfig()
	cfg.QPS, cfg.Burst = 100, 250
	p := &rawProbe{tb: tb, ns: n.ns, raw: n.ns + "-raw", canary: canary,
		kube:     kubernetes.NewForConfigOrDie(cfg),
		dyn:      dynamic.NewForConfigOrDie(cfg),
		istio:    istioclient.NewForConfigOrDie(cfg),
		rdb:      redis.NewClient(&redis.Options{Addr: n.lab.RedisAddr()}),
		stateKey: "siskin:{" + n.ns + "/" + canary + "}:state",
		// The shape of Siskin's claim and save scripts: a GET and a SET in one round trip.
		evalSHA: redis.NewScript(`local v = redis.call('GET', KEYS[1]) return redis.call('SET', KEYS[1], ARGV[1])`),
	}
	tb.Cleanup(func() { _ = p.rdb.Close() })
	pc, err := api.NewClient(api.Config{Address: n.lab.PrometheusURL()})
	if err != nil {
		tb.Fatal(err)
	}
	p.prom = promv1.NewAPI(pc)

	scratch := newLabNS(tb, p.raw)
	scratch.createDeployment("scratch", n.lab.Registry()+"/lab/scratch:1.0.0", 0)
	// Suspended: a Siskin for the whole cluster leaves it alone.
	scratch.apply(canaryManifest(tb, p.raw, "scratch", "30s", func(s string) string {
		return strings.Replace(s, "spec:\n  targetRef:", "spec:\n  suspend: true\n  targetRef:", 1)
	}))
	scratch.apply([]byte(fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: scratch
  namespace: %s
spec:
  hosts: [scratch]
  http:
  - route:
    - destination: {host: scratch-primary}
      weight: 100
    - destination: {host: scratch-canary}
      weight: 0
`, p.raw)))
	if p.vs, err = p.istio.NetworkingV1().VirtualServices(p.raw).Get(ctx, "scratch", metav1.GetOptions{}); err != nil {
		tb.Fatal(err)
	}
	return p
}

// timed runs f with a 5 s timeout and records its duration under name; a failure is fatal, so
// no figure hides an error.
func (p *rawProbe) timed(l *latencies, name string, f func(ctx context.Context) error) {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	d := time.Since(start)
	if err != nil {
		p.tb.Fatalf("raw %s: %v", name, err)
	}
	l.add(name, d)
}

// Names of the raw calls, as the tables show them.
const (
	rawRedisGet    = "raw Redis GET (R)"
	rawRedisEval   = "raw Redis EVALSHA, GET and SET (Rs)"
	rawGetDeploy   = "raw k8s GET Deployment (G)"
	rawGetCanary   = "raw k8s GET Canary (Gc)"
	rawGetVS       = "raw k8s GET VirtualService (Gv)"
	rawGetCached   = "raw k8s GET Service from the watch cache, resourceVersion 0 (Gw)"
	rawListCanary  = "raw k8s LIST Canaries of the namespace, from the cache (L)"
	rawListQuorum  = "raw k8s LIST Canaries of the namespace, consistent (Lq)"
	rawUpdateVS    = "raw k8s UPDATE VirtualService (U)"
	rawUpdateStat  = "raw k8s PATCH Canary status (Us)"
	rawPatchDeploy = "raw k8s PATCH Deployment (Pd)"
	rawCreateEvent = "raw k8s CREATE Event (C)"
	rawPromQuery   = "raw Prometheus instant query, success rate (P)"
	rawRegistryHd  = "raw registry HEAD manifest (H)"
	// The same calls grouped as Siskin overlaps them: on 2 shared cores, calls "in parallel"
	// still share the apiserver's CPU, so these are measured, not derived.
	rawLoad      = "raw ∥ load: GET Canary ∥ Redis GET (LOAD)"
	rawObserve   = "raw ∥ observe: GET 2 Deployments ∥ GET 2 Services, the VirtualService, 2 DestinationRules from the cache (OBSERVE)"
	rawReadAhead = "raw ∥ an abort's reads: Redis GET ∥ GET the VirtualService, 2 DestinationRules from the cache (READ)"
	rawAct       = "raw ∥ act: UPDATE VirtualService ∥ GET target, apex Service from the cache (ACT)"
	rawLists     = "raw ∥ LIST Canaries ∥ LIST Deployments of the namespace, from the cache (LISTS)"
	rawAfter     = "raw ∥ after: Redis MULTI ∥ PATCH Canary status ∥ CREATE Event (AFTER)"
	rawFanout    = "raw ∥ every target Deployment GET, 16 at a time, as a push reads them (FAN)"
)

// together runs fns concurrently and returns their first error.
func together(ctx context.Context, fns ...func(ctx context.Context) error) error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, f := range fns {
		wg.Go(func() { errs[i] = f(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// sample takes one round of raw calls.
func (p *rawProbe) sample(l *latencies) {
	p.tb.Helper()
	p.n++
	i := p.n
	p.timed(l, rawRedisGet, func(ctx context.Context) error {
		err := p.rdb.Get(ctx, p.stateKey).Err()
		if err == redis.Nil {
			return nil
		}
		return err
	})
	p.timed(l, rawRedisEval, func(ctx context.Context) error {
		return p.evalSHA.Run(ctx, p.rdb, []string{"bench:{" + p.raw + "}:scratch"}, i).Err()
	})
	p.timed(l, rawGetDeploy, func(ctx context.Context) error {
		_, err := p.kube.AppsV1().Deployments(p.ns).Get(ctx, p.canary, metav1.GetOptions{})
		return err
	})
	p.timed(l, rawGetCanary, func(ctx context.Context) error {
		_, err := p.dyn.Resource(canaryGVR).Namespace(p.ns).Get(ctx, p.canary, metav1.GetOptions{})
		return err
	})
	p.timed(l, rawGetVS, func(ctx context.Context) error {
		_, err := p.istio.NetworkingV1().VirtualServices(p.ns).Get(ctx, p.canary, metav1.GetOptions{})
		return err
	})
	p.timed(l, rawGetCached, func(ctx context.Context) error {
		_, err := p.kube.CoreV1().Services(p.ns).Get(ctx, p.canary+"-canary", metav1.GetOptions{ResourceVersion: "0"})
		return err
	})
	p.timed(l, rawListQuorum, func(ctx context.Context) error {
		_, err := p.dyn.Resource(canaryGVR).Namespace(p.ns).List(ctx, metav1.ListOptions{})
		return err
	})
	p.timed(l, rawListCanary, func(ctx context.Context) error {
		_, err := p.dyn.Resource(canaryGVR).Namespace(p.ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		return err
	})
	p.timed(l, rawUpdateVS, func(ctx context.Context) error {
		next := p.vs.DeepCopy()
		next.Annotations = map[string]string{"bench": fmt.Sprint(i)}
		out, err := p.istio.NetworkingV1().VirtualServices(p.raw).Update(ctx, next, metav1.UpdateOptions{})
		if err == nil {
			p.vs = out
		}
		return err
	})
	patchStatus := func(ctx context.Context, message string) error {
		patch := fmt.Appendf(nil, `{"status":{"message":%q}}`, message)
		_, err := p.dyn.Resource(canaryGVR).Namespace(p.raw).Patch(ctx, "scratch", types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		return err
	}
	p.timed(l, rawUpdateStat, func(ctx context.Context) error { return patchStatus(ctx, fmt.Sprintf("bench %d", i)) })
	p.timed(l, rawPatchDeploy, func(ctx context.Context) error {
		patch := fmt.Appendf(nil, `{"metadata":{"annotations":{"bench":"%d"}}}`, i)
		_, err := p.kube.AppsV1().Deployments(p.raw).Patch(ctx, "scratch", types.MergePatchType, patch, metav1.PatchOptions{})
		return err
	})
	p.timed(l, rawCreateEvent, func(ctx context.Context) error {
		_, err := p.kube.CoreV1().Events(p.raw).Create(ctx, &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("scratch.%d", i), Namespace: p.raw},
			InvolvedObject: corev1.ObjectReference{Kind: "Canary", Namespace: p.raw, Name: "scratch", APIVersion: "flagger.app/v1beta1"},
			Reason:         "Synced", Message: fmt.Sprintf("bench %d", i), Type: corev1.EventTypeNormal, Count: 1,
			Source: corev1.EventSource{Component: "bench"}, FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now()}, metav1.CreateOptions{})
		return err
	})
	getDeploy := func(name string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := p.kube.AppsV1().Deployments(p.ns).Get(ctx, name, metav1.GetOptions{})
			return err
		}
	}
	// As Siskin reads what it re-asserts: from the watch cache.
	cached := metav1.GetOptions{ResourceVersion: "0"}
	getService := func(name string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := p.kube.CoreV1().Services(p.ns).Get(ctx, name, cached)
			return err
		}
	}
	getRule := func(name string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			_, err := p.istio.NetworkingV1().DestinationRules(p.ns).Get(ctx, name, cached)
			return err
		}
	}
	redisGet := func(ctx context.Context) error {
		if err := p.rdb.Get(ctx, p.stateKey).Err(); err != redis.Nil {
			return err
		}
		return nil
	}
	p.timed(l, rawLoad, func(ctx context.Context) error {
		return together(ctx,
			func(ctx context.Context) error {
				_, err := p.dyn.Resource(canaryGVR).Namespace(p.ns).Get(ctx, p.canary, metav1.GetOptions{})
				return err
			},
			redisGet)
	})
	getVS := func(ctx context.Context) error {
		_, err := p.istio.NetworkingV1().VirtualServices(p.ns).Get(ctx, p.canary, cached)
		return err
	}
	p.timed(l, rawObserve, func(ctx context.Context) error {
		return together(ctx, getDeploy(p.canary), getDeploy(p.canary+"-primary"),
			getService(p.canary+"-canary"), getService(p.canary+"-primary"),
			getVS, getRule(p.canary+"-primary"), getRule(p.canary+"-canary"))
	})
	p.timed(l, rawLists, func(ctx context.Context) error {
		return together(ctx,
			func(ctx context.Context) error {
				_, err := p.dyn.Resource(canaryGVR).Namespace(p.ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
				return err
			},
			func(ctx context.Context) error {
				_, err := p.kube.AppsV1().Deployments(p.ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
				return err
			})
	})
	p.timed(l, rawReadAhead, func(ctx context.Context) error {
		return together(ctx, redisGet, getVS, getRule(p.canary+"-primary"), getRule(p.canary+"-canary"))
	})
	p.timed(l, rawAct, func(ctx context.Context) error {
		return together(ctx,
			func(ctx context.Context) error {
				_, err := p.kube.AppsV1().Deployments(p.ns).Get(ctx, p.canary, cached)
				return err
			},
			getService(p.canary),
			func(ctx context.Context) error {
				// The VirtualService as read ahead (the probe is its only writer).
				next := p.vs.DeepCopy()
				next.Annotations = map[string]string{"bench": fmt.Sprint(i) + "r"}
				out, err := p.istio.NetworkingV1().VirtualServices(p.raw).Update(ctx, next, metav1.UpdateOptions{})
				if err == nil {
					p.vs = out
				}
				return err
			})
	})
	p.timed(l, rawAfter, func(ctx context.Context) error {
		return together(ctx,
			func(ctx context.Context) error {
				_, err := p.rdb.TxPipelined(ctx, func(pl redis.Pipeliner) error {
					pl.ZAdd(ctx, "bench:{"+p.raw+"}:due", redis.Z{Score: float64(i), Member: "x"})
					pl.ZAdd(ctx, "bench:{"+p.raw+"}:due2", redis.Z{Score: float64(i), Member: "x"})
					return nil
				})
				return err
			},
			func(ctx context.Context) error { return patchStatus(ctx, fmt.Sprintf("bench %da", i)) },
			func(ctx context.Context) error {
				_, err := p.kube.CoreV1().Events(p.raw).Create(ctx, &corev1.Event{
					ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("scratch.%da", i), Namespace: p.raw},
					InvolvedObject: corev1.ObjectReference{Kind: "Canary", Namespace: p.raw, Name: "scratch", APIVersion: "flagger.app/v1beta1"},
					Reason:         "Synced", Message: fmt.Sprintf("bench %da", i), Type: corev1.EventTypeNormal, Count: 1,
					Source: corev1.EventSource{Component: "bench"}, FirstTimestamp: metav1.Now(), LastTimestamp: metav1.Now()}, metav1.CreateOptions{})
				return err
			})
	})
	if p.promQL != "" {
		p.timed(l, rawPromQuery, func(ctx context.Context) error {
			_, _, _, err := p.prom.Query(ctx, p.promQL, time.Now())
			return err
		})
	}
	if len(p.fanout) > 0 {
		p.timed(l, rawFanout, func(ctx context.Context) error {
			slots := make(chan struct{}, 16)
			fns := make([]func(ctx context.Context) error, len(p.fanout))
			for j, n := range p.fanout {
				get := getDeploy(n)
				fns[j] = func(ctx context.Context) error {
					slots <- struct{}{}
					defer func() { <-slots }()
					return get(ctx)
				}
			}
			return together(ctx, fns...)
		})
	}
	if p.image != "" {
		p.timed(l, rawRegistryHd, func(ctx context.Context) error {
			ref, err := name.ParseReference(p.image, name.Insecure)
			if err != nil {
				return err
			}
			_, err = remote.Head(ref, remote.WithContext(ctx))
			return err
		})
	}
}

// report prints the table and the critical-path estimate, and reports p50/p99 to the
// benchmark framework.
func report(b *testing.B, title, measured string, l *latencies, paths []criticalPath) {
	b.Helper()
	var out strings.Builder
	out.WriteString(l.table(title))
	if len(paths) > 0 {
		fmt.Fprintf(&out, "\n| critical path (from the raw p50s) | ms | measured p50 ms | ratio |\n| --- | ---: | ---: | ---: |\n")
		for _, cp := range paths {
			est := cp.estimate(b, l)
			got := l.p(cp.measured, 50)
			fmt.Fprintf(&out, "| %s: %s | %s | %s | %.2f |\n", cp.name, cp.formula, ms(est), ms(got), float64(got)/float64(max(est, 1)))
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&out, "\nload average at the end: %s", load)
	fmt.Print(out.String())
	b.ReportMetric(float64(l.p(measured, 50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.p(measured, 99).Microseconds())/1000, "p99-ms")
}

// criticalPath is an estimate from the raw calls' p50s, written as stages in sequence
// ("→"), each the slowest of calls that overlap ("∥"), each of those calls in sequence ("+"),
// with the symbols of the raw calls: "Rs → Gc ∥ R → Gv + U". The formula is what is computed.
type criticalPath struct {
	name, formula string
	measured      string // the latency it is compared with
}

// rawSymbols are the symbols formulas use, to the raw call they stand for.
var rawSymbols = map[string]string{
	"R": rawRedisGet, "Rs": rawRedisEval, "G": rawGetDeploy, "Gc": rawGetCanary, "Gv": rawGetVS, "Gw": rawGetCached,
	"L": rawListCanary, "Lq": rawListQuorum, "U": rawUpdateVS, "Us": rawUpdateStat, "Pd": rawPatchDeploy, "C": rawCreateEvent,
	"P": rawPromQuery, "H": rawRegistryHd,
	"LOAD": rawLoad, "OBSERVE": rawObserve, "READ": rawReadAhead, "ACT": rawAct, "LISTS": rawLists, "AFTER": rawAfter, "FAN": rawFanout,
}

func (cp criticalPath) estimate(tb testing.TB, l *latencies) time.Duration {
	var sum time.Duration
	for _, stage := range strings.Split(cp.formula, "→") {
		var slowest time.Duration
		for _, alt := range strings.Split(stage, "∥") {
			var d time.Duration
			for _, sym := range strings.Split(alt, "+") {
				name, ok := rawSymbols[strings.TrimSpace(sym)]
				if !ok || len(l.samples[name]) == 0 {
					tb.Fatalf("critical path %s: no raw call %q", cp.name, strings.TrimSpace(sym))
				}
				d += l.p(name, 50)
			}
			slowest = max(slowest, d)
		}
		sum += slowest
	}
	return sum
}

// BenchmarkAbortLatency: from Alertmanager's POST arriving at Siskin to the VirtualService at
// 100/0 and the state saved Failed. Siskin answers only after both (functions.Service.abort
// acts and saves before it returns, and runAlerts writes the reply after HandleAlerts), which
// the loop checks after every request; the figure is the request's round trip over loopback.
//
// It runs twice: with all the canaries in one namespace, and with one canary per namespace. The
// alerts carry a canary label, so Siskin reads that canary rather than listing the namespace;
// an alert that names only a workload would add a LIST.
func BenchmarkAbortLatency(b *testing.B) {
	const aborts = 60
	for _, perNamespace := range []int{aborts, 1} {
		b.Run(fmt.Sprintf("canaries-per-namespace=%d", perNamespace), func(b *testing.B) { benchAbort(b, aborts, perNamespace) })
	}
}

func benchAbort(b *testing.B, aborts, perNamespace int) {
	ns := benchNamespace("bench-abort")
	reg := lab.Require(b).Registry()
	f := newFleet(b, ns, "a", aborts, perNamespace, func(int) string { return reg + "/lab/bench:1.0.0" }, nil)
	f.release(func(int) string { return reg + "/lab/bench:2.0.0" })
	probe := newRawProbe(b, f.n.at(f.keys[0].Namespace), f.keys[0].Name)
	var l latencies
	const request, server = "abort request, POST to reply (client)", "abort() inside Siskin (StepReport.duration)"
	b.ResetTimer()
	for range b.N {
		for i, k := range f.keys {
			body := alertmanagerBody(b, "firing", fmt.Sprintf("%016x", i+1), map[string]string{
				"alertname": "BenchCanary5xx", "namespace": k.Namespace, "canary": k.Name, "severity": "critical"})
			start := time.Now()
			code, reply := f.s.post("/webhooks/alertmanager", map[string]string{"Content-Type": "application/json", "User-Agent": "Alertmanager/0.25.0"}, body)
			took := time.Since(start)
			var rep functions.AbortReport
			if err := json.Unmarshal(reply, &rep); code != http.StatusOK || err != nil || len(rep.Aborted) != 1 {
				b.Fatalf("abort of %s: %d %s", k, code, reply)
			}
			// What the reply promises must already hold, without waiting.
			if p, c := f.n.at(k.Namespace).routes(k.Name); p != 100 || c != 0 {
				b.Fatalf("abort of %s answered but the VirtualService reads %d/%d", k, p, c)
			}
			if v := f.s.view(k.Namespace, k.Name); v.Phase != functions.PhaseFailed {
				b.Fatalf("abort of %s answered but the state is %s", k, v.Phase)
			}
			l.add(request, took)
			l.add(server, rep.Aborted[0].Duration)
			probe.sample(&l)
		}
	}
	b.StopTimer()
	report(b, fmt.Sprintf("BenchmarkAbortLatency: %d aborts, one canary each, %d canaries per namespace", aborts, perNamespace), request, &l, []criticalPath{
		// HandleAlerts reads the canary the alert names (Gc); abort loads its state (R) while it
		// reads the VirtualService and the DestinationRules from the cache (Gw), then acts
		// (routes: U; then the scale-down Pd) while it saves (Rs) and records the Event (C); the
		// status (one patch, Us) and the schedule (R) follow the save.
		{name: "abort, ideal overlap", measured: request, formula: "Gc → R ∥ Gw → U + Pd ∥ Rs ∥ C → Us ∥ R"},
		{name: "abort, overlapping groups as measured", measured: request, formula: "Gc → READ → U + Pd ∥ Rs ∥ C → Us ∥ R"},
		{name: "abort, every call in sequence", measured: request, formula: "Gc → R → Gw → Gw → Gw → U → Pd → Rs → C → Us → R"},
		{name: "abort() alone, overlapping groups as measured", measured: server, formula: "READ → U + Pd ∥ Rs ∥ C → Us ∥ R"},
	})
}

// BenchmarkPushToRelease: from a registry's notification arriving at Siskin to the target
// Deployment patched and the release started (the canary Progressing, its trigger the push).
// Each push is a new tag of a repository of its own, pushed to the registry first; the
// registry's own notifications are off, the benchmark posts the Distribution body itself.
func BenchmarkPushToRelease(b *testing.B) {
	const pushes = 32
	ctx := context.Background()
	l0 := lab.Require(b)
	if err := l0.SetRegistryNotify(ctx, "", ""); err != nil {
		b.Fatal(err)
	}
	ns := benchNamespace("bench-push")
	reg := l0.Registry()
	repo := func(i int) string { return fmt.Sprintf("lab/%s-p%02d", ns, i) }
	f := newFleet(b, ns, "p", pushes, pushes, func(i int) string { return reg + "/" + repo(i) + ":1.0.0" }, nil)
	probe := newRawProbe(b, f.n, f.keys[0].Name)
	for _, k := range f.keys {
		probe.fanout = append(probe.fanout, k.Name)
	}
	var l latencies
	const request = "push request, POST to reply (client)"
	starts := map[string]time.Time{}
	b.ResetTimer()
	for range b.N {
		for i, k := range f.keys {
			name := k.Name
			b.StopTimer()
			_, digest := pushImage(b, reg, repo(i), "1.1.0")
			probe.image = reg + "/" + repo(i) + "@" + digest
			body := distributionPush(b, reg, repo(i), "1.1.0", digest, fmt.Sprintf("%s-%d", ns, i))
			b.StartTimer()
			start := time.Now()
			code, reply := f.s.post("/webhooks/registry", distributionHeaders, body)
			took := time.Since(start)
			starts[k.String()] = start
			var rep functions.PushReport
			if err := json.Unmarshal(reply, &rep); code != http.StatusOK || err != nil || len(rep.Pushes) != 1 || rep.Pushes[0].Outcome != "started" {
				b.Fatalf("push for %s: %d %s", name, code, reply)
			}
			want := reg + "/" + repo(i) + ":1.1.0@" + digest
			if img := f.n.image(name); img != want {
				b.Fatalf("push for %s answered but the target runs %s, want %s", name, img, want)
			}
			if v := f.s.view(ns, name); v.Phase != functions.PhaseProgressing || v.Trigger == nil || v.Trigger.Kind != "push" {
				b.Fatalf("push for %s answered but the canary is %s with trigger %+v", name, v.Phase, v.Trigger)
			}
			l.add(request, took)
			probe.sample(&l)
		}
	}
	b.StopTimer()
	if p := os.Getenv("BENCH_LOGS"); p != "" {
		_ = os.WriteFile(p, []byte(f.s.Logs()), 0o644)
	}
	pushPhases(b, f.s.Logs(), starts, &l)
	report(b, fmt.Sprintf("BenchmarkPushToRelease: %d pushes, one canary each, %d canaries in the namespace", pushes, pushes), request, &l, []criticalPath{
		// HandlePushes (Siskin scoped to the namespace) lists the canaries and the namespace's
		// Deployments at once (one LIST each, whatever the number of canaries) while it HEADs
		// the manifest (H) and dedupes (SET NX, R); then, for the canary that takes it: the
		// pending trigger (state GET, save) while SetImage (GET, PATCH) runs, and the first step
		// from the canary as listed: claim, state GET, observe (7 GETs, 5 from the cache), act
		// (scale up: GET target ∥ GET primary, then PATCH; the routes are already right), save,
		// after, and the lease release.
		{name: "push, ideal overlap", measured: request,
			formula: "L ∥ H + R → G + Pd ∥ R + Rs → Rs → R → G → G + Pd → Rs → R ∥ Us ∥ C → Rs"},
		{name: "push, overlapping groups as measured", measured: request,
			formula: "LISTS ∥ H + R → G + Pd ∥ R + Rs → Rs → R → OBSERVE → G + Pd → Rs → AFTER → Rs"},
	})
}

// pushPhases splits each push's time by what Siskin logs along the way (text logs, millisecond
// times): the target's image set (deploy.Cluster.SetImage) and the release's first step.
func pushPhases(tb testing.TB, logs string, starts map[string]time.Time, l *latencies) {
	tb.Helper()
	imageSet := regexp.MustCompile(`time=(\S+) .*msg="image set" deployment=(\S+)`)
	stepped := regexp.MustCompile(`time=(\S+) .*msg=step canary=(\S+) namespace=\S+ from=Initialized to=Progressing`)
	at := func(re *regexp.Regexp) map[string]time.Time {
		out := map[string]time.Time{}
		for _, m := range re.FindAllStringSubmatch(logs, -1) {
			if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
				out[m[2]] = t
			}
		}
		return out
	}
	set, step := at(imageSet), at(stepped)
	for k, start := range starts {
		if set[k].IsZero() || step[k].IsZero() {
			tb.Logf("push for %s: no image-set or step log line", k)
			continue
		}
		l.add("push phase: arrival → image set (list, HEAD, dedupe, target GETs, trigger, SetImage)", set[k].Sub(start))
		l.add("push phase: image set → first step logged (Advance: claim … after)", step[k].Sub(set[k]))
	}
}

// BenchmarkStep (issue 3): one analysis step of a canary in Progressing (a weight step: the
// metrics are queried and the VirtualService moves by one point), driven by a tick over HTTP as
// Knative drives it. "step" is the duration Siskin reports for the step itself
// (TickReport.stepped[].duration: from before the claim to the end of `after`, so it leaves out
// the tick's LIST of canaries and schedule reads, and the lease release that follows). The tick
// round trip is reported too.
//
// Critical path of such a step, from functions/service.go (claimAndStep, load, step, answer,
// act, after), deploy/observe.go and istio/apply.go, with R a Redis round trip, Rs a script,
// G/Gc/Gv a Kubernetes GET, U/Us an UPDATE, C an Event CREATE and P a Prometheus query:
//
//	claim(Rs) → due check, ticks only (R) → load: GET Canary ∥ GET state (max(Gc,R))
//	→ observe: GET target ∥ GET primary ∥ GET 2 Services, the VirtualService and 2
//	  DestinationRules from the watch cache (G; nothing to write)
//	  ∥ metrics: success rate ∥ duration (P)
//	→ act: UPDATE VirtualService ∥ ensureApex: GET target, apex Service from the cache (U)
//	→ save (Rs) → after: schedule MULTI ∥ status PATCH ∥ Event CREATE (max(R, Us, C))
//	[→ release (Rs), after the reported duration]
func BenchmarkStep(b *testing.B) {
	const steps = 80
	ns := benchNamespace("bench-step")
	l0 := lab.Require(b)
	reg := l0.Registry()
	ex := serveTraffic(b, l0, ns)
	ex.Set(ns, "s00", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	// 99 one-point steps: enough analysis steps of the same kind for the sample.
	edit := func(s string) string {
		return strings.Replace(s, "maxWeight: 50\n    stepWeight: 5", "maxWeight: 99\n    stepWeight: 1", 1)
	}
	f := newFleet(b, ns, "s", 1, 1, func(int) string { return reg + "/lab/step:1.0.0" }, edit)
	name := f.keys[0].Name
	probe := newRawProbe(b, f.n, name)
	q, _, err := analysis.BuiltinQuery(functions.Canary{Key: functions.Key{Namespace: ns, Name: name},
		Spec: functions.Spec{TargetRef: functions.TargetRef{Name: name}}}, functions.Metric{Name: analysis.MetricRequestSuccessRate, Interval: "1m"})
	if err != nil {
		b.Fatal(err)
	}
	probe.promQL = q
	waitUntil(b, 60*time.Second, "Prometheus to have the canary's success rate", func() bool {
		v, ok := promQuery(b, l0.PrometheusURL(), q)
		return ok && v > 99
	})
	f.release(func(int) string { return reg + "/lab/step:2.0.0" })
	// Step until the canary's pods are ready and the weight moves.
	tickOnce := func(id string) (functions.TickReport, time.Duration) {
		makeDue(b, f.rdb, ns, name)
		start := time.Now()
		code, body := f.s.tick(id)
		took := time.Since(start)
		var rep functions.TickReport
		if err := json.Unmarshal(body, &rep); code != http.StatusOK || err != nil {
			b.Fatalf("tick: %d %s", code, body)
		}
		return rep, took
	}
	waitUntil(b, 60*time.Second, "the first weight step", func() bool {
		rep, _ := tickOnce(fmt.Sprintf("%s-warmup-%d", ns, time.Now().UnixNano()))
		return len(rep.Stepped) == 1 && rep.Stepped[0].Routing.Canary > 0
	})
	var l latencies
	const stepName, tickName = "step, claim to after (Siskin's StepReport.duration)", "tick round trip, POST to reply (client)"
	const overhead = "tick - step (LIST, schedule reads, release, HTTP)"
	other := 0
	b.ResetTimer()
	for range b.N {
		for i := 0; i < steps; i++ {
			before := f.s.view(ns, name).Weight
			rep, took := tickOnce(fmt.Sprintf("%s-%d", ns, i))
			if len(rep.Stepped) != 1 {
				b.Fatalf("tick %d stepped %d canaries, want 1: %+v", i, len(rep.Stepped), rep)
			}
			st := rep.Stepped[0]
			if st.To != functions.PhaseProgressing || st.Routing.Canary != before+1 {
				// Not an analysis step (a failed check holds the weight): counted, not timed.
				other++
				continue
			}
			l.add(stepName, st.Duration)
			l.add(tickName, took)
			l.add(overhead, took-st.Duration)
			probe.sample(&l)
		}
	}
	b.StopTimer()
	if p := os.Getenv("BENCH_LOGS"); p != "" {
		_ = os.WriteFile(p, []byte(f.s.Logs()), 0o644)
	}
	if other > 0 {
		fmt.Printf("\n%d of %d ticks were not one-point weight steps and are left out\n", other, steps)
	}
	report(b, fmt.Sprintf("BenchmarkStep: %d analysis steps of one canary (stepWeight 1), driven by ticks", steps-other), stepName, &l, []criticalPath{
		// The metrics are queried alongside the workload reads, and the status is one patch
		// (Us) from what the step read.
		{name: "step, ideal overlap", measured: stepName, formula: "Rs → R → Gc ∥ R → G ∥ P → U → Rs → R ∥ Us ∥ C"},
		{name: "step, overlapping groups as measured", measured: stepName, formula: "Rs → R → LOAD → OBSERVE ∥ P → ACT → Rs → R ∥ Us ∥ C"},
		{name: "step, every call in sequence", measured: stepName,
			formula: "Rs → R → Gc → R → G → G → Gw → Gw → Gw → Gw → Gw → P → P → Gw → Gw → U → Rs → R → Us → C"},
		{name: "tick, overlapping groups as measured (+ LIST, due reads, release)", measured: tickName,
			formula: "L → R → R → Rs → R → LOAD → OBSERVE ∥ P → ACT → Rs → R ∥ Us ∥ C → Rs → R"},
	})
}
