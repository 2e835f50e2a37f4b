//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/siskin-dev/siskin/test/traffic"
)

// opsTicker delivers PingSource ticks carrying a W3C trace context, each with its own id, and
// remembers them: the test then knows how many ticks Siskin handled and which trace each step
// belongs to.
type opsTicker struct {
	t      *testing.T
	s      *siskin
	prefix string
	sent   map[string]string // event id -> traceparent
	n      int
}

func newOpsTicker(t *testing.T, s *siskin) *opsTicker {
	return &opsTicker{t: t, s: s, prefix: strings.ReplaceAll(t.Name(), "/", "-"), sent: map[string]string{}}
}

func (k *opsTicker) tick() {
	k.t.Helper()
	k.n++
	id := fmt.Sprintf("%s-%d", k.prefix, k.n)
	traceparent := fmt.Sprintf("00-%032x-%016x-01", 0x5155a+k.n, k.n)
	code, body := k.s.post("/", map[string]string{
		"Ce-Specversion": "1.0", "Ce-Id": id, "Ce-Type": "dev.knative.sources.ping",
		"Ce-Source": "/apis/v1/namespaces/siskin-system/pingsources/siskin-tick", "Ce-Traceparent": traceparent,
		"Content-Type": "application/json",
	}, []byte(`{"tick":"advance"}`))
	if code != http.StatusOK {
		k.t.Fatalf("tick %s: %d %s", id, code, body)
	}
	k.sent[id] = traceparent
}

// until ticks once per interval until done holds for what a user sees, or fails after max ticks.
func (k *opsTicker) until(e *env, name string, interval time.Duration, max int, done func(observed) bool) observed {
	k.t.Helper()
	var got observed
	for i := 0; i < max; i++ {
		k.tick()
		got = e.observe(name)
		if done(got) {
			return got
		}
		time.Sleep(interval)
	}
	k.t.Fatalf("after %d ticks %s is at %v", max, name, got)
	return got
}

