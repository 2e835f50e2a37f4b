package analysis

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// Canned Prometheus answers.
const (
	emptyVector = `{"status":"success","data":{"resultType":"vector","result":[]}}`
	nanVector   = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"NaN"]}]}}`
	twoSamples  = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"a"},"value":[1700000000,"1"]},{"metric":{"pod":"b"},"value":[1700000000,"2"]}]}}`
	matrix      = `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"],[1700000060,"2"]]}]}}`
	emptyMatrix = `{"status":"success","data":{"resultType":"matrix","result":[]}}`
	scalar      = `{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}`
	badData     = `{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}`
)

func vector(v string) string {
	return `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"` + v + `"]}]}}`
}

// promRequest is what the fake Prometheus saw.
type promRequest struct {
	Path   string
	Query  string
	Header http.Header
}

// fakeProm answers /api/v1/query from a table keyed by the (URL-decoded) query. An unknown
// query gets an error answer, so a wrong rendering fails the test.
type fakeProm struct {
	*httptest.Server
	mu       sync.Mutex
	answers  map[string]string
	status   map[string]int
	delay    time.Duration
	requests []promRequest
}

func newFakeProm(t *testing.T, answers map[string]string) *fakeProm {
	t.Helper()
	f := &fakeProm{answers: answers, status: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeProm) serve(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form.Get("query")
	f.mu.Lock()
	f.requests = append(f.requests, promRequest{Path: r.URL.Path, Query: q, Header: r.Header.Clone()})
	answer, ok := f.answers[q]
	status := f.status[q]
	delay := f.delay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"status":"error","errorType":"bad_data","error":"unexpected query %q"}`, q)
		return
	}
	if status != 0 {
		w.WriteHeader(status)
	}
	fmt.Fprint(w, answer)
}

func (f *fakeProm) Requests() []promRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]promRequest(nil), f.requests...)
}

func newTestAnalyzer(t *testing.T, cfg AnalyzerConfig) *Analyzer {
	t.Helper()
	log, _ := newTestLogger()
	a, err := NewAnalyzer(cfg, log)
	if err != nil {
		t.Fatalf("NewAnalyzer() error = %v", err)
	}
	return a
}

func TestQueryMetricsBuiltins(t *testing.T) {
	prom := newFakeProm(t, map[string]string{
		wantSuccessRate1m: vector("99.5"),
		wantDuration30s:   vector("123.4"),
	})
	a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL})

	got := a.QueryMetrics(context.Background(), seedCanary())

	want := []functions.MetricResult{
		{Name: "request-success-rate", Value: 99.5},
		{Name: "request-duration", Value: 123.4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("QueryMetrics() mismatch (-want +got):\n%s", diff)
	}
	reqs := prom.Requests()
	if len(reqs) != 2 {
		t.Fatalf("Prometheus got %d requests, want 2", len(reqs))
	}
	for _, r := range reqs {
		if r.Path != "/api/v1/query" {
			t.Errorf("request path = %q, want /api/v1/query", r.Path)
		}
	}
}

func TestQueryMetricsValues(t *testing.T) {
	const q = "sum(rate(http_requests_total[1m]))"
	tests := []struct {
		name   string
		answer string
		status int
		want   functions.MetricResult
		errHas string
	}{
		{"value", vector("0.25"), 0, functions.MetricResult{Value: 0.25}, ""},
		{"zero is a value", vector("0"), 0, functions.MetricResult{Value: 0}, ""},
		{"empty result is no data", emptyVector, 0, functions.MetricResult{NoData: true}, ""},
		{"NaN is no data", nanVector, 0, functions.MetricResult{NoData: true}, ""},
		{"last sample of several", twoSamples, 0, functions.MetricResult{Value: 2}, ""},
		{"scalar", scalar, 0, functions.MetricResult{Value: 42}, ""},
		{"matrix is an error", matrix, 0, functions.MetricResult{}, "range vector"},
		{"empty matrix is no data", emptyMatrix, 0, functions.MetricResult{NoData: true}, ""},
		{"prometheus error", badData, http.StatusBadRequest, functions.MetricResult{}, "parse error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := newFakeProm(t, map[string]string{q: tt.answer})
			prom.status[q] = tt.status
			a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL})
			c := seedCanary()
			c.Spec.Analysis.Metrics = []functions.Metric{{Name: "rps", Query: q}}

			got := a.QueryMetrics(context.Background(), c)

			if len(got) != 1 {
				t.Fatalf("QueryMetrics() returned %d results, want 1", len(got))
			}
			if tt.errHas != "" {
				if !strings.Contains(got[0].Err, tt.errHas) {
					t.Errorf("Err = %q, want it to contain %q", got[0].Err, tt.errHas)
				}
				return
			}
			tt.want.Name = "rps"
			if diff := cmp.Diff(tt.want, got[0]); diff != "" {
				t.Errorf("QueryMetrics() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQueryMetricsInlineQueryWhitespace(t *testing.T) {
	prom := newFakeProm(t, map[string]string{" sum(rate(x[1m])) > 0 ": vector("1")})
	a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL})
	c := seedCanary()
	c.Spec.Analysis.Metrics = []functions.Metric{{Name: "q", Query: "\n  sum(rate(x[1m]))\n\t> 0\n"}}

	got := a.QueryMetrics(context.Background(), c)

	if diff := cmp.Diff([]functions.MetricResult{{Name: "q", Value: 1}}, got); diff != "" {
		t.Errorf("QueryMetrics() mismatch (-want +got):\n%s", diff)
	}
}

func TestQueryMetricsFailures(t *testing.T) {
	t.Run("unreachable prometheus", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: dead.URL})
		got := a.QueryMetrics(context.Background(), seedCanary())
		for _, r := range got {
			if !strings.Contains(r.Err, "connection refused") {
				t.Errorf("%s: Err = %q, want a connection error", r.Name, r.Err)
			}
		}
	})
	t.Run("query timeout", func(t *testing.T) {
		prom := newFakeProm(t, map[string]string{wantSuccessRate1m: vector("100"), wantDuration30s: vector("1")})
		prom.delay = 2 * time.Second
		a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL, QueryTimeout: 50 * time.Millisecond})
		start := time.Now()
		got := a.QueryMetrics(context.Background(), seedCanary())
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("QueryMetrics() took %v, want about the 50ms timeout", elapsed)
		}
		for _, r := range got {
			if r.Err != "query timed out after 50ms" {
				t.Errorf("%s: Err = %q, want %q", r.Name, r.Err, "query timed out after 50ms")
			}
		}
	})
	t.Run("no prometheus url", func(t *testing.T) {
		a := newTestAnalyzer(t, AnalyzerConfig{})
		got := a.QueryMetrics(context.Background(), seedCanary())
		for _, r := range got {
			if r.Err != "no prometheus url configured" {
				t.Errorf("%s: Err = %q, want %q", r.Name, r.Err, "no prometheus url configured")
			}
		}
	})
	t.Run("unusable metric", func(t *testing.T) {
		a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: "http://127.0.0.1:1"})
		c := seedCanary()
		c.Spec.Analysis.Metrics = []functions.Metric{{Name: "error-rate", ThresholdRange: &functions.ThresholdRange{Max: ptr(1.0)}}}
		got := a.QueryMetrics(context.Background(), c)
		want := []functions.MetricResult{{Name: "error-rate", Err: "no usable metrics template and query were configured"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("QueryMetrics() mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("no analysis", func(t *testing.T) {
		a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: "http://127.0.0.1:1"})
		c := seedCanary()
		c.Spec.Analysis = nil
		if got := a.QueryMetrics(context.Background(), c); got != nil {
			t.Errorf("QueryMetrics() = %v, want nil", got)
		}
	})
}

func TestNewAnalyzerRejectsBadURL(t *testing.T) {
	for _, u := range []string{"prometheus:9090", "ftp://prom", "http://"} {
		if _, err := NewAnalyzer(AnalyzerConfig{PrometheusURL: u}, nil); err == nil {
			t.Errorf("NewAnalyzer(%q) error = nil, want an error", u)
		}
	}
}

// TestQueryMetricsConcurrent proves a step's queries are in flight together: the fake
// Prometheus holds every request until all of them have arrived. Sent one after the other, the
// first would wait out the barrier and the test would fail.
func TestQueryMetricsConcurrent(t *testing.T) {
	const n = 6
	var (
		mu      sync.Mutex
		arrived int
		all     = make(chan struct{})
	)
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			fmt.Fprint(w, vector("1"))
		case <-time.After(3 * time.Second):
			http.Error(w, `{"status":"error","errorType":"timeout","error":"queries were not concurrent"}`, http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(prom.Close)
	a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL})
	c := seedCanary()
	c.Spec.Analysis.Metrics = nil
	for i := range n {
		c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, functions.Metric{Name: fmt.Sprintf("m%d", i), Query: fmt.Sprintf("vector(%d)", i)})
	}

	got := a.QueryMetrics(context.Background(), c)

	for i, r := range got {
		if want := (functions.MetricResult{Name: fmt.Sprintf("m%d", i), Value: 1}); r != want {
			t.Errorf("result %d = %+v, want %+v", i, r, want)
		}
	}
}

func TestQueryMetricsTemplates(t *testing.T) {
	const errorRateTmpl = `
		100 - sum(
			rate(http_requests_total{
				namespace="{{ namespace }}", app="{{ target }}", svc="{{ service }}", canary="{{ name }}",
				status!~"{{ variables.codes }}"
			}[{{ interval }}])
		)`
	const errorRateQuery = ` 100 - sum( rate(http_requests_total{ namespace="default", app="podinfo", svc="podinfo", canary="podinfo", status!~"5.." }[2m]) )`
	metric := functions.Metric{
		Name:              "error-rate",
		Interval:          "2m",
		TemplateRef:       &functions.CrossRef{Name: "error-rate"},
		TemplateVariables: map[string]string{"codes": "5.."},
		ThresholdRange:    &functions.ThresholdRange{Max: ptr(1.0)},
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:pa:ss"))

	tests := []struct {
		name       string
		template   MetricTemplate
		metric     functions.Metric
		secrets    map[string]map[string][]byte
		wantResult functions.MetricResult
		wantErrHas string
		wantAuth   string
		wantHeader http.Header
		onDefault  bool // the query goes to the default Prometheus
		wantReads  []string
	}{
		{
			name:       "template on its own address",
			template:   MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER"}, Query: errorRateTmpl},
			metric:     metric,
			wantResult: functions.MetricResult{Name: "error-rate", Value: 0.5},
			wantReads:  []string{"template default/error-rate"},
		},
		{
			name:       "template without address uses the default prometheus",
			template:   MetricTemplate{Provider: MetricProvider{Type: "prometheus"}, Query: errorRateTmpl},
			metric:     metric,
			wantResult: functions.MetricResult{Name: "error-rate", Value: 0.5},
			onDefault:  true,
			wantReads:  []string{"template default/error-rate"},
		},
		{
			name: "bearer token and headers",
			template: MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER",
				SecretRef: &SecretRef{Name: "prom-auth"},
				Headers:   http.Header{"X-Scope-Orgid": {"tenant-1"}}}, Query: errorRateTmpl},
			metric:     metric,
			secrets:    map[string]map[string][]byte{"default/prom-auth": {"token": []byte("s3cret"), "username": []byte("ignored")}},
			wantResult: functions.MetricResult{Name: "error-rate", Value: 0.5},
			wantAuth:   "Bearer s3cret",
			wantHeader: http.Header{"X-Scope-Orgid": {"tenant-1"}},
			wantReads:  []string{"template default/error-rate", "secret default/prom-auth"},
		},
		{
			name: "basic auth",
			template: MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER",
				SecretRef: &SecretRef{Name: "prom-auth"}}, Query: errorRateTmpl},
			metric:     metric,
			secrets:    map[string]map[string][]byte{"default/prom-auth": {"username": []byte("admin"), "password": []byte("pa:ss")}},
			wantResult: functions.MetricResult{Name: "error-rate", Value: 0.5},
			wantAuth:   basic,
			wantReads:  []string{"template default/error-rate", "secret default/prom-auth"},
		},
		{
			name: "template and secret in another namespace",
			template: MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER",
				SecretRef: &SecretRef{Name: "prom-auth"}}, Query: errorRateTmpl},
			metric: func() functions.Metric {
				m := metric
				m.TemplateRef = &functions.CrossRef{Name: "error-rate", Namespace: "monitoring"}
				return m
			}(),
			secrets:    map[string]map[string][]byte{"monitoring/prom-auth": {"token": []byte("t")}},
			wantResult: functions.MetricResult{Name: "error-rate", Value: 0.5},
			wantAuth:   "Bearer t",
			wantReads:  []string{"template monitoring/error-rate", "secret monitoring/prom-auth"},
		},
		{
			name:       "secret without credentials",
			template:   MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER", SecretRef: &SecretRef{Name: "prom-auth"}}, Query: errorRateTmpl},
			metric:     metric,
			secrets:    map[string]map[string][]byte{"default/prom-auth": {"username": []byte("admin")}},
			wantErrHas: "metric template default/error-rate: secret default/prom-auth: no key token, nor keys username and password",
		},
		{
			name:       "missing secret",
			template:   MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER", SecretRef: &SecretRef{Name: "prom-auth"}}, Query: errorRateTmpl},
			metric:     metric,
			wantErrHas: "not found",
		},
		{
			name:     "missing variable",
			template: MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "OTHER"}, Query: errorRateTmpl},
			metric: func() functions.Metric {
				m := metric
				m.TemplateVariables = map[string]string{"other": "x"}
				return m
			}(),
			wantErrHas: `map has no entry for key "codes"`,
		},
		{
			name:       "unsupported provider",
			template:   MetricTemplate{Provider: MetricProvider{Type: "datadog", Address: "OTHER"}, Query: errorRateTmpl},
			metric:     metric,
			wantErrHas: `metric template default/error-rate: provider "datadog" not supported`,
		},
		{
			name:       "bad provider address",
			template:   MetricTemplate{Provider: MetricProvider{Type: "prometheus", Address: "prometheus.monitoring:9090"}, Query: errorRateTmpl},
			metric:     metric,
			wantErrHas: "provider address",
		},
		{
			name: "missing template",
			metric: func() functions.Metric {
				m := metric
				m.TemplateRef = &functions.CrossRef{Name: "nope"}
				return m
			}(),
			wantErrHas: "metric template default/nope: get MetricTemplate default/nope: not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			def := newFakeProm(t, map[string]string{errorRateQuery: vector("0.5")})
			other := newFakeProm(t, map[string]string{errorRateQuery: vector("0.5")})
			tmpl := tt.template
			if tmpl.Provider.Address == "OTHER" {
				tmpl.Provider.Address = other.URL
			}
			src := &fakeSource{templates: map[string]MetricTemplate{}, secrets: tt.secrets}
			if tmpl.Query != "" {
				src.templates["default/error-rate"] = tmpl
				src.templates["monitoring/error-rate"] = tmpl
			}
			a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: def.URL, Templates: src})
			c := seedCanary()
			c.Spec.Analysis.Metrics = []functions.Metric{tt.metric}

			got := a.QueryMetrics(context.Background(), c)

			if len(got) != 1 {
				t.Fatalf("QueryMetrics() returned %d results, want 1", len(got))
			}
			if tt.wantErrHas != "" {
				if !strings.Contains(got[0].Err, tt.wantErrHas) {
					t.Errorf("Err = %q, want it to contain %q", got[0].Err, tt.wantErrHas)
				}
				if n := len(def.Requests()) + len(other.Requests()); n != 0 {
					t.Errorf("Prometheus got %d requests, want none", n)
				}
				return
			}
			if diff := cmp.Diff(tt.wantResult, got[0]); diff != "" {
				t.Errorf("QueryMetrics() mismatch (-want +got):\n%s", diff)
			}
			hit, idle := other, def
			if tt.onDefault {
				hit, idle = def, other
			}
			reqs := hit.Requests()
			if len(reqs) != 1 || len(idle.Requests()) != 0 {
				t.Fatalf("requests: %d on the expected Prometheus, %d on the other; want 1 and 0", len(reqs), len(idle.Requests()))
			}
			if got := reqs[0].Header.Get("Authorization"); got != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", got, tt.wantAuth)
			}
			for k, vs := range tt.wantHeader {
				if diff := cmp.Diff(vs, reqs[0].Header.Values(k)); diff != "" {
					t.Errorf("header %s mismatch (-want +got):\n%s", k, diff)
				}
			}
			if diff := cmp.Diff(tt.wantReads, src.Reads()); diff != "" {
				t.Errorf("TemplateSource reads mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestQueryMetricsTemplateTLS(t *testing.T) {
	const q = "vector(1)"
	tlsProm := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, vector("1"))
	}))
	tlsProm.Config.ErrorLog = log.New(io.Discard, "", 0) // the rejected handshake is expected
	tlsProm.StartTLS()
	t.Cleanup(tlsProm.Close)
	for _, insecure := range []bool{true, false} {
		t.Run(fmt.Sprintf("insecureSkipVerify=%v", insecure), func(t *testing.T) {
			src := &fakeSource{templates: map[string]MetricTemplate{"default/t": {
				Provider: MetricProvider{Type: "prometheus", Address: tlsProm.URL, InsecureSkipVerify: insecure},
				Query:    q,
			}}}
			a := newTestAnalyzer(t, AnalyzerConfig{Templates: src})
			c := seedCanary()
			c.Spec.Analysis.Metrics = []functions.Metric{{Name: "t", TemplateRef: &functions.CrossRef{Name: "t"}}}

			got := a.QueryMetrics(context.Background(), c)[0]

			if insecure && (got.Err != "" || got.Value != 1) {
				t.Errorf("result = %+v, want value 1", got)
			}
			if !insecure && !strings.Contains(got.Err, "certificate") {
				t.Errorf("Err = %q, want a certificate error", got.Err)
			}
		})
	}
}

func TestQueryMetricsWithoutTemplateSource(t *testing.T) {
	a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: "http://127.0.0.1:1"})
	c := seedCanary()
	c.Spec.Analysis.Metrics = []functions.Metric{{Name: "t", TemplateRef: &functions.CrossRef{Name: "t"}}}
	got := a.QueryMetrics(context.Background(), c)
	if want := "metric template default/t: no template source configured"; got[0].Err != want {
		t.Errorf("Err = %q, want %q", got[0].Err, want)
	}
}

func TestOnline(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		wantErr bool
	}{
		{"one", vector("1"), false},
		{"zero", vector("0"), true},
		{"empty", emptyVector, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prom := newFakeProm(t, map[string]string{"vector(1)": tt.answer})
			a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL})
			err := a.Online(context.Background())
			if (err != nil) != tt.wantErr {
				t.Errorf("Online() error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: "http://127.0.0.1:1"})
		if err := a.Online(context.Background()); err == nil {
			t.Error("Online() error = nil, want an error")
		}
	})
}

// BenchmarkQueryMetrics measures a step's metric queries against a Prometheus that answers
// each query after 20ms: concurrent queries keep a step near 20ms whatever the metric count.
func BenchmarkQueryMetrics(b *testing.B) {
	prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		fmt.Fprint(w, vector("1"))
	}))
	defer prom.Close()
	a, err := NewAnalyzer(AnalyzerConfig{PrometheusURL: prom.URL}, nil)
	if err != nil {
		b.Fatal(err)
	}
	c := seedCanary()
	for i := range 8 {
		c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, functions.Metric{Name: fmt.Sprintf("m%d", i), Query: "vector(1)"})
	}
	b.ResetTimer()
	for b.Loop() {
		a.QueryMetrics(context.Background(), c)
	}
}

// A MetricTemplate's provider that redirects to another host must not hand that host the
// template's credentials or headers; a redirect on the same host keeps them.
func TestTemplateCredentialsStayOnTheirHost(t *testing.T) {
	const q = `up{namespace="default"}`
	elsewhere := newFakeProm(t, map[string]string{q: vector("1")})
	sameHost := newFakeProm(t, map[string]string{q: vector("1")})
	var redirectTo string
	sameHost.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/moved") {
			r.URL.Path = strings.TrimPrefix(r.URL.Path, "/moved")
			sameHost.serve(w, r)
			return
		}
		http.Redirect(w, r, redirectTo+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	})
	for _, tt := range []struct {
		name      string
		target    func() string
		landed    *fakeProm
		wantCreds bool
	}{
		{"redirect to another host", func() string { return elsewhere.URL }, elsewhere, false},
		{"redirect on the same host", func() string { return sameHost.URL + "/moved" }, sameHost, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			redirectTo = tt.target()
			before := len(tt.landed.Requests())
			src := &fakeSource{
				templates: map[string]MetricTemplate{"default/up": {Query: `up{namespace="{{ namespace }}"}`,
					Provider: MetricProvider{Type: "prometheus", Address: sameHost.URL, SecretRef: &SecretRef{Name: "auth"},
						Headers: http.Header{"X-Api-Key": {"k3y"}}}}},
				secrets: map[string]map[string][]byte{"default/auth": {"token": []byte("s3cret")}},
			}
			a := newTestAnalyzer(t, AnalyzerConfig{Templates: src})
			c := seedCanary()
			c.Spec.Analysis.Metrics = []functions.Metric{{Name: "up", TemplateRef: &functions.CrossRef{Name: "up"}}}
			if got := a.QueryMetrics(context.Background(), c); got[0].Err != "" {
				t.Fatalf("query: %s", got[0].Err)
			}
			reqs := tt.landed.Requests()[before:]
			if len(reqs) == 0 {
				t.Fatal("the redirect was not followed")
			}
			got := reqs[len(reqs)-1].Header
			if has := got.Get("Authorization") != "" || got.Get("X-Api-Key") != ""; has != tt.wantCreds {
				t.Errorf("landed with Authorization %q, X-Api-Key %q; want credentials: %v", got.Get("Authorization"), got.Get("X-Api-Key"), tt.wantCreds)
			}
		})
	}
}
