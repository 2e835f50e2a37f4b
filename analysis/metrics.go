package analysis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

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
	// Providers are the metric backends by MetricTemplate spec.provider.type. Nil:
	// DefaultProviders.
	Providers Providers
}

// Analyzer queries a canary's metrics; it implements functions.Metrics.
type Analyzer struct {
	defaultURL string
	templates  TemplateSource
	timeout    time.Duration
	// secure and insecure are shared by every query, so connections are reused across steps;
	// insecure skips TLS verification for templates with insecureSkipVerify.
	secure, insecure http.RoundTripper
	providers        Providers
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
	if cfg.Providers == nil {
		cfg.Providers = DefaultProviders()
	}
	return &Analyzer{
		defaultURL: cfg.PrometheusURL,
		templates:  cfg.Templates,
		timeout:    cfg.QueryTimeout,
		secure:     base,
		insecure:   insecure,
		providers:  cfg.Providers,
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

// Online checks that the default Prometheus answers, as Flagger's IsOnline.
func (a *Analyzer) Online(ctx context.Context) error {
	if a.defaultURL == "" {
		return fmt.Errorf("%w: no prometheus url configured", functions.ErrInvalid)
	}
	p, err := a.providers.build(ProviderPrometheus, a.prometheusAt(a.defaultURL))
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", a.defaultURL, err)
	}
	return p.IsOnline(ctx)
}

// prometheusAt is the spec of the built-in and inline queries' provider.
func (a *Analyzer) prometheusAt(address string) ProviderSpec {
	return ProviderSpec{Address: address, Transport: a.secure, Timeout: a.timeout}
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
		v, noData, err = a.queryDefault(ctx, c, collapseWhitespace(m.Query))
	case functions.MetricBuiltin:
		var q string
		if q, _, err = BuiltinQuery(c, m); err == nil {
			v, noData, err = a.queryDefault(ctx, c, q)
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

// queryDefault sends a built-in or inline query to the canary's Prometheus.
func (a *Analyzer) queryDefault(ctx context.Context, c functions.Canary, q string) (float64, bool, error) {
	addr := a.serverFor(c)
	if addr == "" {
		return 0, false, errors.New("no prometheus url configured")
	}
	p, err := a.providers.build(ProviderPrometheus, a.prometheusAt(addr))
	if err != nil {
		return 0, false, err
	}
	return p.RunQuery(ctx, q)
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
	if _, known := a.providers[p.Type]; !known {
		_, err := a.providers.build(p.Type, ProviderSpec{})
		return 0, false, fmt.Errorf("metric template %s: %w", ref, err)
	}
	spec := ProviderSpec{Address: p.Address, Headers: p.Headers, Transport: a.secure, Timeout: a.timeout}
	if spec.Address == "" {
		spec.Address = a.defaultURL
	}
	if spec.Address == "" {
		return 0, false, fmt.Errorf("metric template %s: no provider address and no prometheus url configured", ref)
	}
	if err := checkURL(spec.Address); err != nil {
		return 0, false, fmt.Errorf("metric template %s: provider address: %w", ref, err)
	}
	if p.InsecureSkipVerify {
		spec.Transport = a.insecure
	}
	built := "provider"
	if p.SecretRef != nil {
		secretRef := ns + "/" + p.SecretRef.Name
		built = "secret " + secretRef
		data, err := withTimeout(ctx, a.timeout, func(ctx context.Context) (map[string][]byte, error) {
			return a.templates.Secret(ctx, ns, p.SecretRef.Name)
		})
		if err != nil {
			return 0, false, fmt.Errorf("metric template %s: secret %s: %w", ref, secretRef, err)
		}
		spec.Credentials = data
		if spec.Credentials == nil {
			spec.Credentials = map[string][]byte{}
		}
	}
	provider, err := a.providers.build(p.Type, spec)
	if err != nil {
		return 0, false, fmt.Errorf("metric template %s: %s: %w", ref, built, err)
	}
	q, err := RenderQuery(tmpl.Query, NewTemplateModel(c, m))
	if err != nil {
		return 0, false, fmt.Errorf("metric template %s: %w", ref, err)
	}
	return provider.RunQuery(ctx, collapseWhitespace(q))
}

func withTimeout[T any](ctx context.Context, d time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}