// opsScrape is one GET /metrics, parsed with Prometheus's own text parser.
type opsScrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, s *siskin) opsScrape {
	t.Helper()
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// series returns the metrics of a family whose labels include want.
func (sc opsScrape) series(name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, m := range sc[name].GetMetric() {
		got := labelsOf(m)
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// value is the value of the single series of a gauge or counter with those labels; absent
// counts as 0 for counters (Prometheus's own convention before the first increment).
func (sc opsScrape) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	ms := sc.series(name, labels)
	if len(ms) == 0 {
		if sc[name] != nil && sc[name].GetType() == dto.MetricType_COUNTER || sc[name] == nil && strings.HasSuffix(name, "_total") {
			return 0
		}
		t.Errorf("%s%v: no such series", name, labels)
		return math.NaN()
	}
	if len(ms) > 1 {
		t.Errorf("%s%v: %d series, want one", name, labels, len(ms))
	}
	switch {
	case ms[0].Gauge != nil:
		return ms[0].GetGauge().GetValue()
	case ms[0].Counter != nil:
		return ms[0].GetCounter().GetValue()
	}
	t.Errorf("%s%v: neither a gauge nor a counter", name, labels)
	return math.NaN()
}

// histogram sums the histograms of a family whose labels include want.
func (sc opsScrape) histogram(name string, labels map[string]string) (count uint64, sum float64, buckets map[float64]uint64) {
	buckets = map[float64]uint64{}
	for _, m := range sc.series(name, labels) {
		h := m.GetHistogram()
		count += h.GetSampleCount()
		sum += h.GetSampleSum()
		for _, b := range h.GetBucket() {
			buckets[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return count, sum, buckets
}

// flaggerMetrics is Flagger's list (the reference on Flagger's Prometheus metrics): name, type and label names.
var flaggerMetrics = []struct {
	name   string
	typ    dto.MetricType
	labels []string
}{
	{"flagger_info", dto.MetricType_GAUGE, []string{"mesh_provider", "version"}},
	{"flagger_canary_total", dto.MetricType_GAUGE, []string{"namespace"}},
	{"flagger_canary_status", dto.MetricType_GAUGE, []string{"name", "namespace"}},
	{"flagger_canary_weight", dto.MetricType_GAUGE, []string{"namespace", "workload"}},
	{"flagger_canary_duration_seconds", dto.MetricType_HISTOGRAM, []string{"name", "namespace"}},
	{"flagger_canary_metric_analysis", dto.MetricType_GAUGE, []string{"metric", "name", "namespace"}},
	{"flagger_canary_successes_total", dto.MetricType_COUNTER, []string{"analysis_status", "deployment_strategy", "name", "namespace"}},
	{"flagger_canary_failures_total", dto.MetricType_COUNTER, []string{"analysis_status", "deployment_strategy", "name", "namespace"}},
}

// checkFlaggerNames checks every present family of Flagger's list for its type and its label
// names (a family with no series yet, such as failures before the first failure, is absent
// from the exposition).
func checkFlaggerNames(t *testing.T, sc opsScrape, mustExist ...string) {
	t.Helper()
	for _, f := range flaggerMetrics {
		fam := sc[f.name]
		if fam == nil {
			if slices.Contains(mustExist, f.name) {
				t.Errorf("%s: missing from /metrics", f.name)
			}
			continue
		}
		if fam.GetType() != f.typ {
			t.Errorf("%s: type %s, want %s", f.name, fam.GetType(), f.typ)
		}
		if f.typ == dto.MetricType_HISTOGRAM && !slices.Equal(bucketBounds(fam), []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, math.Inf(1)}) {
			t.Errorf("%s: buckets %v, want Prometheus's DefBuckets as Flagger", f.name, bucketBounds(fam))
		}
		for _, m := range fam.GetMetric() {
			var names []string
			for n := range labelsOf(m) {
				names = append(names, n)
			}
			sort.Strings(names)
			if !slices.Equal(names, f.labels) {
				t.Errorf("%s: labels %v, want %v", f.name, names, f.labels)
			}
		}
	}
}

func bucketBounds(fam *dto.MetricFamily) []float64 {
	var out []float64
	if len(fam.GetMetric()) == 0 {
		return nil
	}
	for _, b := range fam.GetMetric()[0].GetHistogram().GetBucket() {
		out = append(out, b.GetUpperBound())
	}
	return out
}

// TestOpsMetricsAndLogs runs the seed release to Succeeded and a second one to a manual abort,
// and checks /metrics against Flagger's names, labels and what happened, then Siskin's JSON logs.
func TestOpsMetricsAndLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ops-metrics")
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 2)
	e.apply(seedCanary(t, e.ns, "podinfo", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns, extraArgs: []string{"--log-format", "json"}})
	k := newOpsTicker(t, s)
	key := map[string]string{"name": "podinfo", "namespace": e.ns}
	// Prometheus scrapes Siskin, so that the dashboard's queries run on real series at the end.
	job := "ops-siskin-" + e.ns
	if err := e.lab.AddScrapeTarget(context.Background(), job, strings.TrimPrefix(s.url, "http://")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.lab.RemoveScrapeTarget(context.Background(), job, strings.TrimPrefix(s.url, "http://")) })

	k.until(e, "podinfo", time.Second, 20, func(o observed) bool { return o.Phase == "Initialized" })
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.1.0")
	mid := k.until(e, "podinfo", time.Second, 30, func(o observed) bool { return o.Phase == "Progressing" && o.CanaryWeight >= 15 })

	// Mid-release: Flagger's gauges follow the VirtualService.
	sc := scrapeMetrics(t, s)
	checkFlaggerNames(t, sc, "flagger_info", "flagger_canary_total", "flagger_canary_status", "flagger_canary_weight", "flagger_canary_duration_seconds", "flagger_canary_metric_analysis")
	if got := sc.value(t, "flagger_canary_status", key); got != 0 {
		t.Errorf("flagger_canary_status while Progressing: got %v, want 0", got)
	}
	if got := sc.value(t, "flagger_canary_weight", map[string]string{"workload": "podinfo", "namespace": e.ns}); got != float64(mid.Canary) {
		t.Errorf("flagger_canary_weight{workload=podinfo}: got %v, want the VirtualService's %d", got, mid.Canary)
	}
	if got := sc.value(t, "flagger_canary_weight", map[string]string{"workload": "podinfo-primary", "namespace": e.ns}); got != float64(mid.Primary) {
		t.Errorf("flagger_canary_weight{workload=podinfo-primary}: got %v, want the VirtualService's %d", got, mid.Primary)
	}

	// A step made late on purpose: due after 1 s, run after 3 s.
	time.Sleep(3 * time.Second)
	k.until(e, "podinfo", time.Second, 40, func(o observed) bool { return o.Phase == "Succeeded" })

	// One CloudEvent of a type Siskin ignores, one it refuses.
	if code, _ := s.post("/", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "x", "Ce-Type": "com.example.other", "Ce-Source": "/x",
		"Content-Type": "application/json"}, []byte(`{}`)); code != http.StatusAccepted {
		t.Errorf("unrelated CloudEvent: got %d, want 202", code)
	}
	if code, _ := s.post("/", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "y", "Ce-Type": "dev.siskin.image.pushed.v1", "Ce-Source": "/x",
		"Content-Type": "application/json"}, []byte(`{"repository":"a/b"}`)); code != http.StatusBadRequest {
		t.Errorf("push without tag: got %d, want 400", code)
	}

	sc = scrapeMetrics(t, s)
	checkFlaggerNames(t, sc, "flagger_info", "flagger_canary_total", "flagger_canary_status", "flagger_canary_weight",
		"flagger_canary_duration_seconds", "flagger_canary_metric_analysis", "flagger_canary_successes_total")
	version := strings.TrimSpace(strings.TrimPrefix(opsRun(t, opsRepoRoot(), nil, siskinBinary(t), "version"), "siskin"))
	if got := sc.value(t, "flagger_info", map[string]string{"version": version, "mesh_provider": "istio"}); got != 1 {
		t.Errorf("flagger_info{version=%q,mesh_provider=istio}: got %v, want 1", version, got)
	}
	if got := sc.value(t, "flagger_canary_total", map[string]string{"namespace": e.ns}); got != 1 {
		t.Errorf("flagger_canary_total{namespace=%s}: got %v, want 1", e.ns, got)
	}
	if got := sc.value(t, "flagger_canary_status", key); got != 1 {
		t.Errorf("flagger_canary_status after Succeeded: got %v, want 1", got)
	}
	for workload, want := range map[string]float64{"podinfo-primary": 100, "podinfo": 0} {
		if got := sc.value(t, "flagger_canary_weight", map[string]string{"workload": workload, "namespace": e.ns}); got != want {
			t.Errorf("flagger_canary_weight{workload=%s} after Succeeded: got %v, want %v", workload, got, want)
		}
	}
	// The exporter answers every request without error: the success rate is exactly 100; the
	// duration (P99 of ±20% around 40 ms) is within the seed's 500 ms threshold.
	if got := sc.value(t, "flagger_canary_metric_analysis", map[string]string{"name": "podinfo", "namespace": e.ns, "metric": "request-success-rate"}); got != 100 {
		t.Errorf("flagger_canary_metric_analysis{metric=request-success-rate}: got %v, want 100", got)
	}
	if got := sc.value(t, "flagger_canary_metric_analysis", map[string]string{"name": "podinfo", "namespace": e.ns, "metric": "request-duration"}); got <= 30 || got > 100 {
		t.Errorf("flagger_canary_metric_analysis{metric=request-duration}: got %v ms, want the P99 of ~40 ms requests", got)
	}
	success := map[string]string{"name": "podinfo", "namespace": e.ns, "deployment_strategy": "canary", "analysis_status": "completed"}
	if got := sc.value(t, "flagger_canary_successes_total", success); got != 1 {
		t.Errorf("flagger_canary_successes_total%v: got %v, want 1", success, got)
	}
	if got := sc.value(t, "flagger_canary_failures_total", key); got != 0 {
		t.Errorf("flagger_canary_failures_total: got %v, want 0", got)
	}
	view := s.view(e.ns, "podinfo")
	steps, durSum, _ := sc.histogram("flagger_canary_duration_seconds", key)
	if int64(steps) != view.Steps || durSum <= 0 {
		t.Errorf("flagger_canary_duration_seconds: %d observations (sum %v s), want one per step: %d", steps, durSum, view.Steps)
	}
	siskinSteps, _, _ := sc.histogram("siskin_step_duration_seconds", nil)
	if siskinSteps != steps {
		t.Errorf("siskin_step_duration_seconds: %d observations, want %d, one per step", siskinSteps, steps)
	}
	for _, phase := range []string{"Initialized", "Progressing", "Promoting", "Finalising", "Succeeded"} {
		if n, _, _ := sc.histogram("siskin_step_duration_seconds", map[string]string{"phase": phase}); n == 0 {
			t.Errorf("siskin_step_duration_seconds{phase=%s}: no observation", phase)
		}
		if got := sc.value(t, "siskin_phase_transitions_total", map[string]string{"namespace": e.ns, "phase": phase}); got != 1 {
			t.Errorf("siskin_phase_transitions_total{phase=%s}: got %v, want 1", phase, got)
		}
	}
	late, _, lateBuckets := sc.histogram("siskin_step_lateness_seconds", nil)
	if late == 0 || late > steps || late-lateBuckets[1] < 1 {
		t.Errorf("siskin_step_lateness_seconds: %d observations, %d over 1 s; want at most one per step (%d) and the step delayed by 3 s among them",
			late, late-lateBuckets[1], steps)
	}
	events := map[[2]string]float64{{"tick", "ok"}: float64(k.n), {"cloudevent", "ignored"}: 1, {"cloudevent", "invalid"}: 1}
	for ko, want := range events {
		if got := sc.value(t, "siskin_events_total", map[string]string{"kind": ko[0], "outcome": ko[1]}); got != want {
			t.Errorf("siskin_events_total{kind=%s,outcome=%s}: got %v, want %v", ko[0], ko[1], got, want)
		}
	}
	if n, _, _ := sc.histogram("siskin_event_duration_seconds", map[string]string{"kind": "tick"}); n != uint64(k.n) {
		t.Errorf("siskin_event_duration_seconds{kind=tick}: %d observations, want %d", n, k.n)
	}

	// A second revision, aborted by hand.
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.2.0")
	k.until(e, "podinfo", time.Second, 30, func(o observed) bool { return o.Phase == "Progressing" && o.CanaryWeight > 0 })
	if code, body := s.post("/api/v1/canaries/"+e.ns+"/podinfo/abort?reason=ops-test", nil, nil); code != http.StatusOK {
		t.Fatalf("abort: %d %s", code, body)
	}
	sc = scrapeMetrics(t, s)
	checkFlaggerNames(t, sc, "flagger_canary_failures_total")
	if got := sc.value(t, "flagger_canary_status", key); got != 2 {
		t.Errorf("flagger_canary_status after the abort: got %v, want 2", got)
	}
	failure := map[string]string{"name": "podinfo", "namespace": e.ns, "deployment_strategy": "canary", "analysis_status": "completed"}
	if got := sc.value(t, "flagger_canary_failures_total", failure); got != 1 {
		t.Errorf("flagger_canary_failures_total%v: got %v, want 1", failure, got)
	}
	if got := sc.value(t, "flagger_canary_weight", map[string]string{"workload": "podinfo", "namespace": e.ns}); got != 0 {
		t.Errorf("flagger_canary_weight{workload=podinfo} after the abort: got %v, want 0", got)
	}
	if n, sum, _ := sc.histogram("siskin_abort_latency_seconds", nil); n != 1 || sum <= 0 {
		t.Errorf("siskin_abort_latency_seconds: %d observations (sum %v), want the one abort", n, sum)
	}
	if got := sc.value(t, "siskin_phase_transitions_total", map[string]string{"namespace": e.ns, "phase": "Failed"}); got != 1 {
		t.Errorf("siskin_phase_transitions_total{phase=Failed}: got %v, want 1", got)
	}

	checkStepLogs(t, s.Logs(), e.ns, "podinfo", k.sent)
	checkDashboardQueries(t, e, job)
}

