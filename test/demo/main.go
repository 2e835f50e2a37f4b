// Command demo is `make demo`: on a machine with nothing running it starts the lab, runs
// Siskin against it the way Knative would, plays three releases side by side with simulated
// traffic, shows them live, writes a report with pictures, and tears everything down.
//
//	go run ./test/demo          # the full demo (the seed's 10 steps to 50%)
//	go run ./test/demo -short   # what CI runs: fewer steps, the same three endings, asserted
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/siskin-dev/siskin/functions"
	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

type options struct {
	short      bool
	out        string
	docs       string
	interval   time.Duration
	pingEvery  time.Duration
	tickWindow time.Duration
	rps        float64
	// gatewayAPI adds a fourth release, the good version on the Gateway API.
	gatewayAPI bool
}

func main() {
	var o options
	flag.BoolVar(&o.short, "short", false, "a shorter release (maxWeight 20, stepWeight 10), as CI runs it")
	flag.StringVar(&o.out, "out", "demo-out", "folder for the report, the pictures and the logs")
	flag.StringVar(&o.docs, "docs", "", "also copy the picture to DOCS/demo.png (default: the repository's docs/ for the full demo, none with -short)")
	flag.DurationVar(&o.interval, "interval", 2*time.Second, "analysis interval (the seed says 1m)")
	flag.DurationVar(&o.pingEvery, "ping-every", 10*time.Second, "PingSource period, standing for its once a minute")
	flag.DurationVar(&o.tickWindow, "tick-window", 9*time.Second, "SISKIN_TICK_WINDOW: how long one ping keeps stepping releases")
	flag.Float64Var(&o.rps, "rps", 40, "simulated requests per second to each podinfo")
	flag.BoolVar(&o.gatewayAPI, "gateway-api", false, "add a fourth release (d): the good version on the Gateway API (provider gatewayapi:v1, an HTTPRoute)")
	flag.Parse()

	out := newConsole(os.Stdout)
	ctx, cancel := context.WithCancel(context.Background())
	var interrupted atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		interrupted.Store(true)
		// A second Ctrl-C kills the demo at once; the kernel then kills the lab's servers and
		// Siskin (parent-death signal).
		signal.Stop(sigs)
		out.say("%s: stopping everything (press Ctrl-C again to kill at once)", sig)
		cancel()
	}()
	err := run(ctx, o, out)
	cancel()
	switch {
	case interrupted.Load():
		out.say("interrupted: everything was stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
}

// demo is the running story.
type demo struct {
	o          options
	out        *console
	lab        *lab.Lab
	kube       kubernetes.Interface
	siskin     *siskin
	sim        *traffic.Simulator
	scenarios  []*scenario
	byNS       map[string]*scenario
	thresholds map[string]threshold
	maxChecks  int
	maxWeight  int
	stepWeight int
	alertName  string
	stopping   atomic.Bool // the teardown has begun
	started    time.Time
	labTook    time.Duration
	buildTook  time.Duration
}

// run plays the demo; teardown runs whatever happened, in reverse order of setup.
func run(ctx context.Context, o options, out *console) (err error) {
	d := &demo{o: o, out: out, started: time.Now(), maxWeight: 50, stepWeight: 5, alertName: "PodinfoCanaryErrors"}
	if o.short {
		d.maxWeight, d.stepWeight = 20, 10
	}
	root, err := lab.RepoRoot()
	if err != nil {
		return err
	}
	if o.docs == "" && !o.short {
		o.docs = filepath.Join(root, "docs")
		d.o.docs = o.docs
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", o.out, err)
	}
	_ = os.RemoveAll(filepath.Join(o.out, "lab-logs")) // a previous failure's
	var teardown []func()
	defer func() {
		// Runs after a failure and after Ctrl-C too: nothing below depends on ctx.
		d.stopping.Store(true)
		out.heading("Teardown")
		for i := len(teardown) - 1; i >= 0; i-- {
			teardown[i]()
		}
	}()

	out.heading("0. Siskin's binary")
	binDir, err := os.MkdirTemp("", "siskin-demo-bin-")
	if err != nil {
		return err
	}
	teardown = append(teardown, func() { os.RemoveAll(binDir) })
	out.say("  compiling siskin (go build; seconds once Go's build cache is warm) ...")
	t0 := time.Now()
	bin, err := buildSiskin(ctx, root, binDir)
	if err != nil {
		return err
	}
	d.buildTook = time.Since(t0)
	out.say("  compiled in %s", d.buildTook.Round(100*time.Millisecond))

	out.heading("1. The lab: a real Kubernetes control plane, Redis, Prometheus, Alertmanager, a registry")
	out.say("  (the first run on a machine builds the control plane from the Go module proxy: lab-build lines say how long;")
	out.say("   later runs find it cached in ~/.cache/siskin)")
	t0 = time.Now()
	d.lab, err = lab.Start(ctx, lab.Options{Logger: slog.New(labHandler{out: out, up: &atomic.Bool{}})})
	if err != nil {
		return err
	}
	d.labTook = time.Since(t0)
	failed := true
	teardown = append(teardown, func() {
		if failed {
			dst := filepath.Join(o.out, "lab-logs")
			if err := copyDir(filepath.Join(d.lab.Dir(), "logs"), dst); err == nil {
				out.say("  the lab's logs are kept in %s", dst)
			}
		}
		if err := d.lab.Stop(); err != nil {
			out.say("  lab: stop: %v", err)
		}
	})
	out.say("lab ready in %s", d.labTook.Round(100*time.Millisecond))
	for _, w := range d.lab.Warnings() {
		out.say("  lab warning: %s", w)
	}
	d.kube, err = kubernetes.NewForConfig(d.lab.RESTConfig())
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ic, err := istioclient.NewForConfig(d.lab.RESTConfig())
	if err != nil {
		return fmt.Errorf("istio client: %w", err)
	}

	d.scenarios = []*scenario{
		{key: "a", title: "good version", namespace: "demo-good", name: "podinfo", fromTag: "1.0.0", toTag: "1.1.0",
			expect: "promoted: Succeeded", wantPhase: functions.PhaseSucceeded},
		{key: "b", title: "bad version, alert rule", namespace: "demo-alert", name: "podinfo", fromTag: "1.0.0", toTag: "1.1.0-bad",
			alertRule: true, expect: "aborted by the Alertmanager alert: Failed", wantPhase: functions.PhaseFailed},
		{key: "c", title: "bad version, checks only", namespace: "demo-checks", name: "podinfo", fromTag: "1.0.0", toTag: "1.1.0-bad",
			expect: "rolled back by failed metric checks: Failed", wantPhase: functions.PhaseFailed},
	}
	if o.gatewayAPI {
		d.scenarios = append(d.scenarios, &scenario{key: "d", title: "good version, Gateway API", namespace: "demo-gateway", name: "podinfo",
			fromTag: "1.0.0", toTag: "1.1.0", gatewayAPI: true, expect: "promoted on an HTTPRoute: Succeeded", wantPhase: functions.PhaseSucceeded})
	}
	d.byNS = map[string]*scenario{}
	var namespaces []string
	for _, s := range d.scenarios {
		d.byNS[s.namespace] = s
		namespaces = append(namespaces, s.namespace)
	}

	out.heading("2. Traffic: a simulated Istio data plane")
	simOpts := traffic.SimulatorOptions{Namespaces: namespaces, RPS: o.rps}
	if o.gatewayAPI {
		if simOpts.GatewayAPI, err = gatewayclient.NewForConfig(d.lab.RESTConfig()); err != nil {
			return fmt.Errorf("gateway api client: %w", err)
		}
	}
	d.sim, err = traffic.NewSimulator(d.kube, ic, simOpts)
	if err != nil {
		return err
	}
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	var simWG sync.WaitGroup
	simWG.Go(func() { d.sim.Run(simCtx) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopSim()
		return err
	}
	srv := &http.Server{Handler: d.sim.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	teardown = append(teardown, func() {
		_ = srv.Close()
		stopSim()
		simWG.Wait()
		out.say("  traffic simulator: stopped")
	})
	// Prometheus picks the target up within seconds; Siskin builds meanwhile.
	scraped := make(chan error, 1)
	go func() { scraped <- d.lab.AddScrapeTarget(ctx, "istio-sidecars", ln.Addr().String()) }()
	out.say("  %.0f requests/s to each podinfo, split as its live VirtualService says (read every 500 ms)", o.rps)
	out.say("  each version answers by its image tag: \"bad\" fails 30%% with 500, \"slow\" takes 800 ms, others 0.2%% errors and ~40 ms")
	out.say("  istio_requests_total and istio_request_duration_milliseconds exported with Istio's labels; Prometheus scrapes them every second")

	out.heading("3. Siskin: `siskin serve`, stateless, with the restricted identity of knative/rbac.yaml")
	token, apiToken := randomToken(), randomToken()
	d.siskin, err = startSiskin(ctx, siskinConfig{bin: bin, lab: d.lab, token: token, apiToken: apiToken, minInterval: time.Second,
		tickWindow: o.tickWindow, logPath: filepath.Join(o.out, "siskin.log")})
	if err != nil {
		return err
	}
	teardown = append(teardown, func() {
		if err := d.siskin.stop(); err != nil {
			out.say("  siskin: %v", err)
		} else {
			out.say("  siskin: stopped, its process group is gone")
		}
	})
	out.say("  siskin listens on %s (log: %s)", d.siskin.url, filepath.Join(o.out, "siskin.log"))
	// localhost: browsers keep the dashboard's Secure session cookie there over plain HTTP.
	out.say("  dashboard: %s/ui/  (log in with the API token %s; the releases below show there live)",
		strings.Replace(d.siskin.url, "127.0.0.1", "localhost", 1), apiToken)
	out.say("  SISKIN_MIN_INTERVAL=1s lets the demo shorten the analysis interval below Flagger's 10 s floor")
	if err := d.lab.SetAlertWebhook(ctx, d.siskin.url+"/webhooks/alertmanager", token); err != nil {
		return err
	}
	out.say("  Alertmanager's webhook receiver  -> %s/webhooks/alertmanager (bearer token)", d.siskin.url)
	// A push releases only in the namespaces its webhook URL names.
	var scope []string
	for _, s := range d.scenarios {
		scope = append(scope, "namespace="+s.namespace)
	}
	notify := "/webhooks/registry?" + strings.Join(scope, "&")
	if err := d.lab.SetRegistryNotify(ctx, d.siskin.url+notify, token); err != nil {
		return err
	}
	out.say("  the registry's notifications     -> %s%s (bearer token)", d.siskin.url, notify)
	// In a cluster, Knative's ApiServerSources send Siskin the object events; the lab's
	// stand-in watches the same resources and POSTs the same CloudEvents.
	src, err := d.lab.StartAPIServerSource(ctx, lab.APIServerSourceOptions{Sink: d.siskin.url + "/", Token: token})
	if err != nil {
		return fmt.Errorf("start the ApiServerSource stand-in: %w", err)
	}
	teardown = append(teardown, func() {
		src.Stop()
		ok, failed := src.Delivered()
		out.say("  ApiServerSource stand-in: stopped after %d events delivered (%d refused)", ok, failed)
	})
	out.say("  object events (Canaries, Deployments, routes, Services, configs) -> %s/ as ApiServerSource's CloudEvents (test/lab stand-in)", d.siskin.url)

	out.heading("4. Three podinfo workloads, each with the seed Canary (knative/testdata/canary-seed.yaml)")
	if err := <-scraped; err != nil {
		return err
	}
	out.say("  Prometheus scrapes the simulated sidecars (job istio-sidecars)")
	seed, err := os.ReadFile(filepath.Join(root, "knative", "testdata", "canary-seed.yaml"))
	if err != nil {
		return fmt.Errorf("read the seed canary: %w", err)
	}
	out.say("  analysis interval shortened from 1m to %s so the demo stays short", o.interval)
	if o.short {
		out.say("  -short: maxWeight 50 -> %d and stepWeight 5 -> %d (fewer steps); threshold and metric checks as in the seed", d.maxWeight, d.stepWeight)
	} else {
		out.say("  maxWeight 50, stepWeight 5, threshold 5, success rate >= 99%%, p99 <= 500 ms: as in the seed")
	}
	out.say("  a ping every %s stands for the PingSource's once a minute; each keeps stepping due releases for %s (SISKIN_TICK_WINDOW)", o.pingEvery, o.tickWindow)
	var manifests = map[string][]byte{}
	for _, s := range d.scenarios {
		m, err := canaryManifest(seed, s.namespace, s.name, o.interval.String(), d.maxWeight, d.stepWeight)
		if err != nil {
			return err
		}
		if s.gatewayAPI {
			if m, err = onGatewayAPI(m); err != nil {
				return err
			}
			out.say("  (d) the same Canary with provider gatewayapi:v1 and a gatewayRef: an HTTPRoute, no VirtualService or DestinationRule; the built-in checks are Flagger's HTTP observer queries")
		}
		manifests[s.namespace] = m
	}
	d.thresholds, d.maxChecks, err = thresholds(manifests[d.scenarios[0].namespace])
	if err != nil {
		return err
	}
	apply := func(ctx context.Context, m []byte) error { _, err := d.lab.Apply(ctx, m); return err }
	if err := forEach(d.scenarios, func(s *scenario) error {
		if err := s.setUp(ctx, d.kube, apply, d.lab.Registry(), manifests[s.namespace]); err != nil {
			return err
		}
		out.say("  %-30s %s/%s runs %s, 2 replicas; Canary applied", s.label(), s.namespace, s.name, s.image(d.lab.Registry(), s.fromTag))
		return nil
	}); err != nil {
		return err
	}

	go func() {
		for l := range d.siskin.lines {
			d.onLog(ctx, l)
		}
	}()
	pingCtx, stopPings := context.WithCancel(ctx)
	pings := pinger(pingCtx, d.siskin, o.pingEvery, o.tickWindow, out)
	teardown = append(teardown, func() {
		stopPings()
		pings.Wait()
		out.say("  pings: stopped")
	})
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampling sync.WaitGroup
	sampling.Go(func() { d.sample(sampleCtx) })
	teardown = append(teardown, func() { stopSampling(); sampling.Wait() })

	out.say("  waiting for Siskin to initialise the canaries (primary Deployment, Services, VirtualService) ...")
	if err := forEach(d.scenarios, func(s *scenario) error {
		_, err := s.waitPhase(ctx, d.siskin, 2*time.Minute, functions.PhaseInitialized)
		return err
	}); err != nil {
		return err
	}
	out.say("  all three Initialized: 100%% of the traffic on podinfo-primary")

	alertRule := d.alertRule(d.byNS["demo-alert"])
	if err := d.lab.AddAlertRule(ctx, alertRule); err != nil {
		return err
	}
	out.say("  (b) only: Prometheus alert rule %s loaded:", d.alertName)
	for _, line := range strings.Split(strings.TrimSpace(alertRule), "\n") {
		out.say("      %s", line)
	}
	// A few seconds of steady traffic, so the pictures show the versions before the push.
	if err := sleep(ctx, 4*time.Second); err != nil {
		return err
	}

	out.heading("5. Three releases, side by side: each starts with `docker push` to the real registry")
	var watchers sync.WaitGroup
	watchCtx, stopWatching := context.WithCancel(ctx)
	watchers.Go(func() { d.statusBlocks(watchCtx, 5*time.Second) })
	watchers.Go(func() { d.watchAlerts(watchCtx) })
	results := make([]functions.CanaryView, len(d.scenarios))
	playErr := forEachIndexed(d.scenarios, func(i int, s *scenario) error {
		ref := s.image(d.lab.Registry(), s.toTag)
		digest, err := pushImage(ctx, ref)
		if err != nil {
			return err
		}
		now := time.Now()
		s.mu.Lock()
		s.pushedAt = now
		s.mu.Unlock()
		s.addMark(now, "push", "push "+s.toTag)
		out.say("%-30s pushed %s (%s)", s.label(), ref, digest[:19])
		v, err := s.waitPhase(ctx, d.siskin, 5*time.Minute, functions.PhaseSucceeded, functions.PhaseFailed)
		results[i] = v
		if err != nil {
			return err
		}
		out.say("%-30s ended %s: %s", s.label(), v.Phase, v.Message)
		return nil
	})
	// A few seconds more, so the pictures show where the traffic went after the end.
	if playErr == nil {
		playErr = sleep(ctx, 4*time.Second)
	}
	stopWatching()
	watchers.Wait()
	stopPings()
	if playErr != nil {
		return playErr
	}

	out.heading("6. Results")
	var problems []error
	for i, s := range d.scenarios {
		if err := s.verify(ctx, d.kube, results[i]); err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", s.label(), err))
		}
	}
	rows := d.summary()
	out.block(rows)
	report, png, err := d.writeReport(rows, problems)
	if err != nil {
		problems = append(problems, err)
	} else {
		out.say("  report:  %s", report)
		out.say("  picture: %s", png)
		if o.docs != "" {
			dst := filepath.Join(o.docs, "demo.png")
			if err := copyFile(png, dst); err != nil {
				problems = append(problems, err)
			} else {
				out.say("  picture copied to %s for the README", dst)
			}
		}
	}
	out.say("demo took %s in all (lab %s, siskin build %s)", time.Since(d.started).Round(time.Second),
		d.labTook.Round(100*time.Millisecond), d.buildTook.Round(100*time.Millisecond))
	if len(problems) > 0 {
		return errors.Join(problems...)
	}
	failed = false
	return nil
}

func (d *demo) alertRule(s *scenario) string {
	sel := fmt.Sprintf(`reporter="destination",destination_workload_namespace=%q,destination_workload=%q`, s.namespace, s.name)
	return fmt.Sprintf(`alert: %s
expr: |
  sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{%s,response_code=~"5.."}[10s]))
    / sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{%s}[10s])) > 0.05
for: 0s
labels:
  namespace: %s
  canary: %s
  severity: critical
annotations:
  summary: more than 5%% of the canary's requests fail
`, d.alertName, sel, sel, s.namespace, s.name)
}

func forEach(ss []*scenario, f func(*scenario) error) error {
	return forEachIndexed(ss, func(_ int, s *scenario) error { return f(s) })
}

// forEachIndexed runs f for every scenario at once and joins the errors.
func forEachIndexed(ss []*scenario, f func(int, *scenario) error) error {
	errs := make([]error, len(ss))
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Go(func() { errs[i] = f(i, s) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func randomToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}
