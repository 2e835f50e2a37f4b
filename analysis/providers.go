package analysis

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/siskin-dev/siskin/functions"
)

// Provider is one metrics backend, chosen by a MetricTemplate's spec.provider.type: Flagger's
// providers.Interface, with a context. The built-in metrics and inline queries go to the
// "prometheus" provider at the canary's metrics server. To add a backend, implement Provider
// and register its factory in DefaultProviders (docs/architecture.md has the steps).
type Provider interface {
	// RunQuery runs an instant query and reads one value with Flagger's rules; noData is an
	// empty result or NaN.
	RunQuery(ctx context.Context, query string) (value float64, noData bool, err error)
	// IsOnline checks that the backend answers.
	IsOnline(ctx context.Context) error
}

// ProviderSpec is what a factory builds a Provider from: a template's spec.provider with its
// Secret read, or the configured Prometheus for built-in and inline queries.
type ProviderSpec struct {
	Address string
	Headers http.Header
	// Credentials is the data of spec.provider.secretRef's Secret; nil without one.
	Credentials map[string][]byte
	// Transport is shared by every query (it honours insecureSkipVerify).
	Transport http.RoundTripper
	// Timeout bounds each query.
	Timeout time.Duration
}

// ProviderFactory builds the Provider of one spec.
type ProviderFactory func(ProviderSpec) (Provider, error)

// Providers are the metric backends by spec.provider.type.
type Providers map[string]ProviderFactory

// ProviderPrometheus is the type of the Prometheus provider, which also serves the built-in
// metrics and inline queries.
const ProviderPrometheus = "prometheus"

// DefaultProviders are the backends Siskin queries.
func DefaultProviders() Providers {
	return Providers{ProviderPrometheus: func(s ProviderSpec) (Provider, error) { return NewPrometheus(s) }}
}

func (ps Providers) build(typ string, spec ProviderSpec) (Provider, error) {
	factory, ok := ps[typ]
	if !ok {
		return nil, fmt.Errorf("provider %q not supported: this Siskin queries %s", typ, strings.Join(slices.Sorted(maps.Keys(ps)), ", "))
	}
	return factory(spec)
}

// Prometheus is the Prometheus provider: instant queries through client_golang's api.
type Prometheus struct {
	api     promv1.API
	address string
	timeout time.Duration
}

var _ Provider = (*Prometheus)(nil)

// NewPrometheus checks the address and reads Flagger's credential keys from the Secret data.
func NewPrometheus(s ProviderSpec) (*Prometheus, error) {
	if err := checkURL(s.Address); err != nil {
		return nil, err
	}
	t := target{address: s.Address, transport: s.Transport, headers: s.Headers}
	if t.transport == nil {
		t.transport = http.DefaultTransport
	}
	if s.Credentials != nil {
		auth, err := authorization(s.Credentials)
		if err != nil {
			return nil, err
		}
		t.auth = auth
	}
	client, err := api.NewClient(api.Config{Address: s.Address, RoundTripper: t})
	if err != nil {
		return nil, fmt.Errorf("prometheus client for %s: %w", s.Address, err)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultQueryTimeout
	}
	return &Prometheus{api: promv1.NewAPI(client), address: s.Address, timeout: timeout}, nil
}

// RunQuery reads the last sample of a vector; a range vector is an error.
func (p *Prometheus) RunQuery(ctx context.Context, q string) (value float64, noData bool, err error) {
	qctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, _, _, err := p.api.Query(qctx, q, time.Time{})
	if err != nil {
		if ctx.Err() == nil && errors.Is(qctx.Err(), context.DeadlineExceeded) {
			return 0, false, fmt.Errorf("query timed out after %s", p.timeout)
		}
		return 0, false, fmt.Errorf("query %s: %w", p.address, err)
	}
	return sampleValue(v)
}

// IsOnline is Flagger's check: vector(1) answers 1.
func (p *Prometheus) IsOnline(ctx context.Context) error {
	v, noData, err := p.RunQuery(ctx, "vector(1)")
	switch {
	case err != nil:
		return fmt.Errorf("prometheus %s: %w", p.address, err)
	case noData || v != 1:
		return fmt.Errorf("prometheus %s: %w: vector(1) did not return 1", p.address, functions.ErrUnavailable)
	}
	return nil
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
