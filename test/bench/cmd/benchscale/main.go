// Command benchscale is `make bench-scale`: Siskin beside real Flagger on one lab, a fleet of
// N canaries of the seed's shape at a 10 s interval, one system after the other, never
// together. It prints one side-by-side table per N and writes the tables, the request
// breakdowns and a plot of the weight steps to -out (scale.md, scale-n<N>.png).
//
// Measurement, per system and N, on a fresh lab:
//
//   - the N target Deployments exist and are available, and every one of them gets healthy
//     traffic from the simulator's exporter (test/traffic) before the system starts;
//   - the system talks to the apiserver through a counting proxy (proxy.go), so every one of
//     its requests is counted and nothing else is;
//   - initialized: from the first Canary created (all N at once, 32 in parallel) until all N
//     report phase Initialized, from a watch of the Canaries;
//   - idle: the requests in a window (-idle, 60 s) after that, by the second;
//   - release: every target's image changed at once (64 in parallel), until all N are
//     Succeeded (or -release-timeout); requests per step are the requests in that time over
//     the weight changes a watch of the VirtualServices saw in it; the step gap is the time
//     between two weight increases of one canary (5→10 … 45→50);
//   - CPU seconds (user + system) and RSS from /proc of the system's process(es).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/siskin-dev/siskin/test/lab"
	"github.com/siskin-dev/siskin/test/traffic"
)

type config struct {
	sizes          []int
	systems        []string
	instances      []int // Siskin runs, one per entry: that many `siskin serve` processes
	out            string
	idle           time.Duration
	initTimeout    time.Duration
	releaseTimeout time.Duration
	rps            float64
	flaggerBin     string
	siskinBin      string
	root           string
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-scale:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("bench-scale failed", "err", err)
		os.Exit(1)
	}
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench-scale", flag.ContinueOnError)
	sizes := fs.String("n", getenv("BENCH_N", "100,500,1250"), "fleet sizes, comma-separated (env BENCH_N)")
	systems := fs.String("systems", getenv("BENCH_SYSTEMS", "flagger,siskin"), "systems to run, in this order (env BENCH_SYSTEMS)")
	instances := fs.String("instances", getenv("BENCH_INSTANCES", "1"), "Siskin runs, comma-separated: the number of `siskin serve` processes behind one balancer in each (env BENCH_INSTANCES; 1,3 runs Siskin twice)")
	fs.StringVar(&c.out, "out", getenv("BENCH_OUT", "bench-out"), "folder for scale.md, the plots and the logs (env BENCH_OUT)")
	fs.DurationVar(&c.idle, "idle", 60*time.Second, "idle window after all are Initialized")
	fs.DurationVar(&c.initTimeout, "init-timeout", 10*time.Minute, "longest wait for all Initialized")
	relDef, err := time.ParseDuration(getenv("BENCH_RELEASE_TIMEOUT", "15m"))
	if err != nil {
		return c, fmt.Errorf("BENCH_RELEASE_TIMEOUT: %w", err)
	}
	fs.DurationVar(&c.releaseTimeout, "release-timeout", relDef, "longest wait for all Succeeded after the image change (env BENCH_RELEASE_TIMEOUT)")
	fs.Float64Var(&c.rps, "rps", 5, "simulated requests a second to each target")
	fs.StringVar(&c.flaggerBin, "flagger", os.Getenv("FLAGGER_BIN"), "Flagger binary (env FLAGGER_BIN; empty: test/bench/build-flagger.sh builds or finds it)")
	fs.StringVar(&c.siskinBin, "siskin", os.Getenv("SISKIN_BIN"), "Siskin binary (env SISKIN_BIN; empty: built from this checkout)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.sizes, err = positiveList("n", *sizes); err != nil {
		return c, err
	}
	if c.instances, err = positiveList("instances", *instances); err != nil {
		return c, err
	}
	for _, s := range strings.Split(*systems, ",") {
		s = strings.ToLower(strings.TrimSpace(s))
		if s != "flagger" && s != "siskin" {
			return c, fmt.Errorf("-systems: %q is neither flagger nor siskin", s)
		}
		c.systems = append(c.systems, s)
	}
	return c, nil
}