// checkDashboardQueries runs every query of knative/grafana/siskin.json against the lab's
// Prometheus, which has been scraping Siskin: each parses and runs, and the canary panels have
// series for the canary.
func checkDashboardQueries(t *testing.T, e *env, job string) {
	t.Helper()
	raw, err := os.ReadFile(opsRepoRoot() + "/knative/grafana/siskin.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	c, err := promapi.NewClient(promapi.Config{Address: e.lab.PrometheusURL()})
	if err != nil {
		t.Fatal(err)
	}
	api := promv1.NewAPI(c)
	vars := strings.NewReplacer("$namespace", e.ns, "$target", "podinfo", "$__rate_interval", "1m")
	mustHaveData := map[string]bool{"Canary weight": true, "Canary status": true, "Analysis metrics": true, "Step duration p50 / p99": true, "Events by kind and outcome": true}
	queried := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			q := vars.Replace(tg.Expr)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, _, _, err := api.Query(ctx, q, time.Now())
			cancel()
			queried++
			if err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, q, err)
				continue
			}
			if vec, ok := v.(model.Vector); mustHaveData[p.Title] && (!ok || len(vec) == 0) {
				t.Errorf("panel %q: %s: no data after a release scraped by Prometheus (job %s)", p.Title, q, job)
			}
		}
	}
	t.Logf("dashboard: %d queries ran against Prometheus", queried)
}

