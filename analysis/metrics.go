package analysis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/siskin-dev/siskin/functions"
)

// DefaultQueryTimeout is Flagger's Prometheus provider timeout.
const DefaultQueryTimeout = 5 * time.Second

// AnalyzerConfig configures NewAnalyzer.
type AnalyzerConfig struct {
	// PrometheusURL is the Prometheus that the built-in metrics, inline queries and templates
	// without an address are sent to (--prometheus-url). Empty: such metrics fail.
	PrometheusURL string
	// Templates reads MetricTemplates and their Secrets. Nil: metrics with a templateRef fail.
	Templates TemplateSource
	// QueryTimeout bounds each query, and each template or Secret read. Default 5 s.
	QueryTimeout time.Duration
	// Transport is the base HTTP transport. Nil: a clone of http.DefaultTransport.
	Transport *http.Transport
}

// Analyzer queries a canary's metrics; it implements functions.Metrics.
type Analyzer struct {
	defaultURL string
	templates  TemplateSource
	timeout    time.Duration
	// secure and insecure are shared by every query, so connections are reused across steps;
	// insecure skips TLS verification for templates with insecureSkipVerify.
	secure, insecure http.RoundTripper
	log              *slog.Logger
}

var _ functions.Metrics = (*Analyzer)(nil)

// NewAnalyzer checks the Prometheus URL and returns an Analyzer.
func NewAnalyzer(cfg AnalyzerConfig, log *slog.Logger) (*Analyzer, error) {
	if cfg.PrometheusURL != "" {
		if err := checkURL(cfg.PrometheusURL); err != nil {
			return nil, fmt.Errorf("prometheus url: %w", err)
		}
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	base := cfg.Transport
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
	}
	insecure := base.Clone()
	insecure.TLSClientConfig = insecureTLS(insecure.TLSClientConfig)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Analyzer{
		defaultURL: cfg.PrometheusURL,
		templates:  cfg.Templates,
		timeout:    cfg.QueryTimeout,
		secure:     base,
		insecure:   insecure,
		log:        log,
	}, nil
}

func insecureTLS(c *tls.Config) *tls.Config {
	if c == nil {
		c = &tls.Config{}
	} else {
		c = c.Clone()
	}
	c.InsecureSkipVerify = true
	return c
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: %q is not a URL: %v", functions.ErrInvalid, s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: %q is not an http(s) URL", functions.ErrInvalid, s)
	}
	return nil
}

// Online checks that the default Prometheus answers vector(1) with 1, as Flagger's IsOnline.
func (a *Analyzer) Online(ctx context.Context) error {
	if a.defaultURL == "" {
		return fmt.Errorf("%w: no prometheus url configured", functions.ErrInvalid)
	}
	v, noData, err := a.query(ctx, target{address: a.defaultURL, transport: a.secure}, "vector(1)")
	switch {
	case err != nil:
		return fmt.Errorf("prometheus %s: %w", a.defaultURL, err)
	case noData || v != 1:
		return fmt.Errorf("prometheus %s: %w: vector(1) did not return 1", a.defaultURL, functions.ErrUnavailable)
	}
	return nil
}

// QueryMetrics runs the queries of spec.analysis.metrics concurrently and returns one result
// per metric, in order. It never fails as a whole: a metric that cannot be queried carries Err.
func (a *Analyzer) QueryMetrics(ctx context.Context, c functions.Canary) []functions.MetricResult {
	if c.Spec.Analysis == nil || len(c.Spec.Analysis.Metrics) == 0 {
		return nil
	}
	metrics := c.Spec.Analysis.Metrics
	results := make([]functions.MetricResult, len(metrics))
	var wg sync.WaitGroup
	for i, m := range metrics {
		wg.Go(func() {
			results[i] = a.queryMetric(ctx, c, m)
		})
	}
	wg.Wait()
	return results
}

// serverFor is the canary's spec.metricsServer (Flagger's per-canary override), else the
// configured Prometheus.
func (a *Analyzer) serverFor(c functions.Canary) string {
	if c.Spec.MetricsServer != "" {
		return c.Spec.MetricsServer
	}
	return a.defaultURL
}

func (a *Analyzer) queryMetric(ctx context.Context, c functions.Canary, m functions.Metric) functions.MetricResult {
	res := functions.MetricResult{Name: m.Name}
	var (
		v      float64
		noData bool
		err    error
	)
	switch m.Kind() {
	case functions.MetricFromTemplate:
		v, noData, err = a.queryTemplate(ctx, c, m)
	case functions.MetricInline:
		addr := a.serverFor(c)
		if addr == "" {
			err = errors.New("no prometheus url configured")
			break
		}
		v, noData, err = a.query(ctx, target{address: addr, transport: a.secure}, collapseWhitespace(m.Query))
	case functions.MetricBuiltin:
		addr := a.serverFor(c)
		if addr == "" {
			err = errors.New("no prometheus url configured")
			break
		}
		var q string
		if q, _, err = BuiltinQuery(c, m); err == nil {
			v, noData, err = a.query(ctx, target{address: addr, transport: a.secure}, q)
		}
	default:
		err = errors.New("no usable metrics template and query were configured")
	}
	switch {
	case err != nil:
		res.Err = err.Error()
		a.log.WarnContext(ctx, "metric query failed", "canary", c.Key.String(), "metric", m.Name, "err", err)
	case noData:
		res.NoData = true
	default:
		res.Value = v
	}
	return res
}

