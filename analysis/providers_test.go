package analysis

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/siskin-dev/siskin/functions"
)

// recordingProvider stands for a second backend: it answers every query with 7 and keeps
// what it was built from and asked.
type recordingProvider struct {
	spec    ProviderSpec
	queries *[]string
}

func (r recordingProvider) RunQuery(_ context.Context, q string) (float64, bool, error) {
	*r.queries = append(*r.queries, q)
	return 7, false, nil
}

func (recordingProvider) IsOnline(context.Context) error { return nil }

// A backend registered beside Prometheus is chosen by the template's spec.provider.type, gets
// the template's address, headers and Secret, and the rendered query; the built-in metrics
// stay on Prometheus.
func TestProvidersAreChosenByTemplateType(t *testing.T) {
	prom := newFakeProm(t, map[string]string{})
	var built []ProviderSpec
	var queries []string
	providers := DefaultProviders()
	providers["recorder"] = func(s ProviderSpec) (Provider, error) {
		built = append(built, s)
		return recordingProvider{spec: s, queries: &queries}, nil
	}
	src := &fakeSource{
		templates: map[string]MetricTemplate{"default/latency": {
			Provider: MetricProvider{Type: "recorder", Address: "https://metrics.example.com",
				Headers: http.Header{"X-Tenant": {"a"}}, SecretRef: &SecretRef{Name: "creds"}},
			Query: `latency{app="{{ target }}"}`,
		}},
		secrets: map[string]map[string][]byte{"default/creds": {"api-key": []byte("k")}},
	}
	a := newTestAnalyzer(t, AnalyzerConfig{PrometheusURL: prom.URL, Templates: src, Providers: providers})
	c := seedCanary()
	c.Spec.Analysis.Metrics = []functions.Metric{{Name: "latency", TemplateRef: &functions.CrossRef{Name: "latency"}}}

	got := a.QueryMetrics(context.Background(), c)

	if diff := cmp.Diff([]functions.MetricResult{{Name: "latency", Value: 7}}, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{`latency{app="podinfo"}`}, queries); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
	if len(built) != 1 || built[0].Address != "https://metrics.example.com" || built[0].Headers.Get("X-Tenant") != "a" ||
		string(built[0].Credentials["api-key"]) != "k" {
		t.Errorf("provider built from %+v, want the template's address, headers and Secret", built)
	}
	if n := len(prom.Requests()); n != 0 {
		t.Errorf("Prometheus got %d requests, want none", n)
	}
}

func TestUnknownProviderNamesTheKnownOnes(t *testing.T) {
	_, err := DefaultProviders().build("datadog", ProviderSpec{})
	if err == nil || err.Error() != `provider "datadog" not supported: this Siskin queries prometheus` {
		t.Errorf("got %v, want the unknown type and the known ones", err)
	}
}