// checkStepLogs reads Siskin's JSON logs: every step record names the canary, its namespace,
// the tick that caused it and that tick's trace context.
func checkStepLogs(t *testing.T, logs, ns, name string, sent map[string]string) {
	t.Helper()
	steps := 0
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", line)
			continue
		}
		if rec["msg"] != "step" {
			continue
		}
		steps++
		id, _ := rec["eventID"].(string)
		want, ok := sent[id]
		switch {
		case rec["canary"] != ns+"/"+name || rec["namespace"] != ns:
			t.Errorf("step record: canary %v namespace %v, want %s/%s and %s", rec["canary"], rec["namespace"], ns, name, ns)
		case !ok:
			t.Errorf("step record: eventID %q is none of the ticks sent (every step here comes from a tick)", id)
		case rec["traceparent"] != want:
			t.Errorf("step record of %s: traceparent %v, want %s", id, rec["traceparent"], want)
		case rec["eventType"] != "dev.knative.sources.ping":
			t.Errorf("step record of %s: eventType %v", id, rec["eventType"])
		}
	}
	if steps < 10 {
		t.Errorf("%d step records in the logs, want one per step of a release", steps)
	}
}

// TestOpsCanaryTableShowsLiveProgress asks the apiserver for the Table `kubectl get canaries`
// prints, mid-release: the default columns carry what Siskin wrote after the last step.
func TestOpsCanaryTableShowsLiveProgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ops-table")
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "podinfo", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	k := newOpsTicker(t, s)
	k.until(e, "podinfo", time.Second, 20, func(o observed) bool { return o.Phase == "Initialized" })
	checkCanaryTable(t, e, "podinfo")
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.1.0")
	for _, w := range []int64{10, 20} {
		k.until(e, "podinfo", time.Second, 30, func(o observed) bool { return o.Phase == "Progressing" && o.CanaryWeight >= w })
		got := checkCanaryTable(t, e, "podinfo")
		if got["Status"] != "Progressing" || got["Weight"] == "0" {
			t.Errorf("mid-release: got %v, want Progressing with a weight", got)
		}
	}
}