// positiveList parses a flag's comma-separated positive numbers, in their order.
func positiveList(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-%s %q: want positive numbers, comma-separated", flagName, s)
		}
		out = append(out, n)
	}
	return out, nil
}

// runSpec is one measurement on a lab: a system and, for Siskin, its number of processes.
type runSpec struct {
	system    string // flagger or siskin
	instances int    // 0 for Flagger
}

// runsOf is the measurements on each lab, in order: each system as listed, Siskin once per
// entry of instances.
func runsOf(systems []string, instances []int) []runSpec {
	var out []runSpec
	for _, s := range systems {
		if s != "siskin" {
			out = append(out, runSpec{system: s})
			continue
		}
		for _, k := range instances {
			out = append(out, runSpec{system: s, instances: k})
		}
	}
	return out
}

// label names a run's namespace and folder: fleet-siskin and n100-siskin for one instance, as
// always, siskin-x3 for three.
func (rs runSpec) label() string {
	if rs.system == "siskin" && rs.instances != 1 {
		return fmt.Sprintf("%s-x%d", rs.system, rs.instances)
	}
	return rs.system
}

func run(ctx context.Context, cfg config, log *slog.Logger) error {
	var err error
	if cfg.root, err = lab.RepoRoot(); err != nil {
		return err
	}
	if cfg.out, err = filepath.Abs(cfg.out); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", cfg.out, err)
	}
	for _, s := range cfg.systems {
		switch {
		case s == "flagger" && cfg.flaggerBin == "":
			if cfg.flaggerBin, err = buildFlagger(ctx, cfg.root); err != nil {
				return err
			}
		case s == "siskin" && cfg.siskinBin == "":
			if cfg.siskinBin, err = buildSiskin(ctx, cfg.root, cfg.out); err != nil {
				return err
			}
		}
	}
	report := &report{started: time.Now()}
	for _, n := range cfg.sizes {
		results, err := measureSize(ctx, cfg, n, log, func(rs []*result) error { return report.set(n, rs).write(cfg.out) })
		if err != nil {
			return fmt.Errorf("N=%d: %w", n, err)
		}
		fmt.Println(report.set(n, results).table(n))
		if err := plotSteps(filepath.Join(cfg.out, fmt.Sprintf("scale-n%d.png", n)), n, results); err != nil {
			return err
		}
	}
	log.Info("written", "report", filepath.Join(cfg.out, "scale.md"))
	return nil
}

// measureSize runs each system on one fresh lab for fleet size n, one after the other; done
// receives the results so far after each system.
func measureSize(ctx context.Context, cfg config, n int, log *slog.Logger, done func([]*result) error) ([]*result, error) {
	l, err := lab.Start(ctx, lab.Options{RepoRoot: cfg.root, Logger: log.With("component", "lab"), KeepDir: true,
		Dir: filepath.Join(cfg.out, fmt.Sprintf("lab-n%d", n))})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := l.Stop(); err != nil {
			log.Warn("lab stop", "err", err)
		}
	}()
	var results []*result
	for _, rs := range runsOf(cfg.systems, cfg.instances) {
		if err := claimMachine(ctx, log); err != nil {
			return nil, err
		}
		watch := watchNeighbours(ctx, l)
		r, err := measureSystem(ctx, cfg, l, rs, n, log.With("system", rs.label(), "n", n))
		os.Remove(benchRunning)
		if err != nil {
			watch()
			return nil, fmt.Errorf("%s: %w", rs.label(), err)
		}
		r.disturbed = watch()
		results = append(results, r)
		if err := done(results); err != nil {
			return nil, err
		}
	}
	return results, nil
}

// neighbours is what else ran on the machine during a measurement.
type neighbours struct {
	otherLab time.Duration // how long another lab's kube-apiserver ran beside this one
	maxLoad  float64       // the highest 1-minute load average seen
}

// watchNeighbours samples, every 2 s until the returned function is called, whether another
// lab's kube-apiserver runs beside this one (another engineer's tests on the same cores) and
// the load average.
func watchNeighbours(ctx context.Context, l *lab.Lab) func() neighbours {
	ctx, cancel := context.WithCancel(ctx)
	own := l.PIDs()["kube-apiserver"]
	var nb neighbours
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
			if otherAPIServer(own) {
				nb.otherLab += 2 * time.Second
			}
			if b, err := os.ReadFile("/proc/loadavg"); err == nil {
				if f := strings.Fields(string(b)); len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						nb.maxLoad = max(nb.maxLoad, v)
					}
				}
			}
		}
	}()
	return func() neighbours { cancel(); <-finished; return nb }
}