func (a *Analyzer) queryTemplate(ctx context.Context, c functions.Canary, m functions.Metric) (float64, bool, error) {
	ns := m.TemplateRef.Namespace
	if ns == "" {
		ns = c.Namespace
	}
	ref := ns + "/" + m.TemplateRef.Name
	if a.templates == nil {
		return 0, false, fmt.Errorf("metric template %s: no template source configured", ref)
	}
	tmpl, err := withTimeout(ctx, a.timeout, func(ctx context.Context) (MetricTemplate, error) {
		return a.templates.MetricTemplate(ctx, ns, m.TemplateRef.Name)
	})
	if err != nil {
		return 0, false, fmt.Errorf("metric template %s: %w", ref, err)
	}
	p := tmpl.Provider
	if p.Type != "prometheus" {
		return 0, false, fmt.Errorf("metric template %s: provider %q not supported", ref, p.Type)
	}
	t := target{address: p.Address, transport: a.secure, headers: p.Headers}
	if t.address == "" {
		t.address = a.defaultURL
	}
	if t.address == "" {
		return 0, false, fmt.Errorf("metric template %s: no provider address and no prometheus url configured", ref)
	}
	if err := checkURL(t.address); err != nil {
		return 0, false, fmt.Errorf("metric template %s: provider address: %w", ref, err)
	}
	if p.InsecureSkipVerify {
		t.transport = a.insecure
	}
	if p.SecretRef != nil {
		secretRef := ns + "/" + p.SecretRef.Name
		data, err := withTimeout(ctx, a.timeout, func(ctx context.Context) (map[string][]byte, error) {
			return a.templates.Secret(ctx, ns, p.SecretRef.Name)
		})
		if err != nil {
			return 0, false, fmt.Errorf("metric template %s: secret %s: %w", ref, secretRef, err)
		}
		if t.auth, err = authorization(data); err != nil {
			return 0, false, fmt.Errorf("metric template %s: secret %s: %w", ref, secretRef, err)
		}
	}
	q, err := RenderQuery(tmpl.Query, NewTemplateModel(c, m))
	if err != nil {
		return 0, false, fmt.Errorf("metric template %s: %w", ref, err)
	}
	return a.query(ctx, t, collapseWhitespace(q))
}

// authorization reads Flagger's credential keys: "token" for a bearer token, else "username"
// and "password" for basic auth.
func authorization(data map[string][]byte) (string, error) {
	if token, ok := data["token"]; ok {
		return "Bearer " + string(token), nil
	}
	user, okUser := data["username"]
	pass, okPass := data["password"]
	if !okUser || !okPass {
		return "", errors.New("no key token, nor keys username and password")
	}
	r := http.Request{Header: http.Header{}}
	r.SetBasicAuth(string(user), string(pass))
	return r.Header.Get("Authorization"), nil
}

func withTimeout[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// target is where and how one query is sent.
type target struct {
	address   string
	transport http.RoundTripper
	headers   http.Header
	auth      string // the Authorization header, if any
}

// RoundTrip adds the template's headers and credentials to requests for the template's own
// host only: the Prometheus client follows redirects through this RoundTripper, and a
// redirect to another host must not carry them there.
func (t target) RoundTrip(r *http.Request) (*http.Response, error) {
	if (len(t.headers) == 0 && t.auth == "") || !t.sameHost(r.URL) {
		return t.transport.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not modify the caller's request
	for k, vs := range t.headers {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	if t.auth != "" {
		r.Header.Set("Authorization", t.auth)
	}
	return t.transport.RoundTrip(r)
}

func (t target) sameHost(u *url.URL) bool {
	own, err := url.Parse(t.address)
	return err == nil && strings.EqualFold(own.Host, u.Host) && own.Scheme == u.Scheme
}

// query runs an instant query with the analyzer's timeout and reads one value with Flagger's
// rules: the last sample of a vector; an empty result or NaN is no data; a range vector is an
// error.
func (a *Analyzer) query(ctx context.Context, t target, q string) (value float64, noData bool, err error) {
	client, err := api.NewClient(api.Config{Address: t.address, RoundTripper: t})
	if err != nil {
		return 0, false, fmt.Errorf("prometheus client for %s: %w", t.address, err)
	}
	qctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	v, _, _, err := promv1.NewAPI(client).Query(qctx, q, time.Time{})
	if err != nil {
		if ctx.Err() == nil && errors.Is(qctx.Err(), context.DeadlineExceeded) {
			return 0, false, fmt.Errorf("query timed out after %s", a.timeout)
		}
		return 0, false, fmt.Errorf("query %s: %w", t.address, err)
	}
	return sampleValue(v)
}

func sampleValue(v model.Value) (float64, bool, error) {
	var f float64
	switch v := v.(type) {
	case model.Vector:
		if len(v) == 0 {
			return 0, true, nil
		}
		f = float64(v[len(v)-1].Value)
	case *model.Scalar:
		f = float64(v.Value)
	case model.Matrix:
		if len(v) == 0 {
			return 0, true, nil
		}
		return 0, false, errors.New("query returned a range vector, want an instant vector")
	case nil:
		return 0, true, nil
	default:
		return 0, false, fmt.Errorf("query returned a %s, want a vector", v.Type())
	}
	if math.IsNaN(f) {
		return 0, true, nil
	}
	return f, false, nil
}