// defaultCanaryColumns are the columns `kubectl get canaries` prints without -o wide.
var defaultCanaryColumns = []string{"Name", "Status", "Weight", "FailedChecks", "Interval", "StepWeight", "MaxWeight", "LastTransitionTime"}

// checkCanaryTable compares the apiserver's Table row with the Canary it describes.
func checkCanaryTable(t *testing.T, e *env, name string) map[string]string {
	t.Helper()
	cfg := e.lab.RESTConfig()
	client, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+"/apis/flagger.app/v1beta1/namespaces/"+e.ns+"/canaries", nil)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET canaries as Table: %s %s", resp.Status, body)
	}
	var table struct {
		Kind    string `json:"kind"`
		Columns []struct {
			Name     string `json:"name"`
			Priority int32  `json:"priority"`
		} `json:"columnDefinitions"`
		Rows []struct {
			Cells []any `json:"cells"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(body, &table); err != nil || table.Kind != "Table" {
		t.Fatalf("not a Table (%v): %s", err, body)
	}
	var shown []string
	for _, c := range table.Columns {
		if c.Priority == 0 {
			shown = append(shown, c.Name)
		}
	}
	if !slices.Equal(shown, defaultCanaryColumns) {
		t.Errorf("default columns: got %v, want %v", shown, defaultCanaryColumns)
	}
	if len(table.Rows) != 1 {
		t.Fatalf("rows: got %d, want 1", len(table.Rows))
	}
	row := map[string]string{}
	for i, c := range table.Columns {
		if i < len(table.Rows[0].Cells) && table.Rows[0].Cells[i] != nil {
			row[c.Name] = fmt.Sprint(table.Rows[0].Cells[i])
		}
	}
	// The live object, read in the same breath: Siskin does not step between the two reads
	// (the test ticks it).
	o := e.observe(name)
	ltt := canaryStatusString(t, e, name, "lastTransitionTime")
	want := map[string]string{"Name": name, "Status": o.Phase, "Weight": fmt.Sprint(o.CanaryWeight), "FailedChecks": fmt.Sprint(o.FailedChecks),
		"Interval": "1s", "StepWeight": "5", "MaxWeight": "50", "LastTransitionTime": ltt}
	for col, w := range want {
		if row[col] != w {
			t.Errorf("column %s: got %q, want %q (the Canary's live value)", col, row[col], w)
		}
	}
	if _, err := time.Parse(time.RFC3339, ltt); err != nil {
		t.Errorf("LastTransitionTime %q: %v", ltt, err)
	}
	return row
}

func canaryStatusString(t *testing.T, e *env, name, field string) string {
	t.Helper()
	cd, err := e.dyn.Resource(canaryGVR).Namespace(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status, _ := cd.Object["status"].(map[string]any)
	v, _ := status[field].(string)
	return v
}

// TestOpsCLI runs the real `siskin` verbs against a running Siskin mid-release.
func TestOpsCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ops-cli")
	ex := startExporter(t, e)
	ex.Set(e.ns, "podinfo", traffic.Behaviour{RPS: 50, LatencyMs: 40})
	e.createDeployment("podinfo", e.lab.Registry()+"/lab/podinfo:1.0.0", 1)
	e.apply(seedCanary(t, e.ns, "podinfo", "1s"))
	s := startSiskin(t, e.lab, siskinOpts{namespace: e.ns})
	k := newOpsTicker(t, s)
	k.until(e, "podinfo", time.Second, 20, func(o observed) bool { return o.Phase == "Initialized" })
	e.setImage("podinfo", e.lab.Registry()+"/lab/podinfo:1.1.0")
	o := k.until(e, "podinfo", time.Second, 30, func(o observed) bool { return o.Phase == "Progressing" && o.CanaryWeight >= 10 })
	ref := e.ns + "/podinfo"
	cli := func(args ...string) string {
		t.Helper()
		return opsRun(t, opsRepoRoot(), []string{"SISKIN_URL=" + s.url, "SISKIN_API_TOKEN=" + apiToken}, siskinBinary(t), args...)
	}

	// status: kubectl's columns, a weight bar, the last message.
	out := cli("status")
	t.Logf("siskin status:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	header := strings.Fields(lines[0])
	for _, col := range []string{"NAMESPACE", "NAME", "STATUS", "WEIGHT", "FAILEDCHECKS", "INTERVAL", "STEPWEIGHT", "MAXWEIGHT", "LASTTRANSITIONTIME"} {
		if !slices.Contains(header, col) {
			t.Errorf("siskin status: no %s column in %q", col, lines[0])
		}
	}
	if len(lines) < 2 {
		t.Fatalf("siskin status: no row:\n%s", out)
	}
	row := strings.Fields(lines[1])
	view := s.view(e.ns, "podinfo")
	if len(row) < 5 || row[0] != e.ns || row[1] != "podinfo" || row[2] != "Progressing" || row[3] != fmt.Sprint(o.CanaryWeight) {
		t.Errorf("siskin status row: got %q, want %s podinfo Progressing %d", lines[1], e.ns, o.CanaryWeight)
	}
	bar := fmt.Sprintf("[%s%s", strings.Repeat("#", int(o.CanaryWeight)*20/100), ".")
	if !strings.Contains(lines[1], bar) {
		t.Errorf("siskin status: no weight bar %q… in %q", bar, lines[1])
	}
	if view.Message != "" && !strings.Contains(out, ref+": "+view.Message) {
		t.Errorf("siskin status: the last message %q is missing:\n%s", view.Message, out)
	}

	// status ns/name --watch redraws until interrupted, then exits cleanly.
	cmd := exec.Command(siskinBinary(t), "status", ref, "--watch")
	cmd.Env = append(cmd.Environ(), "SISKIN_URL="+s.url, "SISKIN_API_TOKEN="+apiToken)
	var watched strings.Builder
	cmd.Stdout, cmd.Stderr = &watched, &watched
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	_ = cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("siskin status --watch after an interrupt: %v\n%s", err, watched.String())
	}
	frames := strings.Split(watched.String(), "\033[H\033[2J")
	if len(frames) < 3 {
		t.Errorf("siskin status --watch: %d frames in 4 s, want a redraw every second:\n%q", len(frames)-1, watched.String())
	}
	for _, f := range frames[1:] {
		if !strings.Contains(f, "podinfo") || !strings.Contains(f, "Progressing") {
			t.Errorf("siskin status --watch frame without the canary: %q", f)
		}
	}

	// events: the canary's Kubernetes events, oldest first.
	out = cli("events", ref)
	t.Logf("siskin events %s:\n%s", ref, out)
	lines = strings.Split(strings.TrimRight(out, "\n"), "\n")
	if !slices.Equal(strings.Fields(lines[0]), []string{"TIME", "TYPE", "COUNT", "MESSAGE"}) {
		t.Errorf("siskin events header: %q", lines[0])
	}
	if !strings.Contains(out, "New revision detected") {
		t.Errorf("siskin events: want Flagger's \"New revision detected\" event:\n%s", out)
	}

	// The manual gates, each checked against the canary afterwards.
	gate := func(verb string, args ...string) {
		t.Helper()
		out := cli(append([]string{verb, ref}, args...)...)
		t.Logf("siskin %s: %s", verb, strings.TrimSpace(out))
		after := e.observe("podinfo")
		want := fmt.Sprintf("%s %s: ", verb, ref)
		if !strings.HasPrefix(out, want) || !strings.Contains(out, "-> "+after.Phase+" (weight "+fmt.Sprint(after.Canary)+")") {
			t.Errorf("siskin %s: got %q, want %q… -> %s (weight %d)", verb, out, want, after.Phase, after.Canary)
		}
	}
	gate("abort", "--reason", "ops test")
	if o := e.observe("podinfo"); o.Phase != "Failed" || o.Primary != 100 {
		t.Errorf("after siskin abort: %v, want Failed with all traffic on the primary", o)
	}
	if !strings.Contains(cli("events", ref), "ops test") {
		t.Error("siskin events: the abort's reason is not among the events")
	}
	gate("resume")
	if o := e.observe("podinfo"); o.Phase != "Progressing" {
		t.Errorf("after siskin resume: %v, want the release restarted (Progressing)", o)
	}
	k.until(e, "podinfo", time.Second, 20, func(o observed) bool { return o.Phase == "Progressing" && o.CanaryWeight >= 5 })
	gate("promote")
	k.until(e, "podinfo", time.Second, 20, func(o observed) bool { return o.Phase == "Succeeded" })

	// A refused gate says why and exits non-zero.
	cmd = exec.Command(siskinBinary(t), "abort", ref)
	cmd.Env = append(cmd.Environ(), "SISKIN_URL="+s.url, "SISKIN_API_TOKEN="+apiToken)
	refused, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "no release to abort") {
		t.Errorf("siskin abort of a finished release: got %v %q, want a refusal", err, refused)
	}
}