func otherAPIServer(own int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == own {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == "kube-apiserver" {
			return true
		}
	}
	return false
}

// benchRunning tells the other engineers' heavy tests that a measurement runs; e2eRunning is
// theirs, and a measurement waits until it is gone, and until another live benchmark's
// benchRunning is gone too.
const (
	benchRunning = "/tmp/bench-running"
	e2eRunning   = "/tmp/e2e-running"
)

func claimMachine(ctx context.Context, log *slog.Logger) error {
	for said := false; ; {
		_, err := os.Stat(e2eRunning)
		if errors.Is(err, os.ErrNotExist) && !otherBenchRunning() {
			break
		}
		if !said {
			log.Info("waiting for " + e2eRunning + " and another benchmark's " + benchRunning + " to disappear before measuring")
			said = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
	return os.WriteFile(benchRunning, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
}

// otherBenchRunning is whether benchRunning names a live process other than this one.
func otherBenchRunning() bool {
	b, err := os.ReadFile(benchRunning)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// measureSystem is one system's whole run on fleet size n.
func measureSystem(ctx context.Context, cfg config, l *lab.Lab, spec runSpec, n int, log *slog.Logger) (*result, error) {
	sys := spec.system
	ns := "fleet-" + spec.label()
	dir := filepath.Join(cfg.out, fmt.Sprintf("n%d-%s", n, spec.label()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := newFleet(l, cfg.root, ns, n, log)
	if err != nil {
		return nil, err
	}
	log.Info("creating the targets")
	if err := f.createTargets(ctx); err != nil {
		return nil, err
	}
	defer func() {
		log.Info("deleting the fleet")
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 6*time.Minute)
		defer cancel()
		if err := f.deleteNamespace(dctx, 5*time.Minute); err != nil {
			log.Warn("fleet not deleted", "err", err)
		}
	}()
	stopTraffic, err := serveTraffic(ctx, l, ns, f, cfg.rps)
	if err != nil {
		return nil, err
	}
	defer stopTraffic()

	identity := l.RESTConfig() // Flagger runs with cluster-admin, as its chart's ClusterRole
	if sys == "siskin" {
		identity = l.SiskinRESTConfig() // the restricted identity of knative/rbac.yaml
	}
	proxy, err := startCountingProxy(identity, dir, sys, log)
	if err != nil {
		return nil, err
	}
	defer proxy.close()
	tr := f.track(ctx)
	defer tr.stop()

	var s system
	switch sys {
	case "flagger":
		s, err = startFlagger(ctx, cfg.flaggerBin, dir, proxy.kubeconfig, ns, l)
	case "siskin":
		s, err = startSiskin(ctx, cfg.siskinBin, dir, proxy.kubeconfig, ns, l, spec.instances, log)
	}
	if err != nil {
		return nil, err
	}
	defer s.stop()
	r := &result{system: s.name(), n: n}
	if sys == "siskin" {
		r.instances = len(s.procs())
	}
	time.Sleep(3 * time.Second) // its informers are synced before the clock starts

	log.Info("creating the canaries")
	start := time.Now()
	if err := f.createCanaries(ctx); err != nil {
		return nil, err
	}
	r.applyCanaries = time.Since(start)
	r.initialized, r.initializedCount = waitPhase(ctx, tr, "Initialized", n, start, cfg.initTimeout, log)
	if r.initializedCount < n {
		log.Warn("not all Initialized", "initialized", r.initializedCount, "phases", tr.phaseCounts())
	}

	log.Info("idle", "window", cfg.idle)
	c0, u0 := proxy.counts(), usageOf(s)
	if !sleep(ctx, cfg.idle) {
		return nil, ctx.Err()
	}
	c1, u1 := proxy.counts(), usageOf(s)
	idle := c1.sub(c0)
	r.idleRequests, r.idleWindow, r.idleByVerb, r.idleByRes = idle.total, cfg.idle, idle.byVerb, idle.byResource
	r.idleCPU = u1.cpu - u0.cpu

	log.Info("changing every target's image")
	relStart := time.Now()
	if err := f.setImages(ctx); err != nil {
		return nil, err
	}
	r.applyImages = time.Since(relStart)
	r.released, r.succeededCount = waitPhase(ctx, tr, "Succeeded", n, relStart, cfg.releaseTimeout, log)
	c2, u2 := proxy.counts(), usageOf(s)
	rel := c2.sub(c1)
	r.releaseRequests, r.releaseByVerb, r.releaseByRes = rel.total, rel.byVerb, rel.byResource
	r.releaseCPU = u2.cpu - u1.cpu
	r.totalCPU, r.rssPeak, r.rssEnd, r.rssMaxPeak = u2.cpu, u2.peak, u2.rss, u2.maxPeak
	r.phasesAtEnd = tr.phaseCounts()
	if ss, ok := s.(*siskinSystem); ok {
		r.served = ss.served()
	}
	for _, p := range s.procs() {
		if p.exited() {
			r.exited++
			log.Warn("a process exited during the run", "log", p.log.Name())
		}
	}
	r.changes = tr.changesSince(relStart)
	r.relStart = relStart
	r.summarise()
	log.Info("done", "initialized", r.initialized, "released", r.released, "succeeded", r.succeededCount)
	return r, nil
}

// waitPhase waits until want Canaries are in phase, and returns how long it took from start
// and how many were there when it stopped waiting.
func waitPhase(ctx context.Context, tr *tracker, phase string, want int, start time.Time, timeout time.Duration, log *slog.Logger) (time.Duration, int) {
	deadline := start.Add(timeout)
	lastLog := time.Now()
	for {
		got := tr.count(phase)
		if got >= want {
			return time.Since(start), got
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Since(start), got
		}
		if time.Since(lastLog) > 30*time.Second {
			log.Info("waiting", "phase", phase, "got", got, "want", want, "phases", tr.phaseCounts())
			lastLog = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// usageOf is /proc's figures of the system's processes, summed (see sumUsage); a process that
// has exited counts no more.
func usageOf(s system) usage {
	var us []usage
	for _, p := range s.procs() {
		if u, err := p.usage(); err == nil {
			us = append(us, u)
		}
	}
	return sumUsage(us)
}

// sumUsage is the system's footprint: CPU seconds, RSS and peak RSS summed over its processes
// (the sum of the peaks, which is at least the peak of the sum), and the largest one process's
// peak in maxPeak.
func sumUsage(us []usage) usage {
	var total usage
	for _, u := range us {
		total.cpu += u.cpu
		total.rss += u.rss
		total.peak += u.peak
		total.maxPeak = max(total.maxPeak, u.peak)
	}
	return total
}

// serveTraffic gives every target healthy traffic: the simulator's exporter reports, under
// Istio's names and labels, rps requests a second to each target (0.0 % errors, about 40 ms),
// and Prometheus scrapes it every second.
func serveTraffic(ctx context.Context, l *lab.Lab, ns string, f *fleet, rps float64) (func(), error) {
	ex := traffic.NewExporter(0)
	for i := range f.n {
		ex.Set(ns, f.name(i), traffic.Behaviour{RPS: rps, LatencyMs: 40})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ex.Close()
		return nil, fmt.Errorf("traffic: listen: %w", err)
	}
	srv := &http.Server{Handler: ex.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	job := "bench-" + ns
	if err := l.AddScrapeTarget(ctx, job, ln.Addr().String()); err != nil {
		_ = srv.Close()
		ex.Close()
		return nil, fmt.Errorf("traffic: %w", err)
	}
	return func() {
		_ = l.RemoveScrapeTarget(context.WithoutCancel(ctx), job, ln.Addr().String())
		_ = srv.Close()
		ex.Close()
	}, nil
}

func buildFlagger(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "test", "bench", "build-flagger.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build flagger: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func buildSiskin(ctx context.Context, root, out string) (string, error) {
	bin := filepath.Join(out, "siskin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build siskin: %w\n%s", err, b)
	}
	return bin, nil
}
